"""Section 4b: where the time of a cached decode goes (cProfile), bridge against raw HF eager.

Profiling inflates Python-heavy code: use it for attribution, the interleaved timings for ratios.
"""

from __future__ import annotations

import cProfile
import pstats
from typing import TYPE_CHECKING, Any

from .config import BenchConfig
from .harness import rotated, table
from .steps import FixedContext, hf_decode_block, plain_decode_block, tempo_step_block

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# where the per-step time goes, by source of the frame
_BUCKETS = (
    ("torch ops (tensor work)", lambda f, n: f == "~" and ("torch" in n or "Tensor" in n)),
    ("transformer_lens wrappers", lambda f, n: "transformer_lens" in f),
    ("accelerate hooks (align_module_device)", lambda f, n: "accelerate" in f),
    ("inspect (signature per call)", lambda f, n: f.endswith("inspect.py")),
    ("torch.nn Module dispatch", lambda f, n: "torch/nn/modules/module.py" in f),
    ("transformers model code", lambda f, n: "transformers" in f),
)

# known causes of the bridge's overhead, matched on "file:function"; cumulative time per step
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


def stats_summary(stats: pstats.Stats, n: int, top: int = 12) -> dict:
    """Per-step buckets, known causes, tensor ops and the top entries of a profile over ``n`` steps."""
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


def profile_overhead(model: "TransformerBridge", hf: Any, cfg: BenchConfig) -> dict:
    """cProfile of the cached decode step: bridge, raw HF eager, bridge + TEMPO hooks (k=1).

    The three take turns step by step and each profiler is on only around its timed region (hook entry,
    rollback and the other variants stay out).
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
        for name in rotated(list(blocks), r):
            blocks[name](m)
        done += m
        r += 1
    stats = {name: pstats.Stats(p) for name, p in profilers.items()}
    bridge = stats_summary(stats["bridge"], n)
    raw = stats_summary(stats["hf"], n)
    tempo = stats_summary(stats["bridge_tempo_1"], n, top=0)
    keep = ("calls_per_step", "profiled_ms_per_step", "buckets_ms_per_step", "known_causes_ms_per_step")
    return {"steps": n, "bridge": bridge, "hf": raw, "bridge_tempo_1": {k: tempo[k] for k in keep}}


def format_profile(pr: dict) -> list[str]:
    b, r, t = pr["bridge"], pr["hf"], pr["bridge_tempo_1"]
    out = [f"\n[4b] cProfile, cached 1-token decode, {pr['steps']} steps (profiling inflates Python-heavy code; use for attribution)",
           f"Python function calls per step: bridge {b['calls_per_step']:.0f}, bridge+TEMPO hooks "
           f"{t['calls_per_step']:.0f}, HF eager {r['calls_per_step']:.0f}"]
    tensor_gap = b["buckets_ms_per_step"]["torch ops (tensor work)"] - r["buckets_ms_per_step"]["torch ops (tensor work)"]
    total_gap = b["profiled_ms_per_step"] - r["profiled_ms_per_step"]
    out.append(f"finding: the bridge's profiled step is {total_gap:+.1f} ms over HF's; tensor work differs by {tensor_gap:+.1f} ms, "
               f"so {total_gap - tensor_gap:+.1f} ms is Python (wrapper calls, {b['calls_per_step'] / r['calls_per_step']:.1f}x as many)")
    out.append(table(["where the time goes (tottime, ms/step)", "bridge", "HF eager", "bridge+TEMPO"],
                     [[n, f"{b['buckets_ms_per_step'][n]:.1f}", f"{r['buckets_ms_per_step'].get(n, 0.0):.1f}",
                       f"{t['buckets_ms_per_step'].get(n, 0.0):.1f}"] for n in b["buckets_ms_per_step"]]
                     + [["total (profiled)", f"{b['profiled_ms_per_step']:.1f}", f"{r['profiled_ms_per_step']:.1f}",
                         f"{t['profiled_ms_per_step']:.1f}"]]))
    known_t = t.get("known_causes_ms_per_step", {})
    out.append(table(["known cause, cumulative ms/step", "bridge", "HF eager", "bridge+TEMPO"],
                     [[k, f"{v:.1f}", f"{r['known_causes_ms_per_step'].get(k, 0.0):.1f}", f"{known_t.get(k, 0.0):.1f}"]
                      for k, v in b["known_causes_ms_per_step"].items()]))
    extra = sorted(((op, c, ms, r["tensor_ops"].get(op, (0.0, 0.0))) for op, (c, ms) in b["tensor_ops"].items()
                    if c > r["tensor_ops"].get(op, (0.0, 0.0))[0] + 0.5),
                   key=lambda e: e[2] - e[3][1], reverse=True)[:8]
    out.append(table(["tensor ops the bridge runs more often than HF", "calls/step bridge", "HF", "ms/step bridge", "HF"],
                     [[op[:60], f"{c:.0f}", f"{h[0]:.0f}", f"{ms:.2f}", f"{h[1]:.2f}"] for op, c, ms, h in extra]))
    for key, label in (("top_cumtime", "cumulative"), ("top_tottime", "tottime")):
        out.append(f"bridge top entries by {label}:")
        out.append(table(["function", "calls/step", "tottime ms/step", "cumtime ms/step"],
                         [[e["function"][:95], f"{e['calls_per_step']:.0f}", f"{e['tottime_ms_per_step']:.2f}",
                           f"{e['cumtime_ms_per_step']:.2f}"] for e in b[key]]))
    return out
