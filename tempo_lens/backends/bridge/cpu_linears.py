"""CPU speed-up: run the model's linear layers on oneDNN with prepacked weights.

On CPU, a forward of 2-8 new tokens costs 1.5-2x one token with the stock weight layout (small-row
matrix products reread every weight); with oneDNN-prepacked weights (what torch.compile's CPU weight
freezing uses) k = 1..8 rows cost about the same, so a TEMPO step with several siblings becomes almost
as cheap as a one-token decode (``benchmarks/RESULTS.md``, target 1c). Inside :func:`prepacked_linears`
the Hugging Face ``nn.Linear`` modules get instance-level ``forward`` overrides; TransformerLens and every
hook are untouched. Inference only (no autograd through the packed weights), fp32 CPU only, and the packed
copy holds a second copy of the linear weights while active. It packs on entry, so weights edited before
entering are used. Where oneDNN is unavailable it changes nothing (``available`` says which).

:func:`install_prepacked_linears` makes it permanent (what :mod:`tempo_lens.backends.bridge.fast_paths` does by default):
each linear then runs :class:`PackedLinearForward`, which takes the stock ``F.linear`` path for one row
and whenever the packed one would be wrong (autograd wants the weight or the input, or they are not fp32
on CPU), and repacks when the weight is replaced or edited in place (its version counter moves). An edit
through ``weight.data``, which autograd does not see either, is not noticed: install again after one.

Example::

    with prepacked_linears(model):
        result = generate(model, "The cat sat on the", threshold=0.1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..base import OneRowKernel

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def pack_weight(weight: Tensor) -> Tensor | None:
    """A oneDNN-prepacked copy of an fp32 CPU linear weight, or None where oneDNN cannot take it."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return None
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
        torch.ops.mkldnn._linear_pointwise(torch.zeros(1, weight.shape[1]), packed, None, "none", [None], "")
        return packed
    except (RuntimeError, AttributeError):  # private op missing or refusing this build
        return None


def packed_linear(x: Tensor, packed: Tensor, bias: Tensor | None = None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")


def linear_modules(model: TransformerBridge) -> list[torch.nn.Linear]:
    """The distinct ``nn.Linear`` modules of the bridge's Hugging Face model."""
    seen, modules = set(), []
    for module in model.original_model.modules():
        if isinstance(module, torch.nn.Linear) and id(module) not in seen:
            seen.add(id(module))
            modules.append(module)
    return modules


class PrepackedLinears:
    """Prepacked copies of a bridge's linear weights, switched in by :meth:`active`.

    Packing happens once, here; ``available`` is False where oneDNN cannot take every weight (then
    :meth:`active` changes nothing). Build a new one after editing the weights.
    """

    def __init__(self, model: TransformerBridge):
        self.modules = linear_modules(model)
        self.packed = [pack_weight(m.weight) for m in self.modules]
        self.available = bool(self.modules) and all(p is not None for p in self.packed)

    @contextlib.contextmanager
    def active(self) -> Iterator[bool]:
        if not self.available:
            yield False
            return
        before = [vars(module).get("forward") for module in self.modules]
        for module, weight in zip(self.modules, self.packed):
            vars(module)["forward"] = _packed_forward(weight, module.bias)
        try:
            with torch.no_grad():
                yield True
        finally:
            _restore_forwards(self.modules, before)


def _packed_forward(weight: Tensor | None, bias: Tensor | None) -> Any:
    def forward(x: Tensor) -> Tensor:
        assert weight is not None  # PrepackedLinears.available: every weight packed
        return packed_linear(x, weight, bias)

    return forward


def prepacked_linears(model: TransformerBridge):
    """Pack now and run the model's linears on the packed weights inside the block; yields whether it could."""
    return PrepackedLinears(model).active()


def _restore_forwards(modules: list[torch.nn.Linear], forwards: list[Any]) -> None:
    """Put back each module's instance-level ``forward`` (``None``: the class's own)."""
    for module, forward in zip(modules, forwards):
        if forward is None:
            vars(module).pop("forward", None)
        else:
            module.forward = forward


def uses_packed(min_rows: int | None, one_row: OneRowKernel) -> bool:
    """Whether forwards packed from ``min_rows`` rows (None: never) with ``one_row`` for one row read the packed copy."""
    return min_rows is not None or one_row == "packed"


def weight_copies(min_rows: int | None, one_row: OneRowKernel) -> int:
    """How many extra copies of the linear weights such forwards keep (the packed one, the column-major one)."""
    return int(uses_packed(min_rows, one_row)) + int(one_row == "by_column")


class PackedLinearForward:
    """An ``nn.Linear``'s permanent forward on a prepacked copy of its weight, with the stock path as fallback.

    Inputs of ``min_rows`` rows or more (None: never) run on the packed copy; a single row runs the
    ``one_row`` kernel: the stock ``F.linear`` (a decode then keeps the stock result bit for bit), the packed
    copy, or ``by_column``, a matrix product with a column-major (``[in, out]``) copy of the weight
    (:mod:`.linear_calibration` measures which pays on this machine); anything else runs stock. Stock also
    serves whenever autograd needs the weight or the input, or either is not fp32 on CPU. The copies are
    remade when the weight is replaced or edited in place. Copies and pickles of the model drop them
    (oneDNN's opaque tensors cannot be copied) and remake them on first use.
    """

    def __init__(
        self, module: torch.nn.Linear, packed: Tensor | None = None, min_rows: int | None = 2, one_row: OneRowKernel = "stock"
    ):
        self.module, self.min_rows, self.one_row = module, min_rows, one_row
        self.packed: Tensor | None = packed  # packed by the caller from the current weight
        self.by_column = module.weight.detach().t().contiguous() if one_row == "by_column" else None
        self.key = _weight_key(module.weight) if packed is not None or self.by_column is not None else None

    def _remake(self, weight: Tensor) -> None:
        if uses_packed(self.min_rows, self.one_row):
            self.packed = pack_weight(weight)
        if self.one_row == "by_column":
            self.by_column = weight.detach().t().contiguous()
        self.key = _weight_key(weight)

    def __call__(self, x: Tensor) -> Tensor:
        module = self.module
        weight = module.weight
        rows = x.numel() // max(1, x.shape[-1])
        kernel = self.one_row if rows == 1 else ("packed" if self.min_rows is not None and rows >= self.min_rows else "stock")
        if (
            kernel == "stock"
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        ):
            return torch.nn.functional.linear(x, weight, module.bias)
        if _weight_key(weight) != self.key:
            self._remake(weight)
        if kernel == "by_column" and self.by_column is not None:
            out = torch.matmul(x, self.by_column)
            return out if module.bias is None else out + module.bias
        if self.packed is None:
            return torch.nn.functional.linear(x, weight, module.bias)
        return packed_linear(x, self.packed, module.bias)

    def __getstate__(self) -> dict:
        return {"module": self.module, "min_rows": self.min_rows, "one_row": self.one_row}

    def __setstate__(self, state: dict) -> None:
        self.module, self.packed, self.by_column, self.key = state["module"], None, None, None
        self.min_rows, self.one_row = state.get("min_rows", 2), state.get("one_row", "stock")


def _weight_key(weight: Tensor) -> tuple:
    return weight.data_ptr(), weight._version, weight.dtype, weight.device


def packed_bytes(modules: list[torch.nn.Linear]) -> int:
    """Bytes the packed copies of these linears' weights take (one more copy of those weights)."""
    return sum(m.weight.numel() * m.weight.element_size() for m in modules)


def install_prepacked_linears(model: TransformerBridge, min_rows: int | None = 2, one_row: OneRowKernel = "stock") -> int:
    """Pack every linear weight now and keep the packed forwards; returns how many (0: none could be packed).

    Inputs of ``min_rows`` rows or more run packed (None: never), one row runs ``one_row``
    (:class:`PackedLinearForward`). All or nothing: where one weight cannot be packed (not fp32 CPU, no
    oneDNN), nothing changes. Calling it again repacks (after weights were edited through ``.data``).
    """
    prepacked = PrepackedLinears(model)
    if not prepacked.available:
        return 0
    keep_packed = uses_packed(min_rows, one_row)
    for module, packed in zip(prepacked.modules, prepacked.packed):
        vars(module)["forward"] = PackedLinearForward(module, packed if keep_packed else None, min_rows, one_row)
    return len(prepacked.modules)


def packed_min_rows(model: TransformerBridge) -> int | None:
    """From how many rows the installed forwards run packed (None: none installed, or never packed)."""
    linears = installed_linears(model)
    return vars(linears[0])["forward"].min_rows if linears else None


def one_row_kernel(model: TransformerBridge) -> OneRowKernel:
    """The kernel the installed forwards run for one row (``stock`` when none is installed)."""
    linears = installed_linears(model)
    return vars(linears[0])["forward"].one_row if linears else "stock"


def sample_linears(model: TransformerBridge, min_bytes: int = 64 * 2**20) -> list[torch.nn.Linear]:
    """The model's first linears, in order, until their weights reach ``min_bytes`` (all of them if fewer).

    Every kind of layer of the first blocks, and more weight than a CPU cache holds, so timing them reads
    weights from memory as a forward does.
    """
    sample, total = [], 0
    for module in linear_modules(model):
        if total >= min_bytes:
            break
        sample.append(module)
        total += module.weight.numel() * module.weight.element_size()
    return sample


def installed_linears(model: TransformerBridge) -> list[torch.nn.Linear]:
    """The linears running :class:`PackedLinearForward`."""
    return [m for m in linear_modules(model) if isinstance(vars(m).get("forward"), PackedLinearForward)]


def remove_prepacked_linears(model: TransformerBridge) -> int:
    """Undo :func:`install_prepacked_linears` (the packed copies are freed); returns how many linears."""
    modules = installed_linears(model)
    for module in modules:
        del module.forward
    return len(modules)


@contextlib.contextmanager
def stock_linears(model: TransformerBridge) -> Iterator[int]:
    """Inside the block, installed packed forwards are set aside (kept, not repacked); yields how many."""
    modules = installed_linears(model)
    forwards = [vars(m).pop("forward") for m in modules]
    try:
        yield len(modules)
    finally:
        _restore_forwards(modules, forwards)
