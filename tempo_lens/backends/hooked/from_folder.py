"""Your own ``HookedTransformer`` from a local folder, with TransformerLens's weight processing on or off.

``HookedTransformer.from_pretrained`` accepts only TransformerLens's official names and reads their
config from its table or the hub; a converted zoo folder (or any Hugging Face folder) is neither. This
builds the model the way ``from_pretrained`` does, from the folder alone and offline: the
``HookedTransformerConfig`` from the folder's ``config.json`` (:func:`~.config.hooked_config`), the weights
from the Hugging Face model in the folder through TransformerLens's own converters, then
``load_and_process_state_dict`` with the processing flags you choose. Defaults are ``from_pretrained``'s
(processing on); all off gives what ``load_model(path, backend="hooked")`` gives, logits equal to the
Hugging Face model's. Processing shifts each row of logits by a constant, so log-probabilities, and every
TEMPO choice, are the same either way.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ...errors import InvalidInputError
from .loading import load_hooked, local_folder
from .weight_layout import store_weights_as_read


def hooked_from_folder(
    path: str | os.PathLike,
    *,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
    refactor_factored_attn_matrices: bool = False,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    store_weights: bool = True,
) -> Any:
    """A ``HookedTransformer`` (``HookedSAETransformer`` with SAELens installed) of the model in folder ``path``.

    ``path``: a local folder with ``config.json``, the weights and the tokenizer (a zoo model's converted
    folder: ``tempo_lens.models.loading.embedded_model_dir()``, or ``tempo-lens models`` for the others), or a Hugging
    Face name in the local cache. The processing flags are ``HookedTransformer.from_pretrained``'s, with its
    defaults; a flag the architecture cannot take (folding or centring on a post-norm model, centring the
    unembedding under a logit soft-cap) is refused rather than skipped. ``store_weights``: re-store the weights
    in the layout TransformerLens's forward reads (:func:`~.weight_layout.store_weights_as_read`: same values,
    bit-identical logits, no weight copied per forward). Needs TransformerLens 3.x.
    """
    flags = dict(
        fold_ln=fold_ln,
        center_writing_weights=center_writing_weights,
        center_unembed=center_unembed,
        fold_value_biases=fold_value_biases,
        refactor_factored_attn_matrices=refactor_factored_attn_matrices,
    )
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidInputError(f"{flag} must be True or False, got {value!r}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise InvalidInputError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    name = os.fspath(path)
    model = load_hooked(name, name, dtype, str(device), processing=_checked(name, flags))
    if store_weights:
        store_weights_as_read(model)
    model.tempo_lens_model_name = name
    return model


def _checked(name: str, flags: dict[str, bool]) -> dict[str, bool]:
    """``flags``, once the architecture in ``name`` is known to take them (TransformerLens would skip them with a log line)."""
    from transformers import AutoConfig  # deferred: transformers

    hf = AutoConfig.from_pretrained(local_folder(name))
    architecture = (getattr(hf, "architectures", None) or [""])[0]
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES  # deferred: transformer_lens
    except ImportError:
        POST_NORM_ARCHITECTURES = set()
    if architecture in POST_NORM_ARCHITECTURES and (flags["fold_ln"] or flags["center_writing_weights"]):
        raise InvalidInputError(
            f"{architecture} is post-norm: fold_ln and center_writing_weights do not apply; pass them as False"
        )
    cap = getattr(hf, "final_logit_softcapping", None)
    if flags["center_unembed"] and cap:
        raise InvalidInputError(
            f"{architecture} soft-caps its logits ({cap}), so centring the unembedding changes them; pass center_unembed=False"
        )
    return flags
