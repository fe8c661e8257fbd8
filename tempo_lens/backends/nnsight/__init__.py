"""The ``nnsight`` backend: an ``nnsight.LanguageModel`` running the Hugging Face model's own forward.

TransformerLens's hook points do not exist here, so TEMPO goes in as the model's inputs: positions
as ``position_ids``, the layout's mask as a 4D float mask (:mod:`.masks`; sliding-window layers get
their own, written into their decoder layers' inputs inside the trace), HF's own ``DynamicCache``
across steps. Each forward is one nnsight trace (:meth:`NnsightBackend.tempo_forward`) that saves
the attention weights of the layers asked for (``<layers>.i.<attention>.output[1]``, eager attention)
and the logits; user code can run inside it (``intervene``), and it can run on NDIF
(``remote=True``, :mod:`.remote`). nnsight is an optional dependency (``tempo_lens[nnsight]``): it is
imported only inside this package's functions, so tempo_lens imports without it.

May import: :mod:`..base`, :mod:`..bridge.kv_cache` (the cache keyword and its copy) and the layers below the model layer.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from ...errors import InvalidInputError
from ..base import Backend, Hook, PositionKind, TempoStep, eos_ids
from ..bridge.kv_cache import cache_kwarg_name, repeat_dynamic_cache
from .activations import Kind, parse
from .masks import SLIDING, float_masks
from .remote import check_remote, remote_failure
from .structure import ModelStructure, resolve, structure_of, tl_config

Intervene = Callable[[Any, list[Any]], Any]


def is_nnsight(model: Any) -> bool:
    """Whether ``model`` is an nnsight Transformers model (checked without importing nnsight when it is not loaded)."""
    if sys.modules.get("nnsight") is None:  # no nnsight model can exist before nnsight is imported
        return False
    from nnsight.modeling.transformers import TransformersModel  # deferred: nnsight

    return isinstance(model, TransformersModel)


Op = tuple[str, str, Callable[..., Any]]  # ("read" or "edit", name, function)


def activation_ops(step: TempoStep) -> dict[tuple[int, Kind], list[Op]]:
    """The step's reads and edits by (layer, activation), each name checked (:func:`.activations.parse`)."""
    ops: dict[tuple[int, Kind], list[Op]] = {}
    for what, pairs in (("edit", step.edits), ("read", step.readers)):
        for name, fn in pairs:
            ops.setdefault(parse(name), []).append((what, name, fn))
    return ops


def _apply(value: Any, todo: list[Op], values: dict[str, Any], n_out: int) -> Any:
    """Edits first (each ``fn(activation, None)``, as a TransformerLens hook), then saves for the reads."""
    for what, _name, fn in todo:
        if what == "edit":
            value = fn(value, None)
    for what, name, _fn in todo:
        if what == "read":
            values[name] = value[:, -n_out:].save()
    return value


def _with_hidden(args: tuple, kwargs: dict[str, Any], hidden: Any) -> tuple[tuple, dict[str, Any]]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _no_hook_points(what: str) -> InvalidInputError:
    return InvalidInputError(
        f"{what} works through TransformerLens hook points, which an nnsight model does not have; load the model with "
        "backend='bridge' for it, or use the nnsight backend's own path (generate, replay, the tools)"
    )


class NnsightBackend(Backend):
    name = "nnsight"
    uses_hook_points = False

    def __init__(self, model: Any):
        super().__init__(model)
        self._remote_checked = False
        if "cfg" not in model.__dict__:  # the TransformerLens-style facts tempo_lens reads on every backend
            name = getattr(model, "tempo_lens_model_name", None) or str(getattr(self.hf.config, "name_or_path", "") or "model")
            model.cfg = tl_config(self.hf, name)

    @cached_property
    def _keeps_logits(self) -> bool:
        """Whether the model's forward takes ``logits_to_keep`` (the unembedding of the last rows only)."""
        return "logits_to_keep" in inspect.signature(self.hf.forward).parameters

    @property
    def hf(self) -> Any:
        """The wrapped Hugging Face causal LM."""
        return self.model._module

    @cached_property
    def structure(self) -> ModelStructure:
        return structure_of(self.hf)

    # ---- facts -------------------------------------------------------------------------------

    def weights(self) -> Iterator[Tensor]:
        return self.hf.parameters()

    @property
    def device(self) -> torch.device:
        device = next(self.weights()).device
        return torch.device("cpu") if device.type == "meta" else device  # a remote-only model keeps meta weights here

    def eos_token_ids(self) -> set[int]:
        config = getattr(self.hf, "generation_config", None)
        return eos_ids(getattr(self.model, "tokenizer", None), getattr(config, "eos_token_id", None))

    def attention_windows(self) -> list[int | None]:
        structure = self.structure
        return [structure.sliding_window if t == SLIDING else None for t in structure.layer_types]

    def physical_limit(self) -> int | None:
        return None  # positions arrive as position_ids: nothing is indexed at physical positions

    def position_kind(self) -> PositionKind | None:
        return self.structure.position_kind

    def position_hook_names(self) -> list[str]:
        return []

    def rope_position_hooks(self, positions: Any) -> list[Hook]:
        raise _no_hook_points("rope_position_hooks")

    def position_table(self) -> Tensor:
        return resolve(self.hf, self.structure.layers.rsplit(".", 1)[0] + ".wpe").weight

    def learned_position_hooks(self, positions: Any) -> list[Hook]:
        raise _no_hook_points("learned_position_hooks")

    def model_problem(self) -> str | None:
        if self.position_kind() is None:
            return "TEMPO cannot share its positions: it has neither a rotary embedding nor a learned position table"
        implementation = getattr(self.hf.config, "_attn_implementation", None)
        if implementation not in (None, "eager"):
            return f"its attention is {implementation!r}, which returns no attention weights; load it with attn_implementation='eager'"
        return None

    # ---- running -----------------------------------------------------------------------------

    def prepare(self) -> None:
        problem = self.model_problem()
        if problem:
            raise InvalidInputError(f"this nnsight model cannot run TEMPO: {problem}")

    def apply_speedups(self, fast: bool | None) -> list[str]:
        return []  # the model's own forward runs unchanged

    def new_cache(self, batch: int) -> Any:
        from transformers import DynamicCache  # deferred: transformers

        return DynamicCache()  # no config: every layer keeps every key, so sliding windows live in the mask

    def repeat_cache(self, cache: Any, batch: int) -> Any:
        return repeat_dynamic_cache(cache, batch)

    def forward(self, tokens: Tensor, cache: Any = None) -> Tensor:
        kwargs = {} if cache is None else {cache_kwarg_name(self.hf): cache, "use_cache": True}
        return self.hf(input_ids=tokens.to(self.device), **kwargs).logits

    def run_with_cache(self, tokens: Tensor, names_filter: Any) -> tuple[Tensor, Any]:
        raise _no_hook_points("run_with_cache")

    def tempo_forward(
        self, step: TempoStep, cache: Any = None, *, intervene: Intervene | None = None, remote: bool = False, **options: Any
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """One nnsight trace of ``step``: HF's forward with position_ids, per-type float masks and the cache.

        Saves ``n_out`` rows of the logits and of each asked layer's attention weights; ``intervene(model,
        siblings)`` runs in a second invoke of the same trace (it sees and may edit the whole batch). A step
        nothing observes runs HF's forward without a trace (:meth:`_unobserved`).
        """
        structure, device = self.structure, self.device
        masks = float_masks(step, structure.sliding_window if structure.has_sliding_layers else None, self.dtype, device)
        fed = step.tokens.shape[-1]
        kwargs: dict[str, Any] = {
            "position_ids": step.positions[:, step.positions.shape[-1] - fed :].round().long().to(device),
            "attention_mask": masks["full_attention"],
            "use_cache": cache is not None,
        }
        if cache is not None:
            kwargs[cache_kwarg_name(self.hf)] = cache
        n_out, wanted = step.n_out or fed, set(step.layers)
        if n_out < fed and self._keeps_logits:
            kwargs["logits_to_keep"] = n_out  # the unembedding computes (and a remote trace returns) only these rows
        if remote:
            if not self._remote_checked:
                check_remote(self.model)
                self._remote_checked = True
            try:
                return self._trace(step, kwargs, masks, n_out, wanted, intervene, remote=True)
            except Exception as exc:  # any failure of the request itself (network, server, quota)
                raise remote_failure(exc) from exc
        if self._unobserved(step, intervene) and SLIDING not in masks:
            return self.hf(input_ids=step.tokens.to(device), **kwargs).logits[:, -n_out:], {}
        return self._trace(step, kwargs, masks, n_out, wanted, intervene, remote=False)

    def _unobserved(self, step: TempoStep, intervene: Intervene | None) -> bool:
        """Whether nothing would run inside a trace of ``step``: no layers, reads, edits, user code or stored edits.

        Then HF's forward is called directly: the trace would run that same forward and save only its logits,
        so the result is the same to the bit, without the trace's setup (about 5 ms a forward on a CPU).
        """
        stored = getattr(self.model, "_edits", None)  # model.edit(inplace=True) replays these in every trace
        return intervene is None and not step.layers and not step.readers and not step.edits and not stored

    def _trace(
        self,
        step: TempoStep,
        kwargs: dict[str, Any],
        masks: dict[str, Tensor],
        n_out: int,
        wanted: set[int],
        intervene: Intervene | None,
        remote: bool,
    ) -> tuple[Tensor, dict[int, Tensor]]:
        structure, model, device = self.structure, self.model, self.device
        ops = activation_ops(step)
        saved: dict[int, Any] = {}
        values: dict[str, Any] = {}
        sliding = set(self._sliding_layers()) if SLIDING in masks else set()
        with model.trace(remote=remote) as tracer:
            with tracer.invoke(step.tokens.to(device), **kwargs):
                layers = resolve(model, structure.layers)
                for layer in range(max([*wanted, *(layer for layer, _ in ops), *sliding, -1]) + 1):
                    block = layers[layer]
                    here = {kind: todo for (at, kind), todo in ops.items() if at == layer}
                    if layer in sliding or "resid_pre" in here:  # the layer's inputs, read once
                        args, layer_kwargs = block.inputs
                        if layer in sliding:
                            layer_kwargs = {**layer_kwargs, "attention_mask": masks[SLIDING]}
                        if "resid_pre" in here:
                            hidden = _apply(args[0] if args else layer_kwargs["hidden_states"], here["resid_pre"], values, n_out)
                            args, layer_kwargs = _with_hidden(args, layer_kwargs, hidden)
                        block.inputs = (args, layer_kwargs)
                    if layer in wanted or "attn_out" in here:  # the attention module's (output, weights), read once
                        attention = getattr(block, structure.attention)
                        output = attention.output
                        if layer in wanted:
                            saved[layer] = output[1][:, :, -n_out:].save()
                        if "attn_out" in here:
                            attention.output = (_apply(output[0], here["attn_out"], values, n_out), *output[1:])
                    if "mlp_out" in here:
                        mlp = getattr(block, structure.mlp or "mlp")
                        mlp.output = _apply(mlp.output, here["mlp_out"], values, n_out)
                    if "resid_post" in here:
                        output = block.output
                        if isinstance(output, tuple):
                            block.output = (_apply(output[0], here["resid_post"], values, n_out), *output[1:])
                        else:
                            block.output = _apply(output, here["resid_post"], values, n_out)
                logits = resolve(model, structure.unembed).output[:, -n_out:].save()
            if intervene is not None:
                with tracer.invoke():
                    intervene(model, step.siblings)
        for name, read in step.readers:
            read(values[name])
        return logits, {layer: saved[layer] for layer in sorted(wanted)}

    def _sliding_layers(self) -> list[int]:
        types = self.structure.layer_types
        return [i for i, t in enumerate(types) if t == SLIDING] if self.structure.has_sliding_layers else []

    # ---- reading -----------------------------------------------------------------------------

    def final_residual_hook(self) -> str:
        return self.structure.final_norm  # read as the final norm's input in a trace

    def final_norm(self) -> torch.nn.Module:
        return resolve(self.hf, self.structure.final_norm)

    def unembed_logits(self, normed: Tensor) -> Tensor:
        return resolve(self.hf, self.structure.unembed)(normed)

    @property
    def n_mask_types(self) -> int:
        """How many 4D masks a forward sends (one per attention type)."""
        return 2 if self.structure.has_sliding_layers else 1
