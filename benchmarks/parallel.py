"""Sections 1 and 2: a TEMPO step with k siblings against a plain decode, and hooks on against off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tempo_lens.backends.bridge.fast_paths import fast_paths_on

from .config import BenchConfig
from .harness import Block, fmt_ratio, interleave, paths_label, pooled_median, ratio, table
from .steps import FixedContext, plain_decode_block, tempo_step_block

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def bench_parallel(model: "TransformerBridge", cfg: BenchConfig) -> dict:
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
    return {"context": cfg.context, "paths": fast_paths_on(model), "decode_ms": 1e3 * pooled_median(samples, "decode_1"),
            "rows": rows, "samples": samples}


def format_parallel(p: dict) -> list[str]:
    return [
        f"\n[1+2] TEMPO step vs plain decode, context {p['context']}, default settings ({paths_label(p['paths'])})  "
        f"(plain cached 1-token decode: {p['decode_ms']:.1f} ms)",
        table(["k", "TEMPO ms", "hooks-off ms", "1: TEMPO / decode", "2: hooks on / off", "k tokens / 1 token (no hooks)"],
              [[r["k"], f"{r['tempo_ms']:.1f}", f"{r['nohooks_ms']:.1f}", fmt_ratio(r["vs_decode"]), fmt_ratio(r["hooks_on_off"]),
                f"{r['width_only']['ratio']:.2f}x"] for r in p["rows"]]),
    ]
