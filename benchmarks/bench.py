#!/usr/bin/env python
"""`make bench`: what TEMPO costs when it is done only through TransformerLens hook points.

Every number printed is a *ratio* of two variants measured side by side in this one run:
each variant runs a short block of steps, the variants take turns (their order rotated every
round, so neither always runs first on a machine other jobs share), and the ratio is taken
between medians of per-step times. Nothing here is a timed assertion.

A "step" always works at a fixed context length: the context (C random token ids) is prefilled
into a KV cache once, every timed step appends its token(s) and runs one cached forward, and the
step is then rolled back (cache cropped, layout truncated) outside the timed region, so all
repeats of a variant see exactly the same context. Hooks are entered once per block with
``model.hooks(fwd_hooks=...)`` held open around the timed loop, as generation does.

Sections (the targets of issue 8, goals rather than gates):

1. parallel tokens almost free: TEMPO step with k siblings (hooks on) / plain one-token decode;
   1b: the model's linear layers alone with k rows (what limits 1), 1c: 1 again with oneDNN-prepacked
   linear weights (a opt-in `tempo_lens.cpu_linears`, nothing in the package or TransformerLens is changed)
2. hooks cheap: TEMPO step with hooks on / the same step with hooks off (equal work)
3. linear, not quadratic: cached TEMPO step vs a naive full recompute, contexts 32..1024
4. TransformerLens overhead: bridge cached decode / raw HF eager cached decode, plus a profile
5. capture: pattern capture on all layers / no capture, plus bytes stored per step
6. analysis throughput: every report metric over 100 synthetic steps shaped like the reference

Usage::

    python benchmarks/bench.py [--quick] [--json PATH] [--only 1,2,4]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads on a shared box: 20x slower steps
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tempo_lens.capture import CapturedAttention  # noqa: E402
from tempo_lens.compat import cache_kwarg_name  # noqa: E402
from tempo_lens.cpu_linears import PrepackedLinears, pack_weight, packed_linear  # noqa: E402
from tempo_lens.fast_norms import fast_norms  # noqa: E402
from tempo_lens.generation import forward_step, new_cache, next_distribution, select_siblings  # noqa: E402
from tempo_lens.hooks import PatternRecorder, tempo_hooks  # noqa: E402
from tempo_lens.layout import TokenLayout  # noqa: E402

PERF = time.perf_counter


# ---- configuration ----------------------------------------------------------------------------------

@dataclass
class BenchConfig:
    """How much to measure. ``rounds`` x ``block`` samples per variant; variants alternate every block."""

    context: int = 64                      # context of sections 1, 2, 4 (SPEC 6 measured at 64)
    ks: tuple[int, ...] = (1, 2, 4, 8)     # siblings per TEMPO step
    rounds: int = 21
    block: int = 1
    linear_rounds: int = 12
    scaling_contexts: tuple[int, ...] = (32, 128, 512, 1024)
    scaling_k: int = 2
    scaling_rounds: int = 3
    scaling_block: int = 4
    naive_block: int = 1
    capture_contexts: tuple[int, ...] = (64, 512)
    capture_k: int = 2
    profile_steps: int = 20
    analysis_steps: int = 100
    analysis_shape: tuple[int, int, int] = (28, 24, 8)   # reference model: 28 layers, 24 heads, 8 KV heads
    analysis_repeats: int = 3
    mode: str = "isolated"
    seed: int = 0

    @classmethod
    def quick(cls) -> "BenchConfig":
        return cls(rounds=3, linear_rounds=3, scaling_rounds=1, scaling_block=2, profile_steps=5, analysis_repeats=1)


TARGETS = {
    "parallel": 1.15,   # TEMPO step with k siblings / plain one-token decode
    "hooks": 1.10,      # hooks on / off at equal work
    "capture": 1.20,    # capture all layers / no capture
    "analysis_s": 1.0,  # seconds for every report metric over 100 steps
}


# ---- machine description ----------------------------------------------------------------------------

def _cpu_model() -> str:
    """CPU model name, plus family / model and the AVX-512 flags (VMs often report only "AMD EPYC")."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if ":" in line:
                    key, value = (part.strip() for part in line.split(":", 1))
                    info.setdefault(key, value)
                if not line.strip() and info:
                    break
    except OSError:
        return platform.processor() or platform.machine()
    name = info.get("model name", platform.processor() or platform.machine())
    flags = info.get("flags", "").split()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    extra = f" (family {info['cpu family']} model {info['model']}" if "cpu family" in info and "model" in info else " ("
    return f"{name}{extra}{', ' if extra != ' (' else ''}{' '.join(simd) or 'no avx2'})"


def machine_info() -> dict:
    import transformer_lens
    import transformers

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "transformer_lens": getattr(transformer_lens, "__version__", "4.3.0"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "loadavg_start": [round(x, 2) for x in load],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def model_info(model: Any) -> dict:
    cfg = model.cfg
    n_params = sum(p.numel() for p in model.original_model.parameters())
    name = getattr(model, "tempo_lens_model_name", None) or getattr(cfg, "model_name", "model")
    return {
        "name": str(name), "n_layers": int(cfg.n_layers), "n_heads": int(cfg.n_heads),
        "d_model": int(cfg.d_model), "d_vocab": int(cfg.d_vocab), "params": int(n_params),
        "dtype": str(next(model.original_model.parameters()).dtype).replace("torch.", ""),
    }


# ---- timing machinery -------------------------------------------------------------------------------

Block = Callable[[int], list[float]]   # runs n timed steps, returns their durations in seconds
Samples = dict[str, list[list[float]]]  # variant -> one block of step times per round
Groups = list[Samples]                  # one Samples per group of variants measured side by side


def interleave(variants: dict[str, Block], groups: Sequence[Sequence[str]], rounds: int,
               block: int | dict[str, int] = 1, warmup: int | dict[str, int] = 1) -> Groups:
    """Measure groups of variants side by side: every round runs each group, each variant of it one block.

    A comparison is made inside one group, so the two variants it compares run back to back, seconds
    apart; the order of the groups and of the variants inside each group rotates every round, so no
    variant always runs first (or right after a heavier one). One untimed warm-up step per variant first.
    """
    sizes = block if isinstance(block, dict) else {name: block for name in variants}
    warm = warmup if isinstance(warmup, dict) else {name: warmup for name in variants}
    # One full collection, then freeze the (large, long-lived) heap of torch / transformers objects so the
    # collections that do happen during the blocks stay cheap and do not land on one variant by chance.
    gc.collect()
    gc.freeze()
    try:
        for name in variants:
            if warm.get(name, 1):
                variants[name](warm.get(name, 1))
        out: Groups = [{name: [] for name in group} for group in groups]
        for r in range(rounds):
            for g in _rotated(list(range(len(groups))), r):
                for name in _rotated(list(groups[g]), r):
                    gc.collect(0)
                    out[g][name].append(variants[name](sizes[name]))
    finally:
        gc.unfreeze()
    return out


def _rotated(items: list, r: int) -> list:
    r %= max(1, len(items))
    return items[r:] + items[:r]


def pooled_median(groups: Groups, name: str) -> float:
    """Median step time (seconds) of a variant over every group that measured it."""
    return statistics.median(t for g in groups if name in g for block in g[name] for t in block)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def ratio(groups: Groups, num: str, den: str) -> dict:
    """num / den inside the first group holding both.

    ``ratio``: median of the per-round paired ratios (each the ratio of the two variants' block medians
    in that round, measured seconds apart), robust to load that comes and goes on a shared machine.
    ``q1``-``q3``: quartiles of those paired ratios (min-max under 4 rounds). ``of_medians``: ratio of the
    two medians over all rounds; ``fastest``: ratio of the fastest steps (the least disturbed).
    """
    g = next(g for g in groups if num in g and den in g)
    paired = [statistics.median(a) / statistics.median(b) for a, b in zip(g[num], g[den])]
    num_all = [t for block in g[num] for t in block]
    den_all = [t for block in g[den] for t in block]
    q1, q3 = _quartiles(paired)
    return {
        "ratio": statistics.median(paired),
        "q1": q1,
        "q3": q3,
        "of_medians": statistics.median(num_all) / statistics.median(den_all),
        "fastest": min(num_all) / min(den_all),
        "num_ms": 1e3 * statistics.median(num_all),
        "den_ms": 1e3 * statistics.median(den_all),
        "rounds": len(paired),
    }


def fmt_ratio(r: dict) -> str:
    return f"{r['ratio']:.2f}x  [{r['q1']:.2f}-{r['q3']:.2f}; fastest {r['fastest']:.2f}x]"


# ---- a fixed-context decoding state -----------------------------------------------------------------

def _device(model: Any) -> torch.device:
    return next(model.original_model.parameters()).device


def _truncate_layout(layout: TokenLayout, n: int) -> None:
    """Roll a layout back to its first n tokens (benchmark-only; the package has no 'pop')."""
    for column in ("token_ids", "steps", "logical_positions", "probs", "pruned_at", "prune_scores"):
        del getattr(layout, column)[n:]
    layout.version += 1


class FixedContext:
    """C context tokens prefilled in a KV cache; each timed step appends tokens, then :meth:`rollback`."""

    def __init__(self, model: Any, context: int, mode: str = "isolated", seed: int = 0, hf: Any = None):
        self.model, self.hf, self.mode = model, hf, mode
        self.device = _device(model)
        vocab = int(model.cfg.d_vocab)
        generator = torch.Generator().manual_seed(seed + context)
        ids = torch.randint(3, vocab, (context,), generator=generator).tolist()
        self.n_base = len(ids)
        self.layout = TokenLayout.from_prompt(ids)
        self.hooks = tempo_hooks(model, self.layout, mode)
        with torch.no_grad():
            self.cache = new_cache(model)
            logits = forward_step(model, ids, self.cache, self.device)
            self.distribution = torch.softmax(logits[-1].float(), dim=-1)
            self.hf_cache = None
            if hf is not None:
                from transformers import DynamicCache

                self.hf_cache = DynamicCache(config=hf.config)
                self.hf_cache_kwarg = cache_kwarg_name(hf)
                hf(input_ids=torch.tensor([ids], device=self.device), use_cache=True, **{self.hf_cache_kwarg: self.hf_cache})

    def rollback_layout(self) -> None:
        if len(self.layout) > self.n_base:
            _truncate_layout(self.layout, self.n_base)

    def rollback(self, n_tokens: int, hf: bool = False) -> None:
        (self.hf_cache if hf else self.cache).crop(-n_tokens)
        self.rollback_layout()


def _hooks_ctx(model: Any, hooks: list | None):
    return model.hooks(fwd_hooks=hooks) if hooks else contextlib.nullcontext()


class _NoProbe:
    """Stands in for a cProfile.Profile that is switched on around the timed region only."""

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass


NO_PROBE = _NoProbe()


def _decode_block(ctx: FixedContext, forward: Callable[[int], torch.Tensor], hf: bool, probe: Any) -> Block:
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
    return _decode_block(ctx, lambda token: forward_step(ctx.model, [token], ctx.cache, ctx.device)[-1], False, probe)


def tempo_step_block(
    ctx: FixedContext, k: int, hooks_on: bool = True, extra_hooks: list | None = None,
    after_forward: Callable[[], None] | None = None, probe: Any = NO_PROBE,
) -> Block:
    """One TEMPO step: select k siblings, update the layout, one cached forward of all k, next distribution.

    ``hooks_on=False`` runs the identical step without the TEMPO hooks (equal work, physical positions).
    ``after_forward`` runs inside the timed region (capture).
    """
    hooks = (ctx.hooks if hooks_on else []) + (extra_hooks or [])

    def run(n: int) -> list[float]:
        times = []
        with torch.no_grad(), _hooks_ctx(ctx.model, hooks):
            for _ in range(n):
                probe.enable()
                t0 = PERF()
                ids, probs, _ = select_siblings(ctx.distribution, 0.0, k)   # threshold 0: exactly the top k
                ctx.layout.append_step(ids, probs)
                logits = forward_step(ctx.model, ids, ctx.cache, ctx.device)
                if after_forward is not None:
                    after_forward()
                next_distribution(logits, probs, "mixture")
                times.append(PERF() - t0)
                probe.disable()
                ctx.rollback(k)
        return times

    return run


def naive_tempo_block(ctx: FixedContext, k: int) -> Block:
    """The same TEMPO step without a KV cache: the whole sequence is recomputed (hooks on)."""

    def run(n: int) -> list[float]:
        times = []
        with torch.no_grad(), _hooks_ctx(ctx.model, ctx.hooks):
            for _ in range(n):
                t0 = PERF()
                ids, probs, _ = select_siblings(ctx.distribution, 0.0, k)
                ctx.layout.append_step(ids, probs)
                tokens = torch.tensor([ctx.layout.token_ids], dtype=torch.long, device=ctx.device)
                logits = ctx.model(tokens, use_cache=False)[0][-k:]
                next_distribution(logits, probs, "mixture")
                times.append(PERF() - t0)
                ctx.rollback_layout()
        return times

    return run


def hf_decode_block(ctx: FixedContext, probe: Any = NO_PROBE) -> Block:
    """Raw Hugging Face eager cached decoding on the same weights (the floor for the bridge)."""

    def forward(token: int) -> torch.Tensor:
        out = ctx.hf(input_ids=torch.tensor([[token]], device=ctx.device), use_cache=True, **{ctx.hf_cache_kwarg: ctx.hf_cache})
        return out.logits[0, -1]

    return _decode_block(ctx, forward, True, probe)


def _hf_tempo_forward(ctx: FixedContext, ids: list[int]) -> torch.Tensor:
    """TEMPO done the HF way: explicit position_ids and a 4D additive mask (the tests' oracle, cached)."""
    k = len(ids)
    positions = ctx.layout.positions("shared")[-k:].long()[None].to(ctx.device)
    mask = ctx.layout.additive_mask(ctx.mode, n_queries=k)[None, None].to(ctx.device)
    out = ctx.hf(input_ids=torch.tensor([ids], device=ctx.device), position_ids=positions, attention_mask=mask,
                 use_cache=True, **{ctx.hf_cache_kwarg: ctx.hf_cache})
    return out.logits[0]


def hf_tempo_block(ctx: FixedContext, k: int) -> Block:
    def run(n: int) -> list[float]:
        times = []
        with torch.no_grad():
            for _ in range(n):
                t0 = PERF()
                ids, probs, _ = select_siblings(ctx.distribution, 0.0, k)
                ctx.layout.append_step(ids, probs)
                logits = _hf_tempo_forward(ctx, ids)
                next_distribution(logits, probs, "mixture")
                times.append(PERF() - t0)
                ctx.rollback(k, hf=True)
        return times

    return run


# ---- sections ---------------------------------------------------------------------------------------

def bench_parallel(model: Any, cfg: BenchConfig) -> dict:
    """Targets 1 and 2: TEMPO step with k siblings vs plain decode, and hooks on vs off at equal work."""
    ctx = FixedContext(model, cfg.context, cfg.mode, cfg.seed)
    variants: dict[str, Block] = {"decode_1": plain_decode_block(ctx)}
    for k in cfg.ks:
        variants[f"tempo_{k}"] = tempo_step_block(ctx, k, hooks_on=True)
        variants[f"nohooks_{k}"] = tempo_step_block(ctx, k, hooks_on=False)
    # one group per k: the plain decode, the TEMPO step and the same step without hooks, back to back
    samples = interleave(variants, [("decode_1", f"tempo_{k}", f"nohooks_{k}") for k in cfg.ks], cfg.rounds, cfg.block)
    rows = []
    for k in cfg.ks:
        rows.append({
            "k": k,
            "tempo_ms": 1e3 * pooled_median(samples, f"tempo_{k}"),
            "nohooks_ms": 1e3 * pooled_median(samples, f"nohooks_{k}"),
            "vs_decode": ratio(samples, f"tempo_{k}", "decode_1"),          # target 1
            "hooks_on_off": ratio(samples, f"tempo_{k}", f"nohooks_{k}"),   # target 2
            "width_only": ratio(samples, f"nohooks_{k}", "decode_1"),        # k tokens vs 1, no hooks: the matmul part
        })
    return {"context": cfg.context, "decode_ms": 1e3 * pooled_median(samples, "decode_1"), "rows": rows, "samples": samples}


def _linear_weights(model: Any) -> list[torch.Tensor]:
    """Every nn.Linear weight one forward uses (lm_head included), each once."""
    seen, weights = set(), []
    for module in model.original_model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            weights.append(module.weight.detach())
    return weights


def bench_linear(model: Any, cfg: BenchConfig) -> dict:
    """What limits target 1: one forward's linear layers alone (the model's own weights), k rows vs 1 row.

    ``rowmajor`` is what the model runs (``F.linear`` on ``[out, in]`` weights); ``colmajor`` multiplies by a
    contiguous ``[in, out]`` copy, the alternative weight layout SPEC 6 mentions; ``onednn`` runs oneDNN
    with prepacked weights (``torch.ops.mkldnn._linear_pointwise``, dense in and out, what torch.compile's
    CPU weight freezing uses), where this torch build has it.
    """
    weights = _linear_weights(model)
    transposed = [w.t().contiguous() for w in weights]
    onednn = _onednn_linears(weights)
    generator = torch.Generator().manual_seed(cfg.seed)
    variants: dict[str, Block] = {}

    def make(xs: list[torch.Tensor], layout: str) -> Block:
        def run(n: int) -> list[float]:
            times = []
            with torch.no_grad():
                for _ in range(n):
                    t0 = PERF()
                    if layout == "colmajor":
                        for x, w in zip(xs, transposed):
                            torch.matmul(x, w)
                    elif layout == "onednn":
                        for x, w in zip(xs, onednn):
                            packed_linear(x, w)
                    else:
                        for x, w in zip(xs, weights):
                            torch.nn.functional.linear(x, w)
                    times.append(PERF() - t0)
            return times

        return run

    layouts = ("rowmajor", "colmajor") + (("onednn",) if onednn else ())
    for k in cfg.ks:
        xs = [torch.randn(k, w.shape[1], generator=generator).to(w.device, w.dtype) for w in weights]
        for layout in layouts:
            variants[f"{layout}_{k}"] = make(xs, layout)
    base = f"rowmajor_{cfg.ks[0]}"
    groups = [tuple(dict.fromkeys((base, *(f"{layout}_{k}" for layout in layouts)))) for k in cfg.ks]
    samples = interleave(variants, groups, cfg.linear_rounds, 1)
    rows = []
    for k in cfg.ks:
        row = {"k": k}
        for layout in layouts:
            row[f"{layout}_ms"] = 1e3 * pooled_median(samples, f"{layout}_{k}")
            row[f"{layout}_vs_rowmajor_1"] = ratio(samples, f"{layout}_{k}", base)
        rows.append(row)
    n_params = sum(w.numel() for w in weights)
    del transposed, onednn
    return {"n_linear": len(weights), "weight_mb": 4 * n_params / 2**20, "layouts": list(layouts), "rows": rows,
            "samples": samples}


def _onednn_linears(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    packed = [pack_weight(w) for w in weights]
    return [] if any(p is None for p in packed) else packed


def _with(ctx_factory: Callable[[], Any], block: Block) -> Block:
    def run(n: int) -> list[float]:
        with ctx_factory():
            return block(n)

    return run


def bench_prepacked(model: Any, cfg: BenchConfig) -> dict:
    """Target 1 again with oneDNN-prepacked linear weights (opt-in tempo_lens.cpu_linears): does the k-row penalty go away?"""
    fast = PrepackedLinears(model)
    if not fast.available:
        return {"skipped": "oneDNN prepacked linears unavailable (torch.ops.mkldnn._linear_pointwise, CPU fp32 only)"}
    ctx = FixedContext(model, cfg.context, cfg.mode, cfg.seed)
    k_max = max(cfg.ks)
    with torch.no_grad():   # same logits? one TEMPO step both ways
        ids, probs, _ = select_siblings(ctx.distribution, 0.0, k_max)
        ctx.layout.append_step(ids, probs)
        with _hooks_ctx(model, ctx.hooks):
            stock = forward_step(model, ids, ctx.cache, ctx.device)
            ctx.cache.crop(-k_max)
            with fast.active():
                packed = forward_step(model, ids, ctx.cache, ctx.device)
            ctx.rollback(k_max)
    parity = float((stock - packed).abs().max())
    variants: dict[str, Block] = {
        "decode_1": plain_decode_block(ctx),
        "fast_decode_1": _with(fast.active, plain_decode_block(ctx)),
    }
    for k in cfg.ks:
        variants[f"fast_tempo_{k}"] = _with(fast.active, tempo_step_block(ctx, k))
    groups = [("decode_1", "fast_decode_1", f"fast_tempo_{k}") for k in cfg.ks]
    samples = interleave(variants, groups, cfg.linear_rounds, 1)
    rows = [{
        "k": k,
        "fast_tempo_ms": 1e3 * pooled_median(samples, f"fast_tempo_{k}"),
        "vs_fast_decode": ratio(samples, f"fast_tempo_{k}", "fast_decode_1"),
        "vs_stock_decode": ratio(samples, f"fast_tempo_{k}", "decode_1"),
    } for k in cfg.ks]
    return {
        "context": cfg.context, "parity_max_abs_logit_diff": parity, "rows": rows,
        "decode_ms": 1e3 * pooled_median(samples, "decode_1"), "fast_decode_ms": 1e3 * pooled_median(samples, "fast_decode_1"),
        "fast_decode_vs_stock": ratio(samples, "fast_decode_1", "decode_1"), "samples": samples,
    }


def _loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


def bench_scaling(model: Any, cfg: BenchConfig) -> dict:
    """Target 3: cached TEMPO step vs naive full recompute at growing context."""
    k = cfg.scaling_k
    contexts = [c for c in cfg.scaling_contexts if c + k <= int(model.cfg.n_ctx)]
    ctxs = {c: FixedContext(model, c, cfg.mode, cfg.seed) for c in contexts}
    cached: dict[str, Block] = {}
    naive: dict[str, Block] = {}
    for c in contexts:
        cached[f"cached_{c}"] = tempo_step_block(ctxs[c], k)
        naive[f"naive_{c}"] = naive_tempo_block(ctxs[c], k)
    # one group per context; the naive blocks are shorter (one full recompute at 1024 costs seconds)
    variants = {**cached, **naive}
    sizes = {**{n: cfg.scaling_block for n in cached}, **{n: cfg.naive_block for n in naive}}
    warm = {name: (0 if name.startswith("naive_") and name != f"naive_{contexts[0]}" else 1) for name in variants}
    samples = interleave(variants, [(f"cached_{c}", f"naive_{c}") for c in contexts], cfg.scaling_rounds, sizes, warm)
    rows = []
    for c in contexts:
        rows.append({
            "context": c,
            "cached_ms": 1e3 * pooled_median(samples, f"cached_{c}"),
            "naive_ms": 1e3 * pooled_median(samples, f"naive_{c}"),
            "naive_over_cached": ratio(samples, f"naive_{c}", f"cached_{c}"),
        })
    slope_cached = _loglog_slope(contexts, [r["cached_ms"] for r in rows]) if len(rows) > 1 else float("nan")
    slope_naive = _loglog_slope(contexts, [r["naive_ms"] for r in rows]) if len(rows) > 1 else float("nan")
    return {"k": k, "rows": rows, "slope_cached": slope_cached, "slope_naive": slope_naive, "samples": samples}


def bench_hf(model: Any, hf: Any, cfg: BenchConfig) -> dict:
    """Target 4: the bridge's cached decode step vs raw HF eager on the same weights (and TEMPO both ways)."""
    ctx = FixedContext(model, cfg.context, cfg.mode, cfg.seed, hf=hf)
    k = max(cfg.ks)
    parity = _parity_bridge_vs_hf(ctx, k)
    variants = {
        "hf_decode_1": hf_decode_block(ctx),
        "bridge_decode_1": plain_decode_block(ctx),
        "bridge_fast_norms_decode_1": _with(lambda: fast_norms(model), plain_decode_block(ctx)),
        "bridge_tempo_1": tempo_step_block(ctx, 1),
        f"hf_tempo_{k}": hf_tempo_block(ctx, k),
        f"bridge_tempo_{k}": tempo_step_block(ctx, k),
    }
    groups = [("hf_decode_1", "bridge_decode_1", "bridge_fast_norms_decode_1", "bridge_tempo_1"), (f"hf_tempo_{k}", f"bridge_tempo_{k}")]
    samples = interleave(variants, groups, cfg.rounds, cfg.block)
    return {
        "context": cfg.context,
        "k": k,
        "bridge_over_hf": ratio(samples, "bridge_decode_1", "hf_decode_1"),
        "bridge_fast_norms_over_hf": ratio(samples, "bridge_fast_norms_decode_1", "hf_decode_1"),
        "bridge_tempo1_over_hf": ratio(samples, "bridge_tempo_1", "hf_decode_1"),
        "tempo_k_bridge_over_hf": ratio(samples, f"bridge_tempo_{k}", f"hf_tempo_{k}"),
        "parity_max_abs_logit_diff": parity,
        "medians_ms": {name: 1e3 * pooled_median(samples, name) for name in variants},
        "samples": samples,
    }


def _parity_bridge_vs_hf(ctx: FixedContext, k: int) -> float:
    """The HF-way TEMPO step and the bridge's hook-way step compute the same thing (max |delta logit|)."""
    with torch.no_grad():
        ids, probs, _ = select_siblings(ctx.distribution, 0.0, k)
        ctx.layout.append_step(ids, probs)
        with _hooks_ctx(ctx.model, ctx.hooks):
            bridge = forward_step(ctx.model, ids, ctx.cache, ctx.device)
        hf = _hf_tempo_forward(ctx, ids)
        ctx.cache.crop(-k)
        ctx.rollback(k, hf=True)
    return float((bridge.float() - hf.float()).abs().max())


# profile attribution: where the per-step time goes, by source of the frame
_BUCKETS = (
    ("torch ops (tensor work)", lambda f, n: f == "~" and ("torch" in n or "Tensor" in n)),
    ("transformer_lens wrappers", lambda f, n: "transformer_lens" in f),
    ("accelerate hooks (align_module_device)", lambda f, n: "accelerate" in f),
    ("inspect (signature per call)", lambda f, n: f.endswith("inspect.py")),
    ("torch.nn Module dispatch", lambda f, n: "torch/nn/modules/module.py" in f),
    ("transformers model code", lambda f, n: "transformers" in f),
)

# known causes (SPEC 6), matched on "file:function"; cumulative time per step
_KNOWN = (
    ("RMSNorm bridge forward (hook_scale/hook_normalized stats)", "normalization.py", "_hf_autograd_forward_with_hooks"),
    ("accelerate align_module_device per component call", "accelerate/utils/modeling.py", "align_module_device"),
    ("inspect.signature (block kwargs filter)", "inspect.py", "signature"),
    ("bridge block _filter_kwargs_for_forward", "block.py", "_filter_kwargs_for_forward"),
    ("bridge component __getattr__", "generalized_components/base.py", "__getattr__"),
    ("HookPoint.forward (identity, nothing attached)", "hook_points.py", "forward"),
    ("TEMPO hook functions (tempo_lens.hooks)", "tempo_lens/hooks.py", "*"),
)


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _stats_summary(stats: pstats.Stats, n: int, top: int = 12) -> dict:
    entries = stats.stats  # (file, line, func) -> (cc, nc, tt, ct, callers)
    buckets = {name: 0.0 for name, _ in _BUCKETS}
    buckets["other Python (builtins, contextlib, ...)"] = 0.0
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in entries.items():
        for name, match in _BUCKETS:
            if match(filename, func):
                buckets[name] += tt
                break
        else:
            buckets["other Python (builtins, contextlib, ...)"] += tt
    known = {}
    for label, file_part, func_name in _KNOWN:
        if func_name == "*":   # a whole file: its own time
            tot = [tt for (f, _l, fn), (_cc, _nc, tt, _ct, _c) in entries.items() if file_part in f]
        else:                  # one function: cumulative
            tot = [ct for (f, _l, fn), (_cc, _nc, _tt, ct, _c) in entries.items() if file_part in f and fn == func_name]
        known[label] = 1e3 * sum(tot) / n

    def listing(key: int) -> list[dict]:
        rows = sorted(entries.items(), key=lambda kv: kv[1][key], reverse=True)[:top]
        return [{
            "function": f"{_short(f)}:{line}({fn})" if f != "~" else fn,
            "calls_per_step": nc / n, "tottime_ms_per_step": 1e3 * tt / n, "cumtime_ms_per_step": 1e3 * ct / n,
        } for (f, line, fn), (_cc, nc, tt, ct, _callers) in rows]

    ops = {fn: (nc / n, 1e3 * tt / n) for (f, _l, fn), (_cc, nc, tt, _ct, _c) in entries.items()
           if f == "~" and ("torch" in fn or "Tensor" in fn)}
    return {
        "tensor_ops": ops,
        "calls_per_step": stats.total_calls / n,
        "profiled_ms_per_step": 1e3 * stats.total_tt / n,
        "buckets_ms_per_step": {k: 1e3 * v / n for k, v in buckets.items()},
        "known_causes_ms_per_step": known,
        "top_tottime": listing(2),
        "top_cumtime": listing(3),
    }


def profile_overhead(model: Any, hf: Any, cfg: BenchConfig) -> dict:
    """cProfile of the cached decode step: bridge, raw HF eager, bridge + TEMPO hooks (k=1).

    The three take turns step by step and each profiler is on only around its timed region (hook entry,
    rollback and the other variants stay out). Profiling inflates Python-heavy code: use it for
    attribution, the timings above for ratios.
    """
    ctx = FixedContext(model, cfg.context, cfg.mode, cfg.seed, hf=hf)
    n = cfg.profile_steps
    profilers = {name: cProfile.Profile() for name in ("bridge", "hf", "bridge_tempo_1")}
    blocks = {
        "bridge": plain_decode_block(ctx, probe=profilers["bridge"]),
        "hf": hf_decode_block(ctx, probe=profilers["hf"]),
        "bridge_tempo_1": tempo_step_block(ctx, 1, probe=profilers["bridge_tempo_1"]),
    }
    warm = {"bridge": plain_decode_block(ctx), "hf": hf_decode_block(ctx), "bridge_tempo_1": tempo_step_block(ctx, 1)}
    for fn in warm.values():
        fn(2)
    # one block per variant per round, hooks entered once per block; rounds alternate the variants
    per_block = max(1, n // 4)
    done = 0
    r = 0
    while done < n:
        m = min(per_block, n - done)
        for name in _rotated(list(blocks), r):
            blocks[name](m)
        done += m
        r += 1
    stats = {name: pstats.Stats(p) for name, p in profilers.items()}
    bridge = _stats_summary(stats["bridge"], n)
    raw = _stats_summary(stats["hf"], n)
    tempo = _stats_summary(stats["bridge_tempo_1"], n, top=0)
    keep = ("calls_per_step", "profiled_ms_per_step", "buckets_ms_per_step", "known_causes_ms_per_step")
    return {"steps": n, "bridge": bridge, "hf": raw, "bridge_tempo_1": {k: tempo[k] for k in keep}}


def bench_capture(model: Any, cfg: BenchConfig) -> dict:
    """Target 5: PatternRecorder on all layers + CapturedAttention.record every step vs the same step without."""
    n_layers = int(model.cfg.n_layers)
    k = cfg.capture_k
    rows = []
    variants: dict[str, Block] = {}
    bytes_seen: dict[int, int] = {}
    for c in cfg.capture_contexts:
        if c + k > int(model.cfg.n_ctx):
            continue
        ctx = FixedContext(model, c, cfg.mode, cfg.seed)
        recorder = PatternRecorder(range(n_layers))
        captured = CapturedAttention(list(range(n_layers)))
        counter = {"step": 0}

        def after(recorder=recorder, captured=captured, counter=counter, c=c) -> None:
            captured.record(counter["step"], recorder.take())
            bytes_seen[c] = int(captured.steps[counter["step"]].nbytes)
            captured.steps.pop(counter["step"] - 1, None)  # keep memory flat; the newest array stays alive
            counter["step"] += 1

        variants[f"nocapture_{c}"] = tempo_step_block(ctx, k)
        variants[f"capture_{c}"] = tempo_step_block(ctx, k, extra_hooks=recorder.hooks(), after_forward=after)
    contexts = [c for c in cfg.capture_contexts if f"capture_{c}" in variants]
    samples = interleave(variants, [(f"nocapture_{c}", f"capture_{c}") for c in contexts], cfg.rounds, cfg.block)
    for c in contexts:
        rows.append({
            "context": c, "k": k,
            "capture_over_none": ratio(samples, f"capture_{c}", f"nocapture_{c}"),
            "bytes_per_step": bytes_seen.get(c, 0),
            "shape": [n_layers, 1, int(model.cfg.n_heads), k, c + k],
        })
    return {"rows": rows, "samples": samples}


# ---- section 6: analysis throughput -----------------------------------------------------------------

ANALYSIS_FUNCTIONS = ("parallel_ratio", "intra_step_attention", "layer_entropy", "layer_entropy_table", "head_specialisation")


def synthetic_run(n_steps: int, n_layers: int, n_heads: int, mode: str = "isolated", seed: int = 0,
                  prompt_len: int = 6) -> tuple[TokenLayout, dict[int, np.ndarray]]:
    """A layout of n_steps (1-3 siblings) and per-step attention ``[layers, 1, heads, q, K]`` that respects its mask."""
    rng = np.random.default_rng(seed)
    layout = TokenLayout.from_prompt(list(range(10, 10 + prompt_len)))
    attention: dict[int, np.ndarray] = {}
    for step in range(n_steps):
        k = int(rng.choice([1, 1, 2, 3]))
        layout.append_step(list(range(100 + 3 * step, 100 + 3 * step + k)), sorted(rng.random(k).tolist(), reverse=True))
        blocked = layout.blocked(mode, n_queries=k).numpy()
        scores = rng.standard_normal((n_layers, 1, n_heads, k, len(layout))).astype(np.float32)
        scores[..., blocked] = -np.inf
        scores -= scores.max(-1, keepdims=True)
        weights = np.exp(scores)
        attention[step] = (weights / weights.sum(-1, keepdims=True)).astype(np.float32)
    return layout, attention


def _per_step_calls(analysis: Any, layout: TokenLayout, layers: list[int], n_layers: int, mode: str,
                    n_kv_heads: int) -> dict[str, Callable[[int, np.ndarray], Any]]:
    """Every metric the report and its figures compute for *every* step (the five of issue 8 first)."""
    import inspect

    kv = {"n_kv_heads": n_kv_heads} if "n_kv_heads" in inspect.signature(analysis.head_specialisation).parameters else {}
    calls: dict[str, Callable[[int, np.ndarray], Any]] = {
        "parallel_ratio": lambda step, att: analysis.parallel_ratio(att, layout, step),
        "parallel_ratio(exclude_first)": lambda step, att: analysis.parallel_ratio(att, layout, step, exclude_first=True),
        "intra_step_attention": lambda step, att: analysis.intra_step_attention(att, layout, step),
        "layer_entropy": lambda step, att: analysis.layer_entropy(att),
        "layer_entropy_table": lambda step, att: analysis.layer_entropy_table(att, layers, n_layers=n_layers),
        "head_specialisation": lambda step, att: analysis.head_specialisation(att, layout, step, mode, **kv),
    }
    extras = {
        "ratio_by_layer": lambda step, att: analysis.ratio_by_layer(att, layout, step, layers=layers),
        "ratio_by_head": lambda step, att: analysis.ratio_by_head(att, layout, step),
    }
    calls.update({name: fn for name, fn in extras.items() if hasattr(analysis, name)})
    return calls


def _report_level_calls(analysis: Any, run: Any, layers: list[int], n_layers: int, mode: str,
                        n_kv_heads: int) -> dict[str, Callable[[], Any]]:
    """Run-level tables (they loop over the steps themselves) and the step-1 summaries the report prints."""
    import inspect

    kv = {"n_kv_heads": n_kv_heads} if "n_kv_heads" in inspect.signature(analysis.head_specialisation).parameters else {}
    step = 1 if 1 in run.attention else min(run.attention)
    wanted = {
        "ratio_table": lambda: analysis.ratio_table([run]),
        "ratio_table(exclude_first)": lambda: analysis.ratio_table([run], exclude_first=True),
        "mode_averages": lambda: analysis.mode_averages(analysis.ratio_table([run])),
        "intra_step_table": lambda: analysis.intra_step_table([run]),
        "entropy_by_step": lambda: analysis.entropy_by_step(run),
        "depth_pattern": lambda: analysis.depth_pattern(analysis.layer_entropy_table(run.attention[step], layers, n_layers=n_layers)),
        "heads_by_kv_group": lambda: analysis.heads_by_kv_group(analysis.head_specialisation(run.attention[step], run.layout, step, mode, **kv)),
    }
    return {name: fn for name, fn in wanted.items() if hasattr(analysis, name.split("(")[0])}


def bench_analysis(cfg: BenchConfig) -> dict:
    """Target 6: every report metric over ``analysis_steps`` synthetic steps; bootstrap / permutation tests excluded."""
    try:
        import tempo_lens.analysis as analysis
    except Exception as exc:  # noqa: BLE001  (not written yet, or broken)
        return {"skipped": f"tempo_lens.analysis not available ({type(exc).__name__}: {exc})"}
    missing = [name for name in ANALYSIS_FUNCTIONS if not hasattr(analysis, name)]
    if missing:
        return {"skipped": f"tempo_lens.analysis not available (missing {', '.join(missing)})"}
    from tempo_lens.capture import CapturedRun

    n_layers, n_heads, n_kv_heads = cfg.analysis_shape
    layout, attention = synthetic_run(cfg.analysis_steps, n_layers, n_heads, cfg.mode, cfg.seed)
    layers = list(range(n_layers))
    run = CapturedRun(name="synthetic", prompt="", mode=cfg.mode, layout=layout,
                      token_strings=[f"<{t}>" for t in layout.token_ids], layers=layers, attention=attention)
    per_step = _per_step_calls(analysis, layout, layers, n_layers, cfg.mode, n_kv_heads)
    run_level = _report_level_calls(analysis, run, layers, n_layers, cfg.mode, n_kv_heads)
    failed: dict[str, str] = {}
    first_step, first_att = next(iter(attention.items()))
    for name, fn in list(per_step.items()):   # an extra that raises is reported, not timed
        try:
            fn(first_step, first_att)
        except Exception as exc:  # noqa: BLE001
            if name in ("parallel_ratio", "intra_step_attention", "layer_entropy", "layer_entropy_table", "head_specialisation"):
                raise
            failed[name] = f"{type(exc).__name__}: {exc}"
            per_step.pop(name)
    for name, fn in list(run_level.items()):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            failed[name] = f"{type(exc).__name__}: {exc}"
            run_level.pop(name)

    per_step_s, run_level_s = [], []
    by_metric = {name: 0.0 for name in [*per_step, *run_level]}
    for _ in range(max(1, cfg.analysis_repeats)):
        gc.collect(0)
        t_all = PERF()
        for name, fn in per_step.items():
            t0 = PERF()
            for step, att in attention.items():
                fn(step, att)
            by_metric[name] += PERF() - t0
        t_mid = PERF()
        for name, fn in run_level.items():
            t0 = PERF()
            fn()
            by_metric[name] += PERF() - t0
        t_end = PERF()
        per_step_s.append(t_mid - t_all)
        run_level_s.append(t_end - t_mid)
    repeats = max(1, cfg.analysis_repeats)
    seconds = statistics.median(p + r for p, r in zip(per_step_s, run_level_s))
    return {
        "steps": cfg.analysis_steps, "shape": f"[{n_layers}, 1, {n_heads}, q, K]", "n_kv_heads": n_kv_heads,
        "per_step_metrics": list(per_step), "report_level": list(run_level), "not_timed": failed,
        "per_step_s": statistics.median(per_step_s), "report_level_s": statistics.median(run_level_s),
        "seconds": seconds, "budget_s": TARGETS["analysis_s"],
        "by_metric_s": {k: v / repeats for k, v in by_metric.items()},
        "times": [p + r for p, r in zip(per_step_s, run_level_s)],
    }


# ---- running and printing ---------------------------------------------------------------------------

SECTIONS = (1, 2, 3, 4, 5, 6)


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_all(model: Any, hf: Any, cfg: BenchConfig, sections: Sequence[int] = SECTIONS, log: Callable[[str], None] = print) -> dict:
    """Run the chosen sections; returns every number (the printable report is built from this)."""
    results: dict[str, Any] = {"config": asdict(cfg), "model": model_info(model) if model is not None else None, "sections": {}}
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], dict]) -> None:
        log(f"... {name}")
        t0 = PERF()
        out = fn()
        out["wall_s"] = PERF() - t0
        out["loadavg_after"] = _loadavg()
        results["sections"][name] = out
        timings[name] = out["wall_s"]

    if 1 in sections or 2 in sections:
        timed("parallel", lambda: bench_parallel(model, cfg))
    if 1 in sections:
        timed("linear", lambda: bench_linear(model, cfg))
        timed("prepacked", lambda: bench_prepacked(model, cfg))
    if 3 in sections:
        timed("scaling", lambda: bench_scaling(model, cfg))
    if 4 in sections and hf is not None:
        timed("hf", lambda: bench_hf(model, hf, cfg))
        timed("profile", lambda: profile_overhead(model, hf, cfg))
    if 5 in sections:
        timed("capture", lambda: bench_capture(model, cfg))
    if 6 in sections:
        timed("analysis", lambda: bench_analysis(cfg))
    results["summary"] = summarize(results)
    return results


def summarize(results: dict) -> list[dict]:
    """One row per target: goal, measured value, met."""
    s = results["sections"]
    rows = []
    if "parallel" in s:
        for row in s["parallel"]["rows"]:
            r = row["vs_decode"]["ratio"]
            rows.append({"target": f"1 parallel: TEMPO k={row['k']} / 1-token decode", "goal": f"<= {TARGETS['parallel']:.2f}x",
                         "measured": f"{r:.2f}x", "value": r, "met": r <= TARGETS["parallel"]})
    if "prepacked" in s and "skipped" not in s["prepacked"]:
        for row in s["prepacked"]["rows"]:
            r = row["vs_fast_decode"]["ratio"]
            rows.append({"target": f"1c parallel, oneDNN-prepacked linears (opt-in tempo_lens.cpu_linears): k={row['k']}", "goal": f"<= {TARGETS['parallel']:.2f}x",
                         "measured": f"{r:.2f}x", "value": r, "met": r <= TARGETS["parallel"]})
    if "parallel" in s:
        for row in s["parallel"]["rows"]:
            r = row["hooks_on_off"]["ratio"]
            rows.append({"target": f"2 hooks: on / off, k={row['k']}", "goal": f"<= {TARGETS['hooks']:.2f}x",
                         "measured": f"{r:.2f}x", "value": r, "met": r <= TARGETS["hooks"]})
    if "scaling" in s and s["scaling"]["rows"]:
        sc = s["scaling"]
        last = sc["rows"][-1]
        ok = sc["slope_cached"] <= 1.0 and last["naive_over_cached"]["ratio"] > 1.0
        rows.append({"target": f"3 linear: cached step growth {sc['rows'][0]['context']}->{last['context']} (log-log slope)",
                     "goal": "slope <= 1, below naive", "value": sc["slope_cached"],
                     "measured": f"{sc['slope_cached']:.2f} (naive {sc['slope_naive']:.2f}); naive/cached @{last['context']} = "
                                 f"{last['naive_over_cached']['ratio']:.1f}x",
                     "met": ok})
    if "hf" in s:
        r = s["hf"]["bridge_over_hf"]["ratio"]
        rows.append({"target": "4 TL overhead: bridge decode / HF eager decode", "goal": "report (SPEC 6: ~1.6x)",
                     "measured": f"{r:.2f}x", "value": r, "met": None})
        r = s["hf"]["bridge_fast_norms_over_hf"]["ratio"]
        rows.append({"target": "4b the same with opt-in tempo_lens.fast_norms", "goal": "report",
                     "measured": f"{r:.2f}x", "value": r, "met": None})
    if "capture" in s:
        for row in s["capture"]["rows"]:
            r = row["capture_over_none"]["ratio"]
            rows.append({"target": f"5 capture all layers / none, ctx {row['context']}", "goal": f"<= {TARGETS['capture']:.2f}x",
                         "measured": f"{r:.2f}x ({row['bytes_per_step'] / 1024:.0f} KiB/step)", "value": r,
                         "met": r <= TARGETS["capture"]})
    if "analysis" in s:
        a = s["analysis"]
        if "skipped" in a:
            rows.append({"target": "6 analysis: all metrics, 100 steps", "goal": "< 1 s", "measured": "skipped",
                         "value": None, "met": None})
        else:
            rows.append({"target": f"6 analysis: all metrics, {a['steps']} steps", "goal": "< 1 s",
                         "measured": f"{a['seconds']:.3f} s", "value": a["seconds"], "met": a["seconds"] < TARGETS["analysis_s"]})
    return rows


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(results: dict) -> str:
    out: list[str] = []
    m, info = results.get("machine", {}), results["model"]
    if m:
        out.append(f"machine : {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), torch {m['torch']} "
                   f"({m['torch_threads']} threads), transformers {m['transformers']}, transformer_lens {m['transformer_lens']}, "
                   f"python {m['python']}, OMP_WAIT_POLICY={m['omp_wait_policy']}, load avg at start {m['loadavg_start']}")
    if info:
        out.append(f"model   : {info['name']} ({info['n_layers']} layers, {info['n_heads']} heads, d_model {info['d_model']}, "
                   f"{info['params'] / 1e6:.0f}M params, {info['dtype']}), mode {results['config']['mode']}")
    out.append("timing  : each ratio compares two variants run back to back, round after round (order rotated); shown as "
               "median of the per-round paired ratios [quartiles; 'fastest' = ratio of the fastest steps, the least "
               "disturbed by other load]")
    s = results["sections"]

    if "parallel" in s:
        p = s["parallel"]
        out.append(f"\n[1+2] TEMPO step vs plain decode, context {p['context']}  (plain cached 1-token decode: {p['decode_ms']:.1f} ms)")
        out.append(_table(
            ["k", "TEMPO ms", "hooks-off ms", "1: TEMPO / decode", "2: hooks on / off", "k tokens / 1 token (no hooks)"],
            [[r["k"], f"{r['tempo_ms']:.1f}", f"{r['nohooks_ms']:.1f}", fmt_ratio(r["vs_decode"]), fmt_ratio(r["hooks_on_off"]),
              f"{r['width_only']['ratio']:.2f}x"] for r in p["rows"]]))
    if "linear" in s:
        li = s["linear"]
        out.append(f"\n[1b] what limits target 1: the forward's {li['n_linear']} linear layers alone ({li['weight_mb']:.0f} MB of "
                   "weights), k input rows, each layout vs the model's own layout at 1 row")
        names = {"rowmajor": "row-major (the model's)", "colmajor": "col-major copy", "onednn": "oneDNN prepacked"}
        out.append(_table(["k"] + [f"{names[lay]} ms / ratio" for lay in li["layouts"]],
                          [[r["k"]] + [f"{r[f'{lay}_ms']:.1f} / {r[f'{lay}_vs_rowmajor_1']['ratio']:.2f}x" for lay in li["layouts"]]
                           for r in li["rows"]]))
    if "prepacked" in s:
        pp = s["prepacked"]
        out.append("\n[1c] target 1 with oneDNN-prepacked linear weights (opt-in `tempo_lens.cpu_linears`: instance-level forward "
                   "overrides on the HF nn.Linear modules; TransformerLens untouched, hooks on)")
        if "skipped" in pp:
            out.append(f"skipped: {pp['skipped']}")
        else:
            out.append(f"same logits as the stock forward: max |dlogit| {pp['parity_max_abs_logit_diff']:.1e}; "
                       f"1-token decode {pp['decode_ms']:.1f} ms stock, {pp['fast_decode_ms']:.1f} ms prepacked "
                       f"({fmt_ratio(pp['fast_decode_vs_stock'])})")
            out.append(_table(["k", "TEMPO ms (prepacked)", "TEMPO / prepacked decode", "TEMPO / stock decode"],
                              [[r["k"], f"{r['fast_tempo_ms']:.1f}", fmt_ratio(r["vs_fast_decode"]), fmt_ratio(r["vs_stock_decode"])]
                               for r in pp["rows"]]))
    if "scaling" in s:
        sc = s["scaling"]
        out.append(f"\n[3] per-step cost vs context: cached TEMPO step (k={sc['k']}, hooks on) vs naive full recompute (no KV cache)")
        base_c, base_n = sc["rows"][0]["cached_ms"], sc["rows"][0]["naive_ms"]
        out.append(_table(
            ["context", "cached ms", "cached / first", "naive ms", "naive / first", "naive / cached"],
            [[r["context"], f"{r['cached_ms']:.1f}", f"{r['cached_ms'] / base_c:.2f}x", f"{r['naive_ms']:.1f}",
              f"{r['naive_ms'] / base_n:.2f}x", f"{r['naive_over_cached']['ratio']:.1f}x"] for r in sc["rows"]]))
        out.append(f"log-log slope of per-step cost vs context: cached {sc['slope_cached']:.2f}, naive {sc['slope_naive']:.2f} "
                   "(1 = linear; a whole generation costs the sum over steps)")
    if "hf" in s:
        h = s["hf"]
        med = h["medians_ms"]
        out.append(f"\n[4] TransformerLens overhead, context {h['context']}")
        out.append(_table(["variant", "median ms"], [[k, f"{v:.1f}"] for k, v in med.items()]))
        out.append(f"bridge decode / HF eager decode          : {fmt_ratio(h['bridge_over_hf'])}")
        out.append(f"bridge + fast_norms decode / HF decode   : {fmt_ratio(h['bridge_fast_norms_over_hf'])}")
        out.append(f"bridge TEMPO k=1 / HF eager decode       : {fmt_ratio(h['bridge_tempo1_over_hf'])}")
        out.append(f"TEMPO k={h['k']}: bridge hooks / HF (position_ids + 4D mask): {fmt_ratio(h['tempo_k_bridge_over_hf'])}"
                   f"   (same logits: max |dlogit| {h['parity_max_abs_logit_diff']:.1e})")
    if "profile" in s:
        pr = s["profile"]
        b, r = pr["bridge"], pr["hf"]
        out.append(f"\n[4b] cProfile, cached 1-token decode, {pr['steps']} steps (profiling inflates Python-heavy code; use for attribution)")
        out.append(f"Python function calls per step: bridge {b['calls_per_step']:.0f}, bridge+TEMPO hooks "
                   f"{pr['bridge_tempo_1']['calls_per_step']:.0f}, HF eager {r['calls_per_step']:.0f}")
        tensor_gap = b["buckets_ms_per_step"]["torch ops (tensor work)"] - r["buckets_ms_per_step"]["torch ops (tensor work)"]
        total_gap = b["profiled_ms_per_step"] - r["profiled_ms_per_step"]
        out.append(f"finding: the bridge's profiled step is {total_gap:+.1f} ms over HF's; tensor work differs by {tensor_gap:+.1f} ms, "
                   f"so {total_gap - tensor_gap:+.1f} ms is Python (wrapper calls, {b['calls_per_step'] / r['calls_per_step']:.1f}x as many)")
        names = list(b["buckets_ms_per_step"])
        out.append(_table(["where the time goes (tottime, ms/step)", "bridge", "HF eager", "bridge+TEMPO"],
                          [[n, f"{b['buckets_ms_per_step'][n]:.1f}", f"{r['buckets_ms_per_step'].get(n, 0.0):.1f}",
                            f"{pr['bridge_tempo_1']['buckets_ms_per_step'].get(n, 0.0):.1f}"] for n in names]
                          + [["total (profiled)", f"{b['profiled_ms_per_step']:.1f}", f"{r['profiled_ms_per_step']:.1f}",
                              f"{pr['bridge_tempo_1']['profiled_ms_per_step']:.1f}"]]))
        t = pr["bridge_tempo_1"].get("known_causes_ms_per_step", {})
        out.append(_table(["known cause (SPEC 6), cumulative ms/step", "bridge", "HF eager", "bridge+TEMPO"],
                          [[k, f"{v:.1f}", f"{r['known_causes_ms_per_step'].get(k, 0.0):.1f}", f"{t.get(k, 0.0):.1f}"]
                           for k, v in b["known_causes_ms_per_step"].items()]))
        extra = sorted(((op, c, t, r["tensor_ops"].get(op, (0.0, 0.0))) for op, (c, t) in b["tensor_ops"].items()
                        if c > r["tensor_ops"].get(op, (0.0, 0.0))[0] + 0.5),
                       key=lambda e: e[2] - e[3][1], reverse=True)[:8]
        out.append(_table(["tensor ops the bridge runs more often than HF", "calls/step bridge", "HF", "ms/step bridge", "HF"],
                          [[op[:60], f"{c:.0f}", f"{h[0]:.0f}", f"{t:.2f}", f"{h[1]:.2f}"] for op, c, t, h in extra]))
        for key, label in (("top_cumtime", "cumulative"), ("top_tottime", "tottime")):
            out.append(f"bridge top entries by {label}:")
            out.append(_table(["function", "calls/step", "tottime ms/step", "cumtime ms/step"],
                              [[e["function"][:95], f"{e['calls_per_step']:.0f}", f"{e['tottime_ms_per_step']:.2f}",
                                f"{e['cumtime_ms_per_step']:.2f}"] for e in b[key]]))
    if "capture" in s:
        out.append("\n[5] capture: PatternRecorder on all layers + CapturedAttention.record every step vs no capture (TEMPO hooks on in both)")
        out.append(_table(["context", "k", "capture / none", "bytes stored per step", "array shape"],
                          [[r["context"], r["k"], fmt_ratio(r["capture_over_none"]), f"{r['bytes_per_step']:,}",
                            "x".join(map(str, r["shape"]))] for r in s["capture"]["rows"]]))
        out.append("bytes per step = 4 * layers * heads * k * (context + k): linear in context")
    if "analysis" in s:
        a = s["analysis"]
        out.append(f"\n[6] analysis throughput: every report metric over synthetic attention shaped like the reference "
                   f"model, {a.get('shape', '[28, 1, 24, q, K]')} per step")
        if "skipped" in a:
            out.append(f"skipped: {a['skipped']}")
        else:
            out.append(f"{a['steps']} steps: every-step metrics {a['per_step_s']:.3f} s + run tables and step-1 summaries {a['report_level_s']:.3f} s "
                       f"= {a['seconds']:.3f} s (budget {a['budget_s']:.0f} s; repeats {', '.join(f'{t:.3f}' for t in a['times'])})")
            out.append(_table(["metric (over all steps)", "seconds"], [[k, f"{v:.3f}"] for k, v in a["by_metric_s"].items()]))
            for name, why in a["not_timed"].items():
                out.append(f"not timed (raised on the synthetic run): {name}: {why}")

    out.append("\nSummary (goals, not gates; a miss is reported with what limits it)")
    out.append(_table(["target", "goal", "measured", "met"],
                      [[row["target"], row["goal"], row["measured"],
                        "-" if row["met"] is None else ("met" if row["met"] else "MISSED")] for row in results["summary"]]))
    return "\n".join(out)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def load_models(model_path: str | None = None, with_hf: bool = True) -> tuple[Any, Any]:
    from tempo_lens import load_model
    from tempo_lens.model import embedded_model_dir

    model = load_model(model_path, device="cpu")
    hf = None
    if with_hf:
        from transformers import AutoModelForCausalLM

        directory = model_path or embedded_model_dir()
        hf = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32).eval()
    return model, hf


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run; ratios are noisier)")
    parser.add_argument("--json", metavar="PATH", help="also save every number (and the raw step times) as JSON")
    parser.add_argument("--only", metavar="LIST", help="comma-separated sections to run (1-6; 1 and 2 share one run)")
    parser.add_argument("--model", metavar="PATH", help="a local model directory instead of the embedded SmolLM2-135M")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = BenchConfig.quick() if args.quick else BenchConfig()
    sections = SECTIONS if not args.only else tuple(int(x) for x in args.only.split(","))
    machine = machine_info()
    t0 = PERF()
    print(f"tempo_lens benchmark{' (--quick)' if args.quick else ''}: {machine['cpu']}, {machine['cores']} cores, "
          f"torch {machine['torch']} with {machine['torch_threads']} threads", flush=True)
    needs_model = any(x in sections for x in (1, 2, 3, 4, 5))
    model, hf = load_models(args.model, with_hf=4 in sections) if needs_model else (None, None)
    results = run_all(model, hf, cfg, sections, log=lambda msg: print(msg, flush=True))
    results["machine"] = machine
    results["machine"]["loadavg_end"] = _loadavg()
    results["total_wall_s"] = PERF() - t0
    print()
    print(format_report(results))
    print(f"\ntotal {results['total_wall_s']:.0f} s; load average at end {results['machine']['loadavg_end']}")
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(_jsonable(results), handle, indent=1)
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
