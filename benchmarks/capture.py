"""Section 5: what capturing every layer's attention pattern costs per step, and how many bytes it stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tempo_lens.capture import CapturedAttention
from tempo_lens.hooks import PatternRecorder

from .config import BenchConfig
from .harness import Block, fmt_ratio, interleave, ratio, table
from .steps import FixedContext, tempo_step_block

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def bench_capture(model: "TransformerBridge", cfg: BenchConfig) -> dict:
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


def format_capture(cap: dict) -> list[str]:
    return [
        "\n[5] capture: PatternRecorder on all layers + CapturedAttention.record every step vs no capture (TEMPO hooks on in both)",
        table(["context", "k", "capture / none", "bytes stored per step", "array shape"],
              [[r["context"], r["k"], fmt_ratio(r["capture_over_none"]), f"{r['bytes_per_step']:,}",
                "x".join(map(str, r["shape"]))] for r in cap["rows"]]),
        "bytes per step = 4 * layers * heads * k * (context + k): linear in context",
    ]
