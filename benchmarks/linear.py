"""Sections 1b and 1c: what limits target 1 (the linear layers with k rows), and target 1 with prepacked weights.

1b times one forward's linear layers alone, with the model's own weights, in three layouts; 1c runs
target 1 again inside :class:`tempo_lens.cpu_linears.PrepackedLinears` (the package's opt-in oneDNN path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tempo_lens.cpu_linears import PrepackedLinears, linear_modules, packed_linear
from tempo_lens.generation import forward_step, select_siblings

from .config import BenchConfig
from .harness import PERF, Block, fmt_ratio, interleave, pooled_median, ratio, table
from .steps import FixedContext, hooks_ctx, plain_decode_block, tempo_step_block, with_context

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

LAYOUT_NAMES = {"rowmajor": "row-major (the model's)", "colmajor": "col-major copy", "onednn": "oneDNN prepacked"}


def _linears_block(xs: list[torch.Tensor], weights: list[torch.Tensor], layout: str) -> Block:
    """Every linear layer once on its rows ``xs``: ``F.linear`` (row-major), matmul by ``[in, out]``, or oneDNN."""

    def run(n: int) -> list[float]:
        times = []
        with torch.no_grad():
            for _ in range(n):
                t0 = PERF()
                if layout == "colmajor":
                    for x, w in zip(xs, weights):
                        torch.matmul(x, w)
                elif layout == "onednn":
                    for x, w in zip(xs, weights):
                        packed_linear(x, w)
                else:
                    for x, w in zip(xs, weights):
                        torch.nn.functional.linear(x, w)
                times.append(PERF() - t0)
        return times

    return run


def bench_linear(model: "TransformerBridge", cfg: BenchConfig) -> dict:
    """What limits target 1: one forward's linear layers alone (the model's own weights), k rows vs 1 row.

    ``rowmajor`` is what the model runs (``F.linear`` on ``[out, in]`` weights); ``colmajor`` multiplies by a
    contiguous ``[in, out]`` copy, the alternative weight layout; ``onednn`` runs oneDNN with prepacked
    weights (``torch.ops.mkldnn._linear_pointwise``, dense in and out, what torch.compile's CPU weight
    freezing uses), where this torch build has it.
    """
    weights = [module.weight.detach() for module in linear_modules(model)]
    prepacked = PrepackedLinears(model)
    per_layout = {"rowmajor": weights, "colmajor": [w.t().contiguous() for w in weights]}
    if prepacked.available:
        per_layout["onednn"] = prepacked.packed
    generator = torch.Generator().manual_seed(cfg.seed)
    variants: dict[str, Block] = {}
    layouts = tuple(per_layout)
    for k in cfg.ks:
        xs = [torch.randn(k, w.shape[1], generator=generator).to(w.device, w.dtype) for w in weights]
        for layout in layouts:
            variants[f"{layout}_{k}"] = _linears_block(xs, per_layout[layout], layout)
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
    del per_layout, prepacked
    return {"n_linear": len(weights), "weight_mb": 4 * n_params / 2**20, "layouts": list(layouts), "rows": rows,
            "samples": samples}


def bench_prepacked(model: "TransformerBridge", cfg: BenchConfig) -> dict:
    """Target 1 again with oneDNN-prepacked linear weights (opt-in tempo_lens.cpu_linears): does the k-row penalty go away?"""
    fast = PrepackedLinears(model)
    if not fast.available:
        return {"skipped": "oneDNN prepacked linears unavailable (torch.ops.mkldnn._linear_pointwise, CPU fp32 only)"}
    ctx = FixedContext(model, cfg.context, cfg.mode, cfg.seed)
    k_max = max(cfg.ks)
    with torch.no_grad():   # same logits? one TEMPO step both ways
        ids, probs, _ = select_siblings(ctx.distribution, 0.0, k_max)
        ctx.layout.append_step(ids, probs)
        with hooks_ctx(model, ctx.hooks):
            stock = forward_step(model, [ids], ctx.cache)[0]
            ctx.cache.crop(-k_max)
            with fast.active():
                packed = forward_step(model, [ids], ctx.cache)[0]
            ctx.rollback(k_max)
    parity = float((stock - packed).abs().max())
    variants: dict[str, Block] = {
        "decode_1": plain_decode_block(ctx),
        "fast_decode_1": with_context(fast.active, plain_decode_block(ctx)),
    }
    for k in cfg.ks:
        variants[f"fast_tempo_{k}"] = with_context(fast.active, tempo_step_block(ctx, k))
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


def format_linear(li: dict) -> list[str]:
    return [
        f"\n[1b] what limits target 1: the forward's {li['n_linear']} linear layers alone ({li['weight_mb']:.0f} MB of "
        "weights), k input rows, each layout vs the model's own layout at 1 row",
        table(["k"] + [f"{LAYOUT_NAMES[lay]} ms / ratio" for lay in li["layouts"]],
              [[r["k"]] + [f"{r[f'{lay}_ms']:.1f} / {r[f'{lay}_vs_rowmajor_1']['ratio']:.2f}x" for lay in li["layouts"]]
               for r in li["rows"]]),
    ]


def format_prepacked(pp: dict) -> list[str]:
    out = ["\n[1c] target 1 with oneDNN-prepacked linear weights (opt-in `tempo_lens.cpu_linears`: instance-level forward "
           "overrides on the HF nn.Linear modules; TransformerLens untouched, hooks on)"]
    if "skipped" in pp:
        return out + [f"skipped: {pp['skipped']}"]
    out.append(f"same logits as the stock forward: max |dlogit| {pp['parity_max_abs_logit_diff']:.1e}; "
               f"1-token decode {pp['decode_ms']:.1f} ms stock, {pp['fast_decode_ms']:.1f} ms prepacked "
               f"({fmt_ratio(pp['fast_decode_vs_stock'])})")
    out.append(table(["k", "TEMPO ms (prepacked)", "TEMPO / prepacked decode", "TEMPO / stock decode"],
                     [[r["k"], f"{r['fast_tempo_ms']:.1f}", fmt_ratio(r["vs_fast_decode"]), fmt_ratio(r["vs_stock_decode"])]
                      for r in pp["rows"]]))
    return out
