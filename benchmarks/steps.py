"""Timed steps at a fixed context: plain decodes, TEMPO steps (bridge hooks or the HF way), naive recompute.

A step always works at a fixed context length: the context (C random token ids) is prefilled into a
KV cache once, every timed step appends its token(s) and runs one cached forward, and the step is then
rolled back (cache cropped, layout truncated) outside the timed region, so all repeats of a variant
see exactly the same context. Hooks are entered once per block with ``model.hooks(fwd_hooks=...)``
held open around the timed loop, as generation does.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable

import torch
from jaxtyping import Float
from torch import Tensor

from tempo_lens.backends.bridge.kv_cache import cache_kwarg_name
from tempo_lens.generation import forward_step, new_cache, next_distribution, select_siblings
from tempo_lens.hooks import tempo_hooks
from tempo_lens.layout import TokenLayout

from .harness import PERF, Block

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def device_of(model: "TransformerBridge") -> torch.device:
    return next(model.original_model.parameters()).device


def step_forward(model: "TransformerBridge", ids: list[int], cache: Any) -> Float[Tensor, "pos d_vocab"]:
    """One cached forward of one row of new tokens; returns their logits rows."""
    return forward_step(model, [ids], cache)[0]


class FixedContext:
    """C context tokens prefilled in a KV cache; each timed step appends tokens, then :meth:`rollback`."""

    def __init__(self, model: "TransformerBridge", context: int, mode: str = "isolated", seed: int = 0, hf: Any = None):
        self.model, self.hf, self.mode = model, hf, mode
        self.device = device_of(model)
        vocab = int(model.cfg.d_vocab)
        generator = torch.Generator().manual_seed(seed + context)
        ids = torch.randint(3, vocab, (context,), generator=generator).tolist()
        self.n_base = len(ids)
        self.layout = TokenLayout.from_prompt(ids)
        self.hooks = tempo_hooks(model, self.layout, mode)
        with torch.no_grad():
            self.cache = new_cache(model)
            logits = step_forward(model, ids, self.cache)
            self.distribution = torch.softmax(logits[-1].float(), dim=-1)
            self.hf_cache = None
            if hf is not None:
                from transformers import DynamicCache

                self.hf_cache = DynamicCache(config=hf.config)
                self.hf_cache_kwarg = cache_kwarg_name(hf)
                hf(input_ids=torch.tensor([ids], device=self.device), use_cache=True, **{self.hf_cache_kwarg: self.hf_cache})

    def rollback_layout(self) -> None:
        self.layout.truncate(self.n_base)

    def rollback(self, n_tokens: int, hf: bool = False) -> None:
        (self.hf_cache if hf else self.cache).crop(-n_tokens)
        self.rollback_layout()


def hooks_ctx(model: "TransformerBridge", hooks: list | None):
    return model.hooks(fwd_hooks=hooks) if hooks else contextlib.nullcontext()


def with_context(ctx_factory: Callable[[], Any], block: Block) -> Block:
    """``block`` run inside ``ctx_factory()`` (entered once per block, like the hooks)."""

    def run(n: int) -> list[float]:
        with ctx_factory():
            return block(n)

    return run


class _NoProbe:
    """Stands in for a cProfile.Profile that is switched on around the timed region only."""

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass


NO_PROBE = _NoProbe()


def _decode_block(ctx: FixedContext, forward: Callable[[int], Tensor], hf: bool, probe: Any) -> Block:
    """Ordinary cached decoding: argmax, one-token forward (``forward(token)`` -> last logits), next distribution."""

    def run(n: int) -> list[float]:
        times = []
        with torch.no_grad():
            for _ in range(n):
                probe.enable()
                t0 = PERF()
                token = int(torch.argmax(ctx.distribution))
                torch.softmax(forward(token).float(), dim=-1)
                times.append(PERF() - t0)
                probe.disable()
                ctx.rollback(1, hf=hf)
        return times

    return run


def plain_decode_block(ctx: FixedContext, probe: Any = NO_PROBE) -> Block:
    """Ordinary cached decoding through the bridge, no hooks."""
    return _decode_block(ctx, lambda token: step_forward(ctx.model, [token], ctx.cache)[-1], False, probe)


def _tempo_block(ctx: FixedContext, k: int, forward: Callable[[list[int]], Tensor], hooks: list,
                 after_forward: Callable[[], None] | None, probe: Any, rollback: Callable[[], None]) -> Block:
    """Select k siblings, update the layout, ``forward(ids)`` -> logits, next distribution; then ``rollback``."""

    def run(n: int) -> list[float]:
        times = []
        with torch.no_grad(), hooks_ctx(ctx.model, hooks):
            for _ in range(n):
                probe.enable()
                t0 = PERF()
                ids, probs, _ = select_siblings(ctx.distribution, 0.0, k)   # threshold 0: exactly the top k
                ctx.layout.append_step(ids, probs)
                logits = forward(ids)
                if after_forward is not None:
                    after_forward()
                next_distribution(logits, probs, "mixture")
                times.append(PERF() - t0)
                probe.disable()
                rollback()
        return times

    return run


def tempo_step_block(
    ctx: FixedContext, k: int, hooks_on: bool = True, extra_hooks: list | None = None,
    after_forward: Callable[[], None] | None = None, probe: Any = NO_PROBE,
) -> Block:
    """One TEMPO step: select k siblings, update the layout, one cached forward of all k, next distribution.

    ``hooks_on=False`` runs the identical step without the TEMPO hooks (equal work, physical positions).
    ``after_forward`` runs inside the timed region (capture).
    """
    hooks = (ctx.hooks if hooks_on else []) + (extra_hooks or [])
    return _tempo_block(ctx, k, lambda ids: step_forward(ctx.model, ids, ctx.cache), hooks,
                        after_forward, probe, lambda: ctx.rollback(k))


def naive_tempo_block(ctx: FixedContext, k: int) -> Block:
    """The same TEMPO step without a KV cache: the whole sequence is recomputed (hooks on)."""

    def forward(ids: list[int]) -> Tensor:
        tokens = torch.tensor([ctx.layout.token_ids], dtype=torch.long, device=ctx.device)
        return ctx.model(tokens, use_cache=False)[0][-k:]

    return _tempo_block(ctx, k, forward, ctx.hooks, None, NO_PROBE, ctx.rollback_layout)


def hf_decode_block(ctx: FixedContext, probe: Any = NO_PROBE) -> Block:
    """Raw Hugging Face eager cached decoding on the same weights (the floor for the bridge)."""

    def forward(token: int) -> Tensor:
        out = ctx.hf(input_ids=torch.tensor([[token]], device=ctx.device), use_cache=True, **{ctx.hf_cache_kwarg: ctx.hf_cache})
        return out.logits[0, -1]

    return _decode_block(ctx, forward, True, probe)


def hf_tempo_forward(ctx: FixedContext, ids: list[int]) -> Float[Tensor, "pos d_vocab"]:
    """TEMPO done the HF way: explicit position_ids and a 4D additive mask (the tests' oracle, cached)."""
    k = len(ids)
    positions = ctx.layout.positions("shared")[-k:].long()[None].to(ctx.device)
    mask = ctx.layout.additive_mask(ctx.mode, n_queries=k)[None, None].to(ctx.device)
    out = ctx.hf(input_ids=torch.tensor([ids], device=ctx.device), position_ids=positions, attention_mask=mask,
                 use_cache=True, **{ctx.hf_cache_kwarg: ctx.hf_cache})
    return out.logits[0]


def hf_tempo_block(ctx: FixedContext, k: int) -> Block:
    """The TEMPO step through raw HF eager (no hooks): position_ids and a 4D mask."""
    return _tempo_block(ctx, k, lambda ids: hf_tempo_forward(ctx, ids), [], None, NO_PROBE,
                        lambda: ctx.rollback(k, hf=True))
