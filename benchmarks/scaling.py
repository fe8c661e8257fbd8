"""Section 3: the cost of a cached TEMPO step grows linearly with the context, a naive recompute does not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from .config import BenchConfig
from .harness import Block, interleave, pooled_median, ratio, table
from .steps import FixedContext, naive_tempo_block, tempo_step_block

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


def bench_scaling(model: "TransformerBridge", cfg: BenchConfig) -> dict:
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
    slope_cached = loglog_slope(contexts, [r["cached_ms"] for r in rows]) if len(rows) > 1 else float("nan")
    slope_naive = loglog_slope(contexts, [r["naive_ms"] for r in rows]) if len(rows) > 1 else float("nan")
    return {"k": k, "rows": rows, "slope_cached": slope_cached, "slope_naive": slope_naive, "samples": samples}


def format_scaling(sc: dict) -> list[str]:
    base_c, base_n = sc["rows"][0]["cached_ms"], sc["rows"][0]["naive_ms"]
    return [
        f"\n[3] per-step cost vs context: cached TEMPO step (k={sc['k']}, hooks on) vs naive full recompute (no KV cache)",
        table(["context", "cached ms", "cached / first", "naive ms", "naive / first", "naive / cached"],
              [[r["context"], f"{r['cached_ms']:.1f}", f"{r['cached_ms'] / base_c:.2f}x", f"{r['naive_ms']:.1f}",
                f"{r['naive_ms'] / base_n:.2f}x", f"{r['naive_over_cached']['ratio']:.1f}x"] for r in sc["rows"]]),
        f"log-log slope of per-step cost vs context: cached {sc['slope_cached']:.2f}, naive {sc['slope_naive']:.2f} "
        "(1 = linear; a whole generation costs the sum over steps)",
    ]
