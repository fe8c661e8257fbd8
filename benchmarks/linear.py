"""Sections 1b and 1c: what limits target 1 (the linear layers with k rows), and target 1 with the fast paths off.

1b times one forward's linear layers alone, with the model's own weights, in three layouts; 1c runs
target 1 again on the stock TransformerBridge (:func:`tempo_lens.backends.bridge.fast_paths.stock_paths`), beside the
defaults (prepacked oneDNN linears and fast norms, :mod:`tempo_lens.backends.bridge.fast_paths`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tempo_lens.backends.bridge.cpu_linears import PrepackedLinears, linear_modules, one_row_kernel, packed_linear, packed_min_rows
from tempo_lens.backends.bridge.linear_calibration import plan_from_timings
from tempo_lens.backends.bridge.fast_paths import fast_paths_on, stock_paths
from tempo_lens.generation import select_siblings

from .config import BenchConfig
from .harness import PERF, Block, fmt_ratio, interleave, pooled_median, ratio, table
from .steps import FixedContext, hooks_ctx, plain_decode_block, step_forward, tempo_step_block, with_context

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
    # The rule of the per-machine measurement (tempo_lens.backends.bridge.linear_calibration) on these timings of every linear.
    every = None
    if "onednn" in layouts:
        every = plan_from_timings({r["k"]: r["rowmajor_ms"] for r in rows}, {r["k"]: r["onednn_ms"] for r in rows},
                                  {r["k"]: r["colmajor_ms"] for r in rows if r["k"] == 1})
    load_time = {"min_rows": packed_min_rows(model), "one_row": one_row_kernel(model)}
    return {"n_linear": len(weights), "weight_mb": 4 * n_params / 2**20, "layouts": list(layouts), "rows": rows,
            "plan": {"load_time": load_time,
                     "every_linear": None if every is None else {"min_rows": every.min_rows, "one_row": every.one_row}},
            "samples": samples}


def bench_stock(model: "TransformerBridge", cfg: BenchConfig) -> dict:
    """Target 1 with the fast paths forced off (``tempo_lens.backends.bridge.fast_paths.stock_paths``), beside the defaults.

    Variants: the 1-token decode with the defaults, and the decode and TEMPO steps on the stock paths.
    """
    ctx = FixedContext(model, cfg.context, cfg.mode, cfg.seed)
    k_max = max(cfg.ks)
    with torch.no_grad():   # what the fast paths change in the logits: one TEMPO step both ways
        ids, probs, _ = select_siblings(ctx.distribution, 0.0, k_max)
        ctx.layout.append_step(ids, probs)
        with hooks_ctx(model, ctx.hooks):
            fast = step_forward(model, ids, ctx.cache)
            ctx.cache.crop(-k_max)
            with stock_paths(model):
                stock = step_forward(model, ids, ctx.cache)
            ctx.rollback(k_max)
    stock_ctx = lambda: stock_paths(model)  # noqa: E731
    variants: dict[str, Block] = {
        "decode_1": plain_decode_block(ctx),
        "stock_decode_1": with_context(stock_ctx, plain_decode_block(ctx)),
    }
    for k in cfg.ks:
        variants[f"stock_tempo_{k}"] = with_context(stock_ctx, tempo_step_block(ctx, k))
    groups = [("decode_1", "stock_decode_1", f"stock_tempo_{k}") for k in cfg.ks]
    samples = interleave(variants, groups, cfg.linear_rounds, 1)
    rows = [{
        "k": k,
        "stock_tempo_ms": 1e3 * pooled_median(samples, f"stock_tempo_{k}"),
        "vs_stock_decode": ratio(samples, f"stock_tempo_{k}", "stock_decode_1"),
        "vs_default_decode": ratio(samples, f"stock_tempo_{k}", "decode_1"),
    } for k in cfg.ks]
    return {
        "context": cfg.context, "paths": fast_paths_on(model), "parity_max_abs_logit_diff": float((fast - stock).abs().max()),
        "rows": rows, "decode_ms": 1e3 * pooled_median(samples, "decode_1"),
        "stock_decode_ms": 1e3 * pooled_median(samples, "stock_decode_1"),
        "default_decode_vs_stock": ratio(samples, "decode_1", "stock_decode_1"), "samples": samples,
    }


def format_linear(li: dict) -> list[str]:
    return [
        f"\n[1b] what limits target 1: the forward's {li['n_linear']} linear layers alone ({li['weight_mb']:.0f} MB of "
        "weights), k input rows, each layout vs the model's own layout at 1 row",
        table(["k"] + [f"{LAYOUT_NAMES[lay]} ms / ratio" for lay in li["layouts"]],
              [[r["k"]] + [f"{r[f'{lay}_ms']:.1f} / {r[f'{lay}_vs_rowmajor_1']['ratio']:.2f}x" for lay in li["layouts"]]
               for r in li["rows"]]),
        f"kernel choice (packed from how many rows, the one-row kernel): the cached per-machine measurement chose "
        f"{_plan(li['plan']['load_time'])}; its rule on these timings of every linear gives {_plan(li['plan']['every_linear'])}",
    ]


def _plan(plan: dict | None) -> str:
    return "-" if plan is None else f"packed from {plan['min_rows'] or 'never'}, one row {plan['one_row']}"


def format_stock(st: dict) -> list[str]:
    out = [f"\n[1c] target 1 with the fast paths forced off (stock TransformerBridge, `load_model(fast=False)`; "
           f"the defaults switch on: {'; '.join(st['paths']) or 'nothing here'})",
           f"logits, defaults vs stock: max |dlogit| {st['parity_max_abs_logit_diff']:.1e}; 1-token decode "
           f"{st['decode_ms']:.1f} ms with the defaults, {st['stock_decode_ms']:.1f} ms stock "
           f"(defaults / stock {fmt_ratio(st['default_decode_vs_stock'])})"]
    out.append(table(["k", "TEMPO ms (stock)", "TEMPO / decode, both stock", "TEMPO stock / decode with defaults"],
                     [[r["k"], f"{r['stock_tempo_ms']:.1f}", fmt_ratio(r["vs_stock_decode"]), fmt_ratio(r["vs_default_decode"])]
                      for r in st["rows"]]))
    return out
