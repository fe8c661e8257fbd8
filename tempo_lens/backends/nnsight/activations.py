"""TransformerLens activation names read and edited inside an nnsight trace of a Hugging Face model.

Tools written against hook points name activations as TransformerLens does; on a Hugging Face decoder
layer they are: ``blocks.L.hook_resid_pre`` (the layer's input hidden states), ``blocks.L.hook_attn_out``
(its attention module's output, after the output projection), ``blocks.L.hook_mlp_out`` (its MLP's
output) and ``blocks.L.hook_resid_post`` (the layer's output). Other names (``attn.hook_z``,
``ln_final.hook_scale``, ...) have no single module value and are refused.
"""

from __future__ import annotations

from typing import Literal, get_args

from ...errors import InvalidInputError

Kind = Literal["resid_pre", "attn_out", "mlp_out", "resid_post"]  # in the order a layer computes them
KINDS: tuple[Kind, ...] = get_args(Kind)


def parse(name: str) -> tuple[int, Kind]:
    """``blocks.L.hook_<kind>`` as ``(L, kind)``; any other name is refused, naming the ones that work."""
    parts = name.split(".")
    kind = parts[2].removeprefix("hook_") if len(parts) == 3 else ""
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and kind in KINDS:
        return int(parts[1]), kind  # type: ignore[return-value]
    raise InvalidInputError(
        f"an nnsight model has no hook points; {name!r} cannot be read or patched here (it can: blocks.L.hook_resid_pre, "
        "hook_attn_out, hook_mlp_out, hook_resid_post). Load the model with backend='bridge' for it."
    )
