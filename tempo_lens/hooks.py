"""Hook factories that implement TEMPO on any TransformerBridge or HookedTransformer, usable on their own.

Each factory returns ``(hook_name, hook_fn)`` pairs for ``model.run_with_hooks(fwd_hooks=...)`` or
``with model.hooks(fwd_hooks=...)``. A hook works for a full forward and for a cached step alike:
a forward is taken to cover the *last* tokens of the sequence its layout (or positions tensor)
describes, i.e. physical ``[K - q, K)`` where ``q`` is the number of new tokens and ``K`` the number of
keys. Hooks keep no global state and install nothing outside the hook points they name, so removing them
(leaving ``with model.hooks(...)``, or ``run_with_hooks`` returning) undoes everything; they read the
layout they close over when called, and cache derived tensors by the layout's ``version``
(:class:`~tempo_lens.hook_cache.HookCache`). What
depends on the model's class lives in :mod:`tempo_lens.backends`.

Targets (one forward of ``q`` new tokens over ``K`` keys):

- RoPE, on a TransformerBridge: ``rotary_emb.hook_cos`` / ``rotary_emb.hook_sin``: ``[batch, q, d_head]``,
  replaced by the model's own rotary embedding evaluated at the wanted positions (so llama3 / linear /
  yarn scaling stays exact); on a HookedTransformer: ``blocks.L.attn.hook_rot_q`` / ``hook_rot_k``
  (``[batch, q or K, head_index, d_head]``), turned from the physical rows of the layer's own rotary table
  to the wanted ones (:mod:`tempo_lens.backends.hooked.positions`).
- ``hook_pos_embed``: ``[batch, q, d_model]`` for learned absolute positions (GPT-2 family).
- ``blocks.L.attn.hook_attn_scores``: ``[batch, head, q, K]`` pre-softmax, causal mask already applied.
- ``blocks.L.attn.hook_pattern``: ``[batch, head, q, K]`` post-softmax.
Examples: every factory's ``Example::`` block runs as written with ``model`` bound to any
TransformerBridge or HookedTransformer (:func:`learned_position_hooks`: a GPT-2 family one) after ``import torch``,
``from tempo_lens.layout import TokenLayout`` and ``from tempo_lens.hooks import *``;
``tests/test_hook_examples.py`` runs them on tiny random-weight models (their small token ids are
valid in any vocabulary). A hand-built layout stands in for a generation:
``TokenLayout.from_prompt(ids)``, then ``layout.append_step(sibling_ids, sibling_probs)`` per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .backends import Backend, as_backend, model_of
from .capture import resolve_layers
from .errors import InvalidInputError
from .hook_cache import HookCache, Same
from .layout import Mode, TokenLayout
from .position_source import PositionSource
from .validation import check_finite

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    ModelOrBackend = TransformerBridge | Backend  # a factory takes a researcher's model or the backend tempo_lens resolved

Hook = tuple[str, Callable[..., Tensor]]


def _attn_score_hook_names(model: TransformerBridge, layers: Iterable[int] | None = None) -> list[str]:
    """The score hook points of ``layers`` (None: all), checked by the one layer rule (negative counts from the last)."""
    chosen = resolve_layers(None if layers is None else list(layers), int(model.cfg.n_layers), "layers")
    return [f"blocks.{layer}.attn.hook_attn_scores" for layer in chosen]


def has_rotary(model: ModelOrBackend) -> bool:
    """Whether ``model`` has rotary position embeddings the hooks can move (Llama, Qwen, Mistral, Gemma, ...)."""
    return as_backend(model).position_kind() == "rotary"


def has_learned_positions(model: ModelOrBackend) -> bool:
    """Whether ``model`` adds a learned position table at ``hook_pos_embed`` (GPT-2 family) and has no RoPE."""
    return as_backend(model).position_kind() == "learned"


# ---- positions ---------------------------------------------------------------------------------


def rope_position_hooks(model: ModelOrBackend, positions: PositionSource) -> list[Hook]:
    """RoPE at chosen (logical, shared, even fractional) positions instead of physical indices.

    On a TransformerBridge, targets ``rotary_emb.hook_cos`` and ``rotary_emb.hook_sin`` (``[batch, q, d_head]``)
    and returns the model's own rotary embedding evaluated at the positions of the forward's last ``q``
    tokens (each of Gemma 3's attention types keeps its own base); on a HookedTransformer, targets every
    layer's ``hook_rot_q`` / ``hook_rot_k`` and turns queries and keys from their physical rows of the
    layer's rotary table to the wanted positions. ``positions`` is a :class:`TokenLayout` (its logical positions), a float
    tensor with one position per physical token (``[n_tokens]``, or ``[batch, n_tokens]`` for one row
    of positions per batch row; the hook then returns ``[batch, q, d_head]``), or a callable returning
    one. Example::

        tokens = torch.tensor([[1, 10, 11, 12, 13]])
        hooks = rope_position_hooks(model, torch.tensor([0., 1., 2., 2., 3.]))
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)   # physical tokens 2 and 3 share position 2
    """
    backend = as_backend(model)
    if not has_rotary(backend):
        raise InvalidInputError(
            f"{type(backend.model).__name__} has no rotary position embedding; use learned_position_hooks for absolute "
            "position embeddings (GPT-2 family) or tempo_position_hooks to choose automatically."
        )
    return backend.rope_position_hooks(positions)


def learned_position_hooks(model: ModelOrBackend, positions: PositionSource) -> list[Hook]:
    """Learned absolute position embeddings at chosen integer positions (GPT-2 family).

    Targets ``hook_pos_embed`` (``[batch, q, d_model]``) and returns rows of the model's own position
    table at the positions of the forward's last ``q`` tokens; ``positions`` as for
    :func:`rope_position_hooks` (``[n_tokens]``). Fractional positions are refused. ``model`` must be a
    GPT-2 family model. Example::

        tokens = torch.tensor([[1, 10, 11, 12, 13]])
        hooks = learned_position_hooks(model, torch.tensor([0., 1., 2., 2., 3.]))
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)   # physical tokens 2 and 3 share position 2
    """
    backend = as_backend(model)
    if not has_learned_positions(backend):
        raise InvalidInputError(f"{type(backend.model).__name__} has no learned position table at hook_pos_embed")
    return backend.learned_position_hooks(positions)


def tempo_position_hooks(model: ModelOrBackend, positions: PositionSource) -> list[Hook]:
    """Shared logical positions through whichever position mechanism the model has (RoPE or learned).

    :func:`rope_position_hooks` (``rotary_emb.hook_cos`` / ``hook_sin``, ``[batch, q, d_head]``) on a RoPE
    model, :func:`learned_position_hooks` (``hook_pos_embed``, ``[batch, q, d_model]``) on a GPT-2 family
    one; anything else is refused. Example::

        tokens = torch.tensor([[1, 10, 11, 12, 13]])
        hooks = tempo_position_hooks(model, torch.tensor([0., 1., 2., 2., 3.]))
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    """
    backend = as_backend(model)
    if has_rotary(backend):
        return rope_position_hooks(backend, positions)
    if has_learned_positions(backend):
        return learned_position_hooks(backend, positions)
    raise InvalidInputError(
        f"{getattr(backend.model.cfg, 'model_name', 'this model')} exposes neither rotary position hooks nor hook_pos_embed, "
        "so TEMPO cannot share positions through hooks; use a RoPE (Llama, Qwen, Mistral, ...) or GPT-2 family model."
    )


# ---- masks -------------------------------------------------------------------------------------


def masked_threshold(dtype: torch.dtype) -> float:
    """Scores at or below this count as masked (the bridge's own causal mask uses ``finfo.min``)."""
    return torch.finfo(dtype).min / 2


def attention_block_hooks(
    model: ModelOrBackend,
    blocked: Callable[[int, int], Bool[Tensor, "query_pos key_pos"]],
    layers: Iterable[int] | None = None,
) -> list[Hook]:
    """Set scores to ``-inf`` wherever ``blocked(q, K)`` is True, at every ``hook_attn_scores``.

    Targets ``blocks.L.attn.hook_attn_scores`` (``[batch, head, q, K]``, pre-softmax) of ``layers``
    (default all). ``blocked`` receives the number of queries and keys of the forward and returns a
    ``[q, K]`` boolean tensor (or ``[batch, q, K]``, one mask per batch row); it is evaluated once per forward (memoised on its result's identity per
    shape) and shared by all layers. A query always keeps its own key, whatever ``blocked`` says: a row
    with every key at ``-inf`` would otherwise softmax to NaN, or, next to the bridge's ``finfo.min``
    causal mask, spread its attention over future tokens. Example::

        no_bos = lambda q, k: torch.arange(k)[None, :].expand(q, k) == 0   # hide key 0 from every query
        tokens = torch.tensor([[1, 10, 11, 12]])
        logits = model.run_with_hooks(tokens, fwd_hooks=attention_block_hooks(model, no_bos))
    """

    cache: HookCache[tuple[Same, torch.device], Tensor | None] = HookCache(size=1)

    def prepared(mask: Tensor, q: int, k: int, device: torch.device) -> Tensor | None:
        """``mask`` with every query's own key kept, on ``device``; None when it blocks nothing.

        Cached by the mask's identity and the device, so the layers of one forward share one check and one
        copy to the device.
        """

        def make() -> Tensor | None:
            if not bool(mask.any()):
                return None
            rows, own = torch.arange(q), torch.arange(k - q, k)
            fixed = mask
            if bool(mask[..., rows, own].any()):
                fixed = mask.clone()
                fixed[..., rows, own] = False
            fixed = fixed.to(device)
            return fixed[:, None] if fixed.ndim == 3 else fixed  # one mask per batch row, shared by heads

        return cache.get((Same(mask), device), make)

    def hook_scores(scores: Float[Tensor, "batch head_index query_pos key_pos"], hook: Any = None) -> Tensor:
        q, k = scores.shape[-2], scores.shape[-1]
        mask = prepared(blocked(q, k), q, k, scores.device)
        return scores if mask is None else scores.masked_fill(mask, float("-inf"))

    return [(name, hook_scores) for name in _attn_score_hook_names(model_of(model), layers)]


def layout_blocked_fn(
    layout: TokenLayout, mode: Mode = "isolated", apply_pruning: bool = True, window: int | None = None
) -> Callable[[int, int], Tensor]:
    """``blocked(q, K)`` from a layout, memoised by (version, q, K), for :func:`attention_block_hooks`.

    Returns a function of the forward's query and key counts giving the ``[q, K]`` boolean mask of
    :meth:`TokenLayout.blocked` (True = hidden) for ``mode``; ``window``: a sliding layer's window
    (physical distance). Example::

        layout = TokenLayout.from_prompt([1, 10, 11])
        layout.append_step([12, 13], [0.6, 0.3])
        blocked = layout_blocked_fn(layout, "isolated")          # blocked(5, 5)[4, 3]: sibling 4 cannot see 3
        logits = model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=attention_block_hooks(model, blocked))
    """
    cache: HookCache[tuple[int, int, int], Tensor] = HookCache(size=1)

    def blocked(q: int, k: int) -> Tensor:
        return cache.get(
            (layout.version, q, k),
            lambda: layout.blocked(mode, n_queries=q, n_keys=k, apply_pruning=apply_pruning, window=window),
        )

    return blocked


def windowed_block_hooks(model: ModelOrBackend, blocked_for: Callable[[int | None], Callable[[int, int], Tensor]]) -> list[Hook]:
    """:func:`attention_block_hooks` on every layer, with ``blocked_for(window)`` for each sliding window the model has.

    Targets every ``blocks.L.attn.hook_attn_scores`` (``[batch, head, q, K]``): ``blocked_for(None)``
    masks the full-attention layers, ``blocked_for(w)`` the layers whose window is ``w`` (Gemma 3's sliding
    layers); layers sharing a window share one mask per forward. Returns the hooks in layer order. Example::

        layout = TokenLayout.from_prompt([1, 10, 11])
        layout.append_step([12, 13], [0.6, 0.3])
        hooks = windowed_block_hooks(model, lambda window: layout_blocked_fn(layout, "isolated", window=window))
        logits = model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=hooks)
    """
    backend = as_backend(model)
    windows = backend.attention_windows()
    hooks: list[tuple[int, Hook]] = []
    for window in dict.fromkeys(windows):
        layers = [layer for layer, w in enumerate(windows) if w == window]
        hooks += zip(layers, attention_block_hooks(backend, blocked_for(window), layers))
    return [hook for _, hook in sorted(hooks, key=lambda pair: pair[0])]


def isolation_mask_hooks(model: ModelOrBackend, layout: TokenLayout, layers: Iterable[int] | None = None) -> list[Hook]:
    """Isolated TEMPO attention: siblings of one step cannot see each other (each still sees itself).

    Targets ``blocks.L.attn.hook_attn_scores`` (``[batch, head, q, K]``) of ``layers`` (default all),
    writing ``-inf``. Pruned keys are not touched (see :func:`pruned_keys_mask_hooks`); positions are
    not changed (add :func:`tempo_position_hooks`, or use :func:`tempo_hooks`). Example::

        layout = TokenLayout.from_prompt([1, 10, 11])
        layout.append_step([12, 13], [0.6, 0.3])                 # two siblings at logical position 3
        hooks = tempo_position_hooks(model, layout) + isolation_mask_hooks(model, layout)
        logits = model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=hooks)
    """
    return attention_block_hooks(model, layout_blocked_fn(layout, "isolated", apply_pruning=False), layers)


def pruned_keys_mask_hooks(model: ModelOrBackend, layout: TokenLayout, layers: Iterable[int] | None = None) -> list[Hook]:
    """Retroactive pruning: a token pruned after step p is hidden (``-inf``) from every query of a later step.

    Targets ``blocks.L.attn.hook_attn_scores`` (``[batch, head, q, K]``) of ``layers`` (default all);
    the mask is otherwise causal (no isolation, no position change). Example::

        layout = TokenLayout.from_prompt([1, 10])
        for siblings in ([11, 12], [13], [14]):
            layout.append_step(siblings, [0.9 / len(siblings)] * len(siblings))
        layout.prune([3], at_step=1, score=0.2)                   # token 12 (physical 3) is hidden from step 2 on
        logits = model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=pruned_keys_mask_hooks(model, layout))
    """
    return attention_block_hooks(model, layout_blocked_fn(layout, "visible", apply_pruning=True), layers)


def tempo_hooks(
    model: ModelOrBackend, layout: TokenLayout, mode: Mode = "isolated", positions: PositionSource | None = None
) -> list[Hook]:
    """Everything a TEMPO forward needs: shared positions plus one mask hook per layer (isolation + pruning).

    A sliding-window layer's mask also hides keys ``window`` or more physical positions back
    (:meth:`TokenLayout.blocked`, ``docs/definitions.md``), so the window holds whatever the cache keeps.

    Targets the position hooks of :func:`tempo_position_hooks` (``rotary_emb.hook_cos`` / ``hook_sin``,
    ``[batch, q, d_head]``, or ``hook_pos_embed``) and every ``blocks.L.attn.hook_attn_scores``
    (``[batch, head, q, K]``). ``mode`` is ``"isolated"`` or ``"visible"``; ``positions`` overrides the
    layout's logical positions (e.g. unique or fractional ones). The same hooks serve a full forward
    and a cached step (the forward covers the layout's last ``q`` tokens). Example::

        layout = TokenLayout.from_prompt([1, 10, 11])
        layout.append_step([12, 13], [0.6, 0.3])
        logits = model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=tempo_hooks(model, layout, "isolated"))
    """
    backend = as_backend(model)
    position_hooks = tempo_position_hooks(backend, layout if positions is None else positions)
    return position_hooks + windowed_block_hooks(backend, lambda window: layout_blocked_fn(layout, mode, True, window))


# ---- interventions and reading -----------------------------------------------------------------


def fractional_positions(layout: TokenLayout, spacing: float = 1e-3) -> Float[Tensor, " pos"]:
    """Near-identical distinct positions: the r-th sibling of a step sits at ``logical + r * spacing``.

    Returns a float32 ``[n_tokens]`` tensor for :func:`rope_position_hooks` / :func:`tempo_hooks`
    (``positions=``) or :func:`tempo_lens.replay`, which evaluate the rotary embedding there at
    ``rotary_emb.hook_cos`` / ``hook_sin`` (RoPE models only: learned tables refuse fractions).
    Positions are float32 (as the rotary embedding computes them), so far into a long context a small
    spacing can round siblings onto one position; that, or a spacing that reaches the next logical
    position, is refused with the spacing that would work. Example::

        layout = TokenLayout.from_prompt([1, 10, 11])
        layout.append_step([12, 13], [0.6, 0.3])
        positions = fractional_positions(layout, spacing=1e-3)   # [0, 1, 2, 3, 3.001]
        logits = model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=tempo_hooks(model, layout, positions=positions))
    """
    if not spacing > 0:
        raise InvalidInputError(f"spacing must be > 0, got {spacing!r}")
    shared = layout.positions("shared")
    positions = shared.clone()
    for step in range(layout.n_steps):
        r = layout.step_range(step)
        if (len(r) - 1) * spacing >= 1:
            raise InvalidInputError(
                f"step {step} has {len(r)} siblings: spacing {spacing:g} reaches the next logical position; "
                f"use spacing < {1 / (len(r) - 1):g}"
            )
        positions[r.start : r.stop] += torch.arange(len(r), dtype=torch.float32) * spacing
        values = positions[r.start : r.stop]
        if len(r) > 1 and not (bool((values[1:] > values[:-1]).all()) and torch.equal(values.floor(), shared[r.start : r.stop])):
            p = float(shared[r.start])
            ulp = float(torch.nextafter(torch.tensor(p), torch.tensor(float("inf"))) - p)
            raise InvalidInputError(
                f"spacing {spacing:g} is below float32 resolution at position {p:g} (step {step}), so siblings would "
                f"share a position; use spacing >= {2 * ulp:g}"
            )
    return positions


def attention_bias_hooks(
    model: ModelOrBackend,
    key_mask: Callable[[int], Bool[Tensor, " key"]] | Bool[Tensor, " key"],
    bias: float,
    layers: Iterable[int] | None = None,
    heads: Sequence[int] | None = None,
) -> list[Hook]:
    """Add ``bias`` to the pre-softmax scores of chosen keys (e.g. parallel tokens) on chosen layers / heads.

    Targets ``blocks.L.attn.hook_attn_scores`` (``[batch, head, q, K]``) of ``layers`` (default all),
    for ``heads`` (default all); masked entries stay masked. ``key_mask`` is a boolean tensor over
    physical positions (``[n_tokens]``, its first K entries are used) or a callable ``K -> [K]``. Every
    query gets the bias, including a parallel query on its own key. Example::

        layout = TokenLayout.from_prompt([1, 10, 11])
        layout.append_step([12, 13], [0.6, 0.3])
        bias = attention_bias_hooks(model, layout.parallel_tensor(), bias=1.0, layers=[model.cfg.n_layers - 1], heads=[0])
        logits = model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=tempo_hooks(model, layout) + bias)
    """
    if not (isinstance(bias, (int, float)) and bias == float("-inf")):  # -inf hides the keys, as a mask hook does
        try:
            bias = check_finite(bias, "bias")
        except InvalidInputError:
            raise InvalidInputError(f"bias must be a finite number, or -inf to hide the keys; got {bias!r}") from None
    if not callable(key_mask) and not (isinstance(key_mask, Tensor) and key_mask.dtype == torch.bool and key_mask.ndim == 1):
        raise InvalidInputError("key_mask must be a boolean tensor [n_tokens] or a function K -> boolean tensor [K]")
    names = _attn_score_hook_names(model_of(model), layers)
    n_heads = int(model_of(model).cfg.n_heads)
    head_index = slice(None) if heads is None else torch.as_tensor(_check_heads(heads, n_heads), dtype=torch.long)

    def hook_scores(scores: Float[Tensor, "batch head_index query_pos key_pos"], hook: Any = None) -> Tensor:
        k = scores.shape[-1]
        keys = key_mask(k) if callable(key_mask) else key_mask[:k]
        if not isinstance(keys, Tensor) or keys.dtype != torch.bool or tuple(keys.shape) != (k,):
            raise InvalidInputError(
                f"key_mask must give one boolean per key: [{k}] for this forward, got "
                f"{tuple(keys.shape) if isinstance(keys, Tensor) else type(keys).__name__}; cover every physical position"
            )
        add = torch.zeros(scores.shape[1], k, dtype=scores.dtype, device=scores.device)
        chosen = keys.to(scores.device, torch.bool)  # masked_fill, not keys * bias: 0 * inf is NaN on the other keys
        add[head_index, :] = torch.zeros(k, dtype=scores.dtype, device=scores.device).masked_fill(chosen, bias)
        masked = scores <= masked_threshold(scores.dtype)
        return torch.where(masked, scores, scores + add[None, :, None, :])

    return [(name, hook_scores) for name in names]


def _check_heads(heads: Sequence[int], n_heads: int) -> list[int]:
    """Head numbers of a model with ``n_heads`` heads (each in ``0..n_heads - 1``), or a clear error."""
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Iterable):
        raise InvalidInputError(f"heads must be a list of head numbers, got {heads!r}")
    chosen = list(heads)
    if not all(hasattr(h, "__index__") and not isinstance(h, bool) for h in chosen):
        raise InvalidInputError(f"heads must be a list of head numbers, got {heads!r}")
    chosen = [int(h) for h in chosen]
    bad = [h for h in chosen if not 0 <= h < n_heads]
    if bad:
        raise InvalidInputError(f"heads {bad} outside 0..{n_heads - 1}; choose heads of this model")
    return chosen


class PatternRecorder:
    """Keeps the attention pattern of the latest forward for chosen layers (``hook_pattern``, ``[batch, head, q, K]``).

    Targets ``blocks.L.attn.hook_pattern`` (post-softmax) of ``layers``; the hook returns the pattern
    unchanged. Generation reads it after every step for capture and pruning; :meth:`take` hands the
    patterns over and clears them. As a context manager it drops what it holds on exit. Example::

        recorder = PatternRecorder(layers=[0, model.cfg.n_layers - 1])
        model.run_with_hooks(torch.tensor([[1, 10, 11, 12]]), fwd_hooks=recorder.hooks())
        patterns = recorder.take()   # {0: [1, n_heads, 4, 4], n_layers - 1: [1, n_heads, 4, 4]}
    """

    def __init__(self, layers: Iterable[int], model: ModelOrBackend | None = None):
        """``layers``: layer numbers; with ``model`` checked by the one layer rule (negative counts from the last),
        without it non-negative integers (a negative layer needs the model to be read)."""
        self.patterns: dict[int, Tensor] = {}
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
            raise InvalidInputError(f"layers must be a list of layer numbers, got {layers!r}")
        layers = list(layers)
        if model is not None:
            self.layers = resolve_layers(layers, int(model_of(model).cfg.n_layers), "layers")
            return
        if not all(hasattr(l, "__index__") and not isinstance(l, bool) and int(l) >= 0 for l in layers):
            raise InvalidInputError(
                f"layers must be layer numbers >= 0, got {layers!r}; for negative layers pass the model: "
                "PatternRecorder(layers, model)"
            )
        self.layers = sorted(set(int(layer) for layer in layers))

    def __enter__(self) -> PatternRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.patterns = {}  # nothing recorded outlives the block

    def hooks(self) -> list[Hook]:
        def make(layer: int) -> Callable[..., Tensor]:
            def hook_pattern(pattern: Float[Tensor, "batch head_index query_pos key_pos"], hook: Any = None) -> Tensor:
                self.patterns[layer] = pattern.detach()
                return pattern

            return hook_pattern

        return [(f"blocks.{layer}.attn.hook_pattern", make(layer)) for layer in self.layers]

    def take(self) -> dict[int, Tensor]:
        patterns, self.patterns = self.patterns, {}
        return patterns
