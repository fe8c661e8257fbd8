"""Section 4: what TransformerLens adds, the bridge's cached decode against raw HF eager on the same weights.

The bridge runs with its default paths (:mod:`tempo_lens.backends.bridge.fast_paths`) and, for comparison, with them
forced off; raw HF eager runs stock and, to separate the wrappers' cost from the kernels', with the
same prepacked linears the bridge's defaults use.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from tempo_lens.backends.bridge.cpu_linears import prepacked_linears
from tempo_lens.backends.bridge.fast_paths import fast_paths_on, stock_paths
from tempo_lens.generation import select_siblings

from .config import BenchConfig
from .harness import fmt_ratio, interleave, paths_label, pooled_median, ratio, table
from .steps import (
    FixedContext, hf_decode_block, hf_tempo_block, hf_tempo_forward, hooks_ctx, plain_decode_block, step_forward,
    tempo_step_block, with_context,
)

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def bench_hf(model: "TransformerBridge", hf: Any, cfg: BenchConfig) -> dict:
    """Target 4: the bridge's cached decode step vs raw HF eager on the same weights (and TEMPO both ways)."""
    ctx = FixedContext(model, cfg.context, cfg.mode, cfg.seed, hf=hf)
    k = max(cfg.ks)
    parity = _parity_bridge_vs_hf(ctx, k)
    variants = {
        "hf_decode_1": hf_decode_block(ctx),
        "bridge_decode_1": plain_decode_block(ctx),
        "bridge_stock_decode_1": with_context(lambda: stock_paths(model), plain_decode_block(ctx)),
        "hf_prepacked_decode_1": with_context(lambda: prepacked_linears(SimpleNamespace(original_model=hf)), hf_decode_block(ctx)),
        "bridge_tempo_1": tempo_step_block(ctx, 1),
        f"hf_tempo_{k}": hf_tempo_block(ctx, k),
        f"bridge_tempo_{k}": tempo_step_block(ctx, k),
    }
    groups = [("hf_decode_1", "bridge_decode_1", "bridge_stock_decode_1", "hf_prepacked_decode_1", "bridge_tempo_1"),
              (f"hf_tempo_{k}", f"bridge_tempo_{k}")]
    samples = interleave(variants, groups, cfg.rounds, cfg.block)
    return {
        "context": cfg.context,
        "k": k,
        "paths": fast_paths_on(model),
        "bridge_over_hf": ratio(samples, "bridge_decode_1", "hf_decode_1"),
        "bridge_stock_over_hf": ratio(samples, "bridge_stock_decode_1", "hf_decode_1"),
        "bridge_over_hf_prepacked": ratio(samples, "bridge_decode_1", "hf_prepacked_decode_1"),
        "bridge_tempo1_over_hf": ratio(samples, "bridge_tempo_1", "hf_decode_1"),
        "tempo_k_bridge_over_hf": ratio(samples, f"bridge_tempo_{k}", f"hf_tempo_{k}"),
        "parity_max_abs_logit_diff": parity,
        "medians_ms": {name: 1e3 * pooled_median(samples, name) for name in variants},
        "samples": samples,
    }


def _parity_bridge_vs_hf(ctx: FixedContext, k: int) -> float:
    """The HF-way TEMPO step and the bridge's hook-way step compute the same thing (max |delta logit|).

    Both on the stock kernels: what the fast paths change is measured in section 1c.
    """
    with torch.no_grad():
        ids, probs, _ = select_siblings(ctx.distribution, 0.0, k)
        ctx.layout.append_step(ids, probs)
        with hooks_ctx(ctx.model, ctx.hooks), stock_paths(ctx.model):
            bridge = step_forward(ctx.model, ids, ctx.cache)
        hf = hf_tempo_forward(ctx, ids)
        ctx.cache.crop(-k)
        ctx.rollback(k, hf=True)
    return float((bridge.float() - hf.float()).abs().max())


def format_hf(h: dict) -> list[str]:
    return [
        f"\n[4] TransformerLens overhead, context {h['context']}; bridge with default settings ({paths_label(h['paths'])}), "
        "'stock' = fast paths forced off",
        table(["variant", "median ms"], [[k, f"{v:.1f}"] for k, v in h["medians_ms"].items()]),
        f"bridge decode (defaults) / HF eager decode        : {fmt_ratio(h['bridge_over_hf'])}",
        f"bridge decode (stock) / HF eager decode           : {fmt_ratio(h['bridge_stock_over_hf'])}",
        f"bridge decode (defaults) / HF eager with the same prepacked linears: {fmt_ratio(h['bridge_over_hf_prepacked'])}",
        f"bridge TEMPO k=1 (defaults) / HF eager decode     : {fmt_ratio(h['bridge_tempo1_over_hf'])}",
        f"TEMPO k={h['k']}: bridge hooks / HF (position_ids + 4D mask): {fmt_ratio(h['tempo_k_bridge_over_hf'])}"
        f"   (stock paths both: max |dlogit| {h['parity_max_abs_logit_diff']:.1e})",
    ]
