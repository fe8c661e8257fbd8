"""Section 6: every report metric over synthetic steps shaped like the reference model (no model needed)."""

from __future__ import annotations

import gc
import inspect
import statistics
from typing import Any, Callable

import numpy as np

from tempo_lens.layout import TokenLayout

from .config import TARGETS, BenchConfig
from .harness import PERF, table

ANALYSIS_FUNCTIONS = ("parallel_ratio", "intra_step_attention", "layer_entropy", "layer_entropy_table", "head_specialisation")


def synthetic_run(n_steps: int, n_layers: int, n_heads: int, mode: str = "isolated", seed: int = 0,
                  prompt_len: int = 6) -> tuple[TokenLayout, dict[int, np.ndarray]]:
    """A layout of n_steps (1-3 siblings) and per-step attention ``[layer, batch, head, query_pos, key_pos]`` that respects its mask."""
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


def _kv_kwargs(analysis: Any, n_kv_heads: int) -> dict:
    """``n_kv_heads=`` where this version of ``head_specialisation`` takes it."""
    return {"n_kv_heads": n_kv_heads} if "n_kv_heads" in inspect.signature(analysis.head_specialisation).parameters else {}


def _per_step_calls(analysis: Any, layout: TokenLayout, layers: list[int], n_layers: int, mode: str,
                    n_kv_heads: int) -> dict[str, Callable[[int, np.ndarray], Any]]:
    """Every metric the report and its figures compute for *every* step (the five of issue 8 first)."""
    kv = _kv_kwargs(analysis, n_kv_heads)
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
    kv = _kv_kwargs(analysis, n_kv_heads)
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


def _drop_failing(calls: dict[str, Callable], args: tuple, required: tuple[str, ...], failed: dict[str, str]) -> None:
    """Try each call once; an optional one that raises is recorded in ``failed`` and not timed."""
    for name, fn in list(calls.items()):
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001
            if name in required:
                raise
            failed[name] = f"{type(exc).__name__}: {exc}"
            calls.pop(name)


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
    _drop_failing(per_step, next(iter(attention.items())), ANALYSIS_FUNCTIONS, failed)
    _drop_failing(run_level, (), (), failed)

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


def format_analysis(a: dict) -> list[str]:
    out = [f"\n[6] analysis throughput: every report metric over synthetic attention shaped like the reference "
           f"model, {a.get('shape', '[28, 1, 24, q, K]')} per step"]
    if "skipped" in a:
        return out + [f"skipped: {a['skipped']}"]
    out.append(f"{a['steps']} steps: every-step metrics {a['per_step_s']:.3f} s + run tables and step-1 summaries {a['report_level_s']:.3f} s "
               f"= {a['seconds']:.3f} s (budget {a['budget_s']:.0f} s; repeats {', '.join(f'{t:.3f}' for t in a['times'])})")
    out.append(table(["metric (over all steps)", "seconds"], [[k, f"{v:.3f}"] for k, v in a["by_metric_s"].items()]))
    for name, why in a["not_timed"].items():
        out.append(f"not timed (raised on the synthetic run): {name}: {why}")
    return out
