"""Teacher-forced replay of a saved layout in one forward, with any positions and any mask.

Replay is how the controls are built: the same tokens at unique positions (RoPE sharing ablated,
mask unchanged), or the same tokens with the isolation mask toggled (a paired isolated-vs-visible
comparison on identical tokens). Its per-step attention has the captured shape, so every metric
applies unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .backends import Backend, backend_for
from .backends.base import TempoStep
from .capture import resolve_layers
from .errors import InvalidInputError
from .hooks import PatternRecorder, attention_block_hooks, layout_blocked_fn, tempo_position_hooks
from .layout import MODES, TokenLayout
from .siblings import RunView
from .validation import check_token_ids

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

PositionsArg = Literal["shared", "unique"] | Tensor
MaskArg = Literal["isolated", "visible"] | Tensor


@dataclass(frozen=True)
class Condition:
    """A replay of a run's tokens: ``mask`` (``"isolated"`` / ``"visible"``), ``positions`` (``"shared"`` /
    ``"unique"`` / a tensor), and ``pruned`` (False: every pruning decision undone)."""

    mask: MaskArg = "isolated"
    positions: PositionsArg = "shared"
    pruned: bool = True

    @property
    def label(self) -> str:
        mask = self.mask if isinstance(self.mask, str) else "custom mask"
        positions = self.positions if isinstance(self.positions, str) else "custom positions"
        return f"{mask}, {positions}" + ("" if self.pruned else ", unpruned")

    def layout(self, layout: TokenLayout) -> TokenLayout:
        return layout if self.pruned else layout.unpruned()


def check_condition(condition: object, name: str) -> Condition:
    """``condition`` when it is a :class:`Condition`, else a clear error naming the argument."""
    if not isinstance(condition, Condition):
        raise InvalidInputError(f"{name} must be a tempo_lens.tools.Condition, got {type(condition).__name__}")
    return condition


def default_condition(view: RunView, condition: Condition | None) -> Condition:
    """The given condition, or the run's own mode at shared positions."""
    if condition is None:
        return Condition(mask=view.mode if view.mode in MODES else "isolated")
    if not isinstance(condition, Condition):
        raise InvalidInputError(f"condition must be a tempo_lens.tools.Condition, got {type(condition).__name__}")
    return condition


@dataclass
class ReplayResult:
    """Logits of every physical token, per-step attention ``[layers, 1, heads, q, K]``, and the TL cache if asked."""

    logits: Float[Tensor, "n_tokens vocab"]
    attention: dict[int, np.ndarray]
    layers: list[int]
    cache: Any = None


def _blocked_fn(layout: TokenLayout, mask: MaskArg):
    if isinstance(mask, Tensor):
        if mask.dtype != torch.bool or mask.shape != (len(layout), len(layout)):
            raise InvalidInputError(f"a mask tensor must be boolean [{len(layout)}, {len(layout)}] (True = blocked)")
        return lambda q, k: mask[k - q : k, :k]
    if mask not in MODES:
        raise InvalidInputError(f"unknown mask {mask!r}; use 'isolated', 'visible' or a boolean tensor")
    return layout_blocked_fn(layout, mask, apply_pruning=True)


def replay_hooks(backend: Backend, layout: TokenLayout, positions: Tensor, mask: MaskArg) -> list:
    """The position and mask hooks of a teacher-forced replay of ``layout`` (shared by every replay-based tool)."""
    return tempo_position_hooks(backend, positions) + attention_block_hooks(backend, _blocked_fn(layout, mask))


def _check_arguments(backend: Backend, layout: Any) -> None:
    if not isinstance(layout, TokenLayout):
        raise InvalidInputError(f"replay needs a TokenLayout (result.layout or run.layout), got {type(layout).__name__}")
    if not len(layout):
        raise InvalidInputError("the layout is empty; replay a generation's layout")
    try:
        check_token_ids(backend.model, layout.token_ids)  # generate's rule: a layout of another model's vocabulary is refused
    except InvalidInputError as exc:
        raise InvalidInputError(f"this layout does not fit the model: {exc}; replay a layout made with this model") from None


def replay_positions(layout: TokenLayout, positions: PositionsArg) -> Float[Tensor, " pos"]:
    """One float position per token: the layout's shared or unique positions, or the given numbers, checked."""
    if isinstance(positions, str):
        return layout.positions(positions)
    if not isinstance(positions, (Tensor, np.ndarray, list, tuple)):
        raise InvalidInputError(f"positions must be 'shared', 'unique' or one number per token, got {type(positions).__name__}")
    pos = torch.as_tensor(positions).to(torch.float32).flatten()
    if pos.shape[0] != len(layout):
        raise InvalidInputError(f"positions has {pos.shape[0]} entries for {len(layout)} tokens")
    if not torch.isfinite(pos).all():
        raise InvalidInputError("positions must be finite numbers (no NaN or inf)")
    return pos


def _extra_hooks(model: TransformerBridge, extra_hooks: Sequence[tuple[str, Any]] | None) -> list:
    hooks = list(extra_hooks or [])
    names = set(model.hook_dict) if hasattr(model, "hook_dict") else None
    for hook in hooks:
        if not (
            isinstance(hook, (tuple, list))
            and len(hook) == 2
            and (isinstance(hook[0], str) or callable(hook[0]))
            and callable(hook[1])
        ):
            raise InvalidInputError(f"extra_hooks must be (hook name, function) pairs, got {hook!r}")
        if names is not None and isinstance(hook[0], str) and hook[0] not in names:
            raise InvalidInputError(f"extra_hooks: this model has no hook point {hook[0]!r} (e.g. blocks.0.attn.hook_pattern)")
    return hooks


def replay_activations(
    backend: Backend,
    layout: TokenLayout,
    positions: PositionsArg,
    mask: MaskArg,
    names: Sequence[str],
    extra_hooks: Sequence[tuple[str, Any]] = (),
) -> ReplayResult:
    """Replay on a backend without hook points keeping the activations ``names`` (TransformerLens's names).

    ``result.cache`` maps each name to ``[n_tokens, ...]`` (batch axis dropped), as the tools' cached replay does;
    ``extra_hooks`` edit activations by name during the forward.
    """
    _check_arguments(backend, layout)
    cache: dict[str, Tensor] = {}
    readers = [(name, lambda value, name=name: cache.__setitem__(name, value[0].detach().cpu())) for name in names]
    positions_ = replay_positions(layout, positions)
    logits, _ = explicit_replay(backend, layout, positions_, mask, [], readers=readers, edits=list(extra_hooks or []))
    return ReplayResult(logits=logits[0].detach().cpu(), attention={}, layers=[], cache=cache)


def replay(
    model: TransformerBridge,
    layout: TokenLayout,
    positions: PositionsArg = "shared",
    mask: MaskArg = "isolated",
    *,
    layers: Sequence[int] | None = None,
    run_with_cache: bool = False,
    names_filter: Any = None,
    extra_hooks: Sequence[tuple[str, Any]] | None = None,
) -> ReplayResult:
    """Run ``layout``'s token sequence teacher-forced in one forward.

    ``positions``: ``"shared"`` (logical), ``"unique"`` (physical index) or a float tensor per token.
    ``mask``: ``"isolated"`` / ``"visible"`` (pruned keys stay hidden from later steps) or a boolean
    ``[n, n]`` tensor (True = blocked; a query always keeps its own key). ``layers``: which layers' attention to return (default all; negative counts from the last; ``[]`` none).
    ``extra_hooks``: more ``(hook_name, hook_fn)`` pairs (e.g. :func:`~tempo_lens.hooks.attention_bias_hooks`),
    run after the replay's own position and mask hooks and before its pattern recorder, so the
    returned attention is the one the model used.
    """
    return replay_on(
        backend_for(model),  # refuses anything but a TransformerBridge, HookedTransformer or nnsight model
        layout,
        positions,
        mask,
        layers=layers,
        run_with_cache=run_with_cache,
        names_filter=names_filter,
        extra_hooks=extra_hooks,
    )


def replay_on(
    backend: Backend,
    layout: TokenLayout,
    positions: PositionsArg = "shared",
    mask: MaskArg = "isolated",
    *,
    layers: Sequence[int] | None = None,
    run_with_cache: bool = False,
    names_filter: Any = None,
    extra_hooks: Sequence[tuple[str, Any]] | None = None,
) -> ReplayResult:
    """:func:`replay` on an already resolved backend (what the tools call, resolving the model once per call)."""
    _check_arguments(backend, layout)
    model = backend.model
    chosen = resolve_layers(layers, int(model.cfg.n_layers), "replay layers")
    if not backend.uses_hook_points:
        logits, patterns = explicit_replay(
            backend, layout, replay_positions(layout, positions), mask, chosen, run_with_cache, extra_hooks
        )
        return _replay_result(layout, logits, patterns, chosen)
    recorder = PatternRecorder(chosen)
    hooks = replay_hooks(backend, layout, replay_positions(layout, positions), mask)
    hooks += _extra_hooks(model, extra_hooks) + recorder.hooks()
    tokens = torch.tensor([layout.token_ids], dtype=torch.long, device=backend.device)
    cache = None
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        if run_with_cache:
            logits, cache = backend.run_with_cache(tokens, names_filter)
        else:
            logits = backend.forward(tokens)
    return _replay_result(layout, logits, recorder.take(), chosen, cache)


def _replay_result(
    layout: TokenLayout, logits: Tensor, patterns: dict[int, Tensor], chosen: list[int], cache: Any = None
) -> ReplayResult:
    """Per-step attention ``[layers, 1, heads, q, K]`` cut from the full patterns (``layers=[]`` records nothing)."""
    attention = {}
    if chosen:
        stacked = torch.stack([patterns[l] for l in chosen]).to("cpu", torch.float32)
        for step in range(layout.n_steps):
            r = layout.step_range(step)
            attention[step] = stacked[:, :, :, r.start : r.stop, : r.stop].numpy().copy()
    return ReplayResult(logits=logits[0].detach().cpu(), attention=attention, layers=chosen, cache=cache)


def explicit_replay(
    backend: Backend,
    layout: TokenLayout,
    positions: Tensor,
    mask: MaskArg,
    chosen: list[int],
    run_with_cache: bool = False,
    extra_hooks: Any = None,
    readers: Sequence[tuple[str, Any]] = (),
    edits: Sequence[tuple[str, Any]] = (),
    copies: int = 1,
) -> tuple[Tensor, dict[int, Tensor]]:
    """Replay on a backend without hook points: one forward with the positions and the mask as inputs.

    ``readers`` / ``edits``: activations by TransformerLens name (:class:`~tempo_lens.backends.base.TempoStep`);
    ``extra_hooks`` are edits too. ``copies``: that many batch rows of the same replay (for per-row edits).
    """
    if run_with_cache:
        raise InvalidInputError(
            "run_with_cache returns TransformerLens's activation cache, which an nnsight model has none of; load it with "
            "backend='bridge' for it (on an nnsight model, trace it yourself with the same positions and mask)"
        )
    if not torch.equal(positions, positions.round()):
        raise InvalidInputError("fractional positions need the rotary hooks of backend='bridge'; position_ids are integers")
    n = len(layout)
    blocked = _blocked_fn(layout, mask)(n, n)
    windows = {w for w in backend.attention_windows() if w is not None}
    windowed = {w: blocked | layout.blocked("visible", apply_pruning=False, window=w) for w in windows}  # + the window
    step = TempoStep(
        tokens=torch.tensor([layout.token_ids] * copies, dtype=torch.long),
        positions=positions[None].expand(copies, n),
        blocked=blocked[None].expand(copies, n, n),
        windowed={w: m[None].expand(copies, n, n) for w, m in windowed.items()},
        layers=tuple(chosen),
        n_out=n,
        readers=list(readers),
        edits=[*edits, *_extra_hooks(backend.model, extra_hooks)],
    )
    with torch.no_grad():
        return backend.tempo_forward(step)
