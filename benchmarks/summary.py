"""The printed report: a header, each section's tables, and one summary row per target (goal, measured, met)."""

from __future__ import annotations

from typing import Callable

from .analysis import format_analysis
from .capture import format_capture
from .changes import format_changes
from .config import TARGETS
from .generate import format_generate, summary_rows as generate_rows
from .harness import paths_label, table
from .linear import format_linear, format_stock
from .overhead import format_hf
from .parallel import format_parallel
from .profiling import format_profile
from .scaling import format_scaling
from .sweep import format_sweep

FORMATTERS: dict[str, Callable[[dict], list[str]]] = {
    "parallel": format_parallel, "linear": format_linear, "stock": format_stock, "scaling": format_scaling,
    "hf": format_hf, "profile": format_profile, "capture": format_capture, "analysis": format_analysis,
    "sweep": format_sweep, "generate": format_generate, "changes": format_changes,
}


def _row(target: str, goal: str, measured: str, value: float | None, met: bool | None) -> dict:
    return {"target": target, "goal": goal, "measured": measured, "value": value, "met": met}


def _at_most(target: str, key: str, r: float, measured: str | None = None) -> dict:
    return _row(target, f"<= {TARGETS[key]:.2f}x", measured or f"{r:.2f}x", r, r <= TARGETS[key])


def _sweep_rows(sw: dict) -> list[dict]:
    if "skipped" in sw:
        return [_row("7 sweep: batched / one at a time", "report", "skipped", None, None)]
    rows = []
    for m in sw["models"]:
        if "skipped" in m:
            rows.append(_row(f"7 sweep {m['name']}", "report", "skipped (not installed)", None, None))
            continue
        name, last = m["model"]["name"], m["rows"][-1]
        if last["speedup"] is not None:
            r = last["speedup"]["ratio"]
            rows.append(_row(f"7 sweep {name}: B={last['batch']} throughput / one at a time",
                             f">= {TARGETS['sweep_speedup']:.1f}x", f"{r:.2f}x", r, r >= TARGETS["sweep_speedup"]))
        if m["batch1_over_generate"]:
            rows.append(_at_most(f"7 sweep {name}: generate_batch B=1 / generate", "sweep_batch1", m["batch1_over_generate"]["ratio"]))
    return rows


def _settings(section: dict) -> str:
    return "default settings" if section.get("paths") else "default settings, fast paths off here"


def summarize(results: dict) -> list[dict]:
    """One row per target: goal, measured value, met."""
    s = results["sections"]
    rows = []
    if "parallel" in s:
        for row in s["parallel"]["rows"]:
            rows.append(_at_most(f"1 parallel ({_settings(s['parallel'])}): TEMPO k={row['k']} / 1-token decode", "parallel",
                                 row["vs_decode"]["ratio"]))
    if "linear" in s and "plan" in s["linear"]:
        chosen = s["linear"]["plan"]
        rows.append(_row("1b kernel choice: cached per-machine measurement / the rule on every linear", "agree",
                         f"{chosen['load_time']} / {chosen['every_linear']}", None, chosen["load_time"] == chosen["every_linear"]))
    if "stock" in s:
        for row in s["stock"]["rows"]:
            r = row["vs_stock_decode"]["ratio"]
            rows.append(_row(f"1c the same, fast paths forced off: k={row['k']}", "report", f"{r:.2f}x", r, None))
    if "parallel" in s:
        for row in s["parallel"]["rows"]:
            rows.append(_at_most(f"2 hooks: on / off, k={row['k']}", "hooks", row["hooks_on_off"]["ratio"]))
    if "scaling" in s and s["scaling"]["rows"]:
        sc = s["scaling"]
        last = sc["rows"][-1]
        rows.append(_row(f"3 linear: cached step growth {sc['rows'][0]['context']}->{last['context']} (log-log slope)",
                         "slope <= 1, below naive",
                         f"{sc['slope_cached']:.2f} (naive {sc['slope_naive']:.2f}); naive/cached @{last['context']} = "
                         f"{last['naive_over_cached']['ratio']:.1f}x",
                         sc["slope_cached"], sc["slope_cached"] <= 1.0 and last["naive_over_cached"]["ratio"] > 1.0))
    if "hf" in s:
        rows.append(_at_most(f"4 TL overhead ({_settings(s['hf'])}): bridge decode / HF eager decode", "bridge_over_hf",
                             s["hf"]["bridge_over_hf"]["ratio"]))
        r = s["hf"]["bridge_stock_over_hf"]["ratio"]
        rows.append(_row("4 the same, fast paths forced off", "report", f"{r:.2f}x", r, None))
    if "capture" in s:
        for row in s["capture"]["rows"]:
            r = row["capture_over_none"]["ratio"]
            rows.append(_at_most(f"5 capture all layers / none, ctx {row['context']}", "capture", r,
                                 f"{r:.2f}x ({row['bytes_per_step'] / 1024:.0f} KiB/step)"))
    if "analysis" in s:
        a = s["analysis"]
        if "skipped" in a:
            rows.append(_row("6 analysis: all metrics, 100 steps", "< 1 s", "skipped", None, None))
        else:
            rows.append(_row(f"6 analysis: all metrics, {a['steps']} steps", "< 1 s", f"{a['seconds']:.3f} s", a["seconds"],
                             a["seconds"] < TARGETS["analysis_s"]))
    if "sweep" in s:
        rows.extend(_sweep_rows(s["sweep"]))
    if "generate" in s:
        rows.extend(_row(**row) for row in generate_rows(s["generate"]))
    return rows


def _header(results: dict) -> list[str]:
    out: list[str] = []
    m, info = results.get("machine", {}), results["model"]
    if m:
        out.append(f"machine : {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), torch {m['torch']} "
                   f"({m['torch_threads']} threads), transformers {m['transformers']}, transformer_lens {m['transformer_lens']}, "
                   f"python {m['python']}, OMP_WAIT_POLICY={m['omp_wait_policy']}, load avg at start {m['loadavg_start']}")
    if info:
        out.append(f"model   : {info['name']} ({info['n_layers']} layers, {info['n_heads']} heads, d_model {info['d_model']}, "
                   f"{info['params'] / 1e6:.0f}M params, {info['dtype']}), mode {results['config']['mode']}")
        out.append(f"settings: the defaults of tempo_lens.load_model, {paths_label(info.get('fast_paths', []))}; "
                   "'stock' variants force them off (tempo_lens.backends.bridge.fast_paths.stock_paths)")
    out.append("timing  : each ratio compares two variants run back to back, round after round (order rotated); shown as "
               "median of the per-round paired ratios [quartiles; 'fastest' = ratio of the fastest steps, the least "
               "disturbed by other load]")
    return out


def format_report(results: dict) -> str:
    out = _header(results)
    for name, section in results["sections"].items():
        out.extend(FORMATTERS[name](section))
    out.append("\nSummary (goals, not gates; a miss is reported with what limits it)")
    out.append(table(["target", "goal", "measured", "met"],
                     [[row["target"], row["goal"], row["measured"],
                       "-" if row["met"] is None else ("met" if row["met"] else "MISSED")] for row in results["summary"]]))
    return "\n".join(out)
