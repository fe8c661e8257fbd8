"""Loading a ``HookedTransformer`` (a ``HookedSAETransformer`` when SAELens is installed) from a local folder.

The Hugging Face model is read from the folder (eager attention), its weights are converted by
TransformerLens's own converters, and nothing is processed: no LayerNorm folding, no centring of the
writing weights or the unembedding, no value-bias folding. So the logits are the Hugging Face model's,
and TEMPO's oracle bounds apply unchanged. (A model a user loads with the processing on gives logits
shifted by a constant per row; probabilities, and so every TEMPO choice, are unaffected.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import ModelUnavailableError
from .config import hooked_config


def hooked_class() -> type:
    """``HookedSAETransformer`` when SAELens is importable (it accepts SAEs too), else ``HookedTransformer``."""
    try:
        from sae_lens import HookedSAETransformer  # deferred: sae_lens
    except ImportError:
        from transformer_lens import HookedTransformer  # deferred: transformer_lens

        return HookedTransformer
    return HookedSAETransformer


def local_folder(path: str) -> Path:
    """The folder holding a model: ``path`` itself, or its snapshot in the local Hugging Face cache."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download  # deferred: huggingface_hub

    try:
        return Path(snapshot_download(path, local_files_only=True))
    except Exception as exc:  # huggingface_hub's LocalEntryNotFoundError and friends
        raise ModelUnavailableError(
            f"model {path!r} is not a local folder nor in the local Hugging Face cache ({type(exc).__name__})"
        ) from None


UNPROCESSED = dict(
    fold_ln=False,
    center_writing_weights=False,
    center_unembed=False,
    fold_value_biases=False,
    refactor_factored_attn_matrices=False,
)


def load_hooked(path: str, name: str, dtype: torch.dtype, device: str, processing: dict[str, bool] | None = None) -> Any:
    """A ``HookedTransformer`` of the model at ``path``, in eval mode; weights unprocessed unless ``processing``
    (TransformerLens's ``load_and_process_state_dict`` flags) says otherwise."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401  (TransformerLens 4 removed it)
    except ImportError as exc:
        raise ModelUnavailableError(
            f"backend='hooked' needs TransformerLens 3.x, which has HookedTransformer ({exc}); install "
            "'transformer-lens>=3.9,<4' (e.g. beside sae-lens) or use backend='bridge'"
        ) from None
    import transformer_lens.loading_from_pretrained as loading  # deferred: transformer_lens
    from transformers import AutoModelForCausalLM, AutoTokenizer  # deferred: transformers

    folder = local_folder(path)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
    cfg = hooked_config(folder, hf_model.config, name, dtype, device)
    state_dict = loading.get_pretrained_state_dict(str(folder), cfg, hf_model, dtype=dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError):
        tokenizer = None
    model = hooked_class()(cfg, tokenizer, move_to_device=True, default_padding_side="right")
    model.load_and_process_state_dict(state_dict, **(UNPROCESSED if processing is None else processing))
    model.tempo_lens_eos_token_id = getattr(hf_model.generation_config, "eos_token_id", None)
    del hf_model, state_dict
    return model.eval()
