"""TEMPO generation of one prompt: one cached forward per step feeds all of the step's siblings.

Positions and masks come only from hooks (:mod:`tempo_lens.hooks`), entered once for the whole
generation; the :class:`~tempo_lens.layout.TokenLayout` they read is updated step by step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..activation_cache import ActivationRecorder, NamesFilter, resolve_names
from ..backends import Backend, as_backend, backend_for
from ..errors import InvalidInputError
from ..hook_context import in_forward, row_in_forward, step_context
from ..hooks import PatternRecorder, tempo_hooks
from .config import GenerationConfig
from .explicit import drive_rows
from .progress import step_bar
from .result import GenerationResult
from .row import GenerationRow, resolve_config

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def new_cache(model: TransformerBridge | Backend, batch: int = 1) -> Any:
    """An empty KV cache of the model's own kind for ``batch`` rows (``model``: a model or its resolved backend)."""
    return as_backend(model).new_cache(batch)


def forward_step(
    model: TransformerBridge | Backend, tokens: Sequence[Sequence[int]], cache: Any
) -> Float[Tensor, "batch pos d_vocab"]:
    """One cached forward of new tokens (one list per batch row); returns their logits rows."""
    return as_backend(model).forward_step([list(t) for t in tokens], cache)


def check_explicit_options(backend: Backend, intervene: Any, remote: Any, names_filter: Any = None) -> None:
    """``intervene`` and ``remote`` exist on backends without hook points (nnsight) only; ``names_filter`` on the others."""
    if intervene is not None and not callable(intervene):
        raise InvalidInputError(f"intervene must be a function (model, siblings), got {type(intervene).__name__}")
    if not isinstance(remote, bool):
        raise InvalidInputError(f"remote must be True or False, got {remote!r}")
    if backend.uses_hook_points and (intervene is not None or remote):
        raise InvalidInputError(
            "intervene and remote need an nnsight model (load_model(..., backend='nnsight')); on this model add "
            "TransformerLens hooks with model.hooks(...) instead"
        )
    if not backend.uses_hook_points and names_filter is not None:
        raise InvalidInputError(
            "names_filter records TransformerLens hook points, which an nnsight model has none of; save activations "
            "with intervene=... (e.g. model.model.layers[i].output[...].save()) or load the model with backend='bridge'"
        )


def generate(
    model: TransformerBridge,
    prompt: str | Sequence[int] | Tensor,
    config: GenerationConfig | None = None,
    *,
    keep_logits: bool = False,
    names_filter: NamesFilter = None,
    progress: bool | None = None,
    intervene: Callable[[Any, list[Any]], Any] | None = None,
    remote: bool = False,
    **overrides: Any,
) -> GenerationResult:
    """Generate with TEMPO on a TransformerBridge or HookedTransformer.

    ``config`` holds the settings (:class:`GenerationConfig`; default settings when None); keyword
    ``overrides`` change single fields, e.g. ``generate(model, "The cat sat on the", threshold=0.1,
    mode="visible", capture=True)``. ``capture`` is True, a list of layers or a
    :class:`~tempo_lens.capture.CaptureSpec`; ``pruning`` is an
    :class:`~tempo_lens.pruning.AttentionPruning` or :class:`~tempo_lens.pruning.SimilarityPruning`.
    ``keep_logits`` keeps each step's logits rows (``result.step_logits``) for checks against an oracle.
    ``names_filter`` (TransformerLens's meaning: a hook name, a list of names or a predicate) records those hook
    points for every token as the generation runs: ``result.cache[name][i]`` is physical token ``i``'s value
    (:class:`~tempo_lens.activation_cache.TokenCache`). No extra forward is needed: the last step's tokens are fed
    by the forward that decides whether to stop, so every row is filled. Hooks during generation can read
    :func:`~tempo_lens.hook_context.current_step`.
    ``progress``: a progress bar per step (default: only for long runs at a terminal, :mod:`.progress`).
    On an nnsight model (``backend="nnsight"``), ``intervene(model, siblings)`` runs inside every forward's
    trace (``siblings``: a list of :class:`~.explicit.Siblings`) and ``remote=True`` runs each step on NDIF.
    """
    backend = backend_for(model)
    check_explicit_options(backend, intervene, remote, names_filter)
    config = resolve_config(config, overrides)
    row = GenerationRow.start(backend, prompt, config, keep_logits=keep_logits)
    backend.prepare()
    if not backend.uses_hook_points:
        with step_bar(config.max_steps, progress) as bar:
            drive_rows(backend, [row], bar, intervene=intervene, remote=remote)
        return row.result()
    activations = ActivationRecorder(resolve_names(model, names_filter))

    def fed(n_new: int):
        return in_forward(step_context([row_in_forward(row.layout, row.token_strings, n_new)]))

    with PatternRecorder(row.recorded_layers) as recorder, torch.no_grad(), step_bar(config.max_steps, progress) as bar:
        hooks = tempo_hooks(backend, row.layout, config.mode) + recorder.hooks() + row.hooks + activations.hooks()
        with model.hooks(fwd_hooks=hooks):
            cache = new_cache(backend)
            with fed(len(row.ids)):
                row.read_prompt(backend.forward_read([list(row.ids)], cache, [len(row.ids) - 1])[0])
            recorder.take()
            while not row.done:
                ids = row.choose()
                with fed(len(ids)):
                    logits = forward_step(backend, [ids], cache)[0]
                row.read_step(logits, recorder.take())
                bar.update()
    result = row.result()
    if activations.names:
        result.cache = activations.cache(0, row.layout, row.token_strings)
    return result
