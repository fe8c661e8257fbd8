"""Every number of the findings report, computed from experiment files (no model needed).

:func:`compute_metrics` returns one JSON-ready dict (``metrics.json``); the renderer
(:mod:`tempo_lens.report.findings`) only formats and chooses words from it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import (
    bootstrap_ci,
    depth_pattern,
    head_specialisation,
    heads_by_kv_group,
    intra_step_table,
    layer_entropy_table,
    mode_averages,
    paired_permutation_test,
    ratio_by_layer,
    ratio_table,
)
from ..capture import CapturedRun
from ..experiment import Experiment, pruning_from_config

ENTROPY_STEP = 1  # the reference report's entropy and head tables use step 1
MINIMAL_DIFFERENCE = 0.05  # single-run isolated - visible differences below this are called "minimal"


@dataclass
class ReportInputs:
    """The experiments a report is built from; ``multi`` and ``pruning`` are optional sections."""

    isolated: Experiment
    visible: Experiment
    multi: Experiment | None = None
    pruning: Experiment | None = None


def reference_values() -> dict:
    """The reference report's figures (cogito 3B), shipped with the package and labelled as such."""
    text = resources.files("tempo_lens").joinpath("data/reference_cogito_3b.json").read_text(encoding="utf-8")
    return json.loads(text)


def _clean(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _records(df: pd.DataFrame) -> list[dict]:
    return [_clean(r) for r in df.to_dict(orient="records")]


def _generated(experiment: Experiment) -> CapturedRun:
    runs = experiment.generated()
    if not runs:
        raise ValueError(f"experiment {experiment.config.get('name')} has no generated run")
    return runs[0]


def _variant_of(experiment: Experiment, source: CapturedRun, variant: str) -> CapturedRun | None:
    for run in experiment.variant(variant):
        if run.meta.get("source_run") == source.name:
            return run
    return None


def _ci(values) -> dict:
    mean, lo, hi = bootstrap_ci(values)
    return {"mean": mean, "lo": lo, "hi": hi, "n": int(np.sum(~np.isnan(np.asarray(values, dtype=float))))}


def _paired(a, b) -> dict:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = _ci(a - b)
    out["p"] = paired_permutation_test(a, b)
    return out


def run_summary(run: CapturedRun) -> dict:
    layout = run.layout
    steps = []
    for step in range(layout.n_steps):
        r = layout.step_range(step)
        steps.append({
            "step": step, "size": len(r), "physical": [r.start, r.stop - 1], "logical_position": layout.logical_positions[r.start],
            "tokens": [run.token_strings[i] for i in r], "probs": [layout.probs[i] for i in r],
            "pruned": [layout.is_pruned(i) for i in r],
        })
    shapes = {str(s): list(a.shape) for s, a in sorted(run.attention.items())}
    return {
        "name": run.name, "mode": run.mode, "prompt": run.prompt, "text": run.meta.get("text"),
        "clean_text": run.meta.get("clean_text"), "n_prompt_tokens": layout.n_prompt, "n_tokens": len(layout),
        "steps": steps, "parallel_steps": [s for s in steps if s["size"] >= 2], "capture_shapes": shapes,
        "layers": list(run.layers),
    }


def _per_run_mean_ratio(runs: list[CapturedRun], **kwargs) -> dict[str, float]:
    if not runs:
        return {}
    averages = mode_averages(ratio_table(runs, **kwargs))
    return dict(zip(averages["run"], averages["ratio"]))


def sibling_preference(run: CapturedRun) -> list[float]:
    """Per (step, earlier parallel set): attention to the less likely siblings / to the most likely one."""
    values = []
    layout = run.layout
    for step, attention in sorted(run.attention.items()):
        a = attention.mean(axis=(0, 1, 2, 3), dtype=np.float64)
        for earlier in layout.parallel_steps():
            if earlier >= step:
                break
            members = [k for k in layout.step_range(earlier) if not layout.is_hidden(k, step)]
            if len(members) < 2 or a[members[0]] <= 0:
                continue
            values.append(float(a[members[1:]].mean() / a[members[0]]))
    return values


def single_run_metrics(inputs: ReportInputs) -> dict:
    iso, vis = _generated(inputs.isolated), _generated(inputs.visible)
    runs = [iso, vis]
    table = ratio_table(runs)
    sink = ratio_table(runs, exclude_first=True)
    per_mode = _records(mode_averages(table))
    averages = {row["mode"]: row["ratio"] for row in per_mode}
    set_averages = {row["mode"]: row["set_ratio"] for row in per_mode}
    sink_averages = {row["mode"]: row["ratio"] for row in _records(mode_averages(sink))}

    measured = table[table["missing_reason"].isna()]
    reference_rows = _records(measured[["mode", "step", "ratio", "parallel_mean", "other_mean", "parallel_set_mass", "set_ratio",
                                        "n_parallel_keys", "n_other_keys", "n_parallel_sets"]])
    missing_rows = _records(table[table["missing_reason"].notna()][["mode", "step", "missing_reason"]])
    confounds = measured[["mode", "step", "ratio", "set_ratio"]].merge(
        sink[["mode", "step", "ratio"]].rename(columns={"ratio": "ratio_no_sink"}), on=["mode", "step"], how="left")

    # Baseline: the same tokens at unique positions (RoPE sharing ablated), mask unchanged.
    baseline_rows, baseline_avg = [], {}
    for experiment, run in ((inputs.isolated, iso), (inputs.visible, vis)):
        unique = _variant_of(experiment, run, "unique_positions")
        if unique is None:
            continue
        t = ratio_table([unique])
        merged = table[table["run"] == run.name][["step", "ratio"]].merge(
            t[["step", "ratio"]].rename(columns={"ratio": "ratio_unique"}), on="step")
        merged = merged[merged["ratio"].notna()]
        for row in _records(merged):
            baseline_rows.append({"mode": run.mode, **row, "difference": row["ratio"] - row["ratio_unique"]})
        baseline_avg[run.mode] = {"shared": float(merged["ratio"].mean()), "unique": float(merged["ratio_unique"].mean())}

    # Isolation effect on identical tokens: the isolated run replayed with the visible mask.
    toggled = _variant_of(inputs.isolated, iso, "toggled_mask")
    toggled_avg = None
    if toggled is not None:
        toggled_avg = _records(mode_averages(ratio_table([toggled])))[0]["ratio"]

    intra = intra_step_table(runs)
    intra_summary = {}
    for mode, part in intra.groupby("mode"):
        later = part[part["rank"] > 0]
        intra_summary[mode] = {
            "to_siblings": float(part["to_siblings"].mean()), "to_siblings_later": float(later["to_siblings"].mean()) if len(later) else None,
            "to_self": float(part["to_self"].mean()), "to_earlier": float(part["to_earlier"].mean()), "n_rows": int(len(part)),
        }

    # Entropy and heads at step 1 of the isolated run, as the reference did.
    entropy_step = ENTROPY_STEP if ENTROPY_STEP in iso.attention else max(iso.attention)
    n_layers = inputs.isolated.model["n_layers"]
    entropy = layer_entropy_table(iso.attention[entropy_step], iso.layers, n_layers=n_layers)
    heads = head_specialisation(iso.attention[entropy_step], iso.layout, entropy_step, iso.mode,
                                n_kv_heads=inputs.isolated.model.get("n_kv_heads"))

    # Where the down-weighting is strongest: the ratio per layer, averaged over measured steps.
    per_layer = []
    for step in measured[measured["mode"] == "isolated"]["step"]:
        per_layer.append(ratio_by_layer(iso.attention[int(step)], iso.layout, int(step), layers=iso.layers))
    layer_ratio = (pd.concat(per_layer).groupby("layer", as_index=False)["ratio"].mean() if per_layer
                   else pd.DataFrame(columns=["layer", "ratio"]))

    return {
        "ratios": reference_rows,
        "missing_steps": missing_rows,
        "mode_averages": averages,
        "set_ratio_averages": set_averages,
        "no_sink_averages": sink_averages,
        "confounds": _records(confounds),
        "isolation_effect": {
            "isolated": averages.get("isolated"), "visible": averages.get("visible"),
            "difference": (averages.get("isolated") or float("nan")) - (averages.get("visible") or float("nan")),
            "isolated_tokens_visible_mask": toggled_avg,
        },
        "baseline": {"rows": baseline_rows, "averages": baseline_avg},
        "intra_step": {"summary": intra_summary, "rows": _records(intra)},
        "entropy": {"step": int(entropy_step), "mode": iso.mode, "layers": _records(entropy), "depth": _records(depth_pattern(entropy))},
        "heads": {"step": int(entropy_step), "mode": iso.mode, "rows": _records(heads), "kv_groups": _records(heads_by_kv_group(heads))},
        "layer_ratio": _records(layer_ratio),
        "sibling_preference": _ci(sibling_preference(iso) + sibling_preference(vis)),
        "runs": {"isolated": run_summary(iso), "visible": run_summary(vis)},
    }


def multi_prompt_metrics(experiment: Experiment) -> dict:
    generated = experiment.generated()
    by_mode = {m: [r for r in generated if r.mode == m] for m in ("isolated", "visible")}
    per_run = mode_averages(ratio_table(generated))
    mean_ratio = dict(zip(per_run["run"], per_run["ratio"]))
    set_ratio = dict(zip(per_run["run"], per_run["set_ratio"]))
    no_sink = _per_run_mean_ratio(generated, exclude_first=True)
    out: dict = {"n_prompts": len(experiment.config.get("prompts", [])), "modes": {}}
    for mode, runs in by_mode.items():
        values = [mean_ratio.get(r.name, float("nan")) for r in runs]
        out["modes"][mode] = {
            "ratio": _ci(values),
            "ratio_no_sink": _ci([no_sink.get(r.name, float("nan")) for r in runs]),
            "set_ratio": _ci([set_ratio.get(r.name, float("nan")) for r in runs]),
            "n_runs_with_ratio": int(np.sum(~np.isnan(values))) if values else 0,
        }
    iso = {r.meta.get("prompt_index"): r for r in by_mode["isolated"]}
    vis = {r.meta.get("prompt_index"): r for r in by_mode["visible"]}
    shared = sorted(set(iso) & set(vis))
    out["isolated_minus_visible"] = _paired([mean_ratio.get(iso[i].name, np.nan) for i in shared],
                                            [mean_ratio.get(vis[i].name, np.nan) for i in shared])
    toggled_pairs = [(r, _variant_of(experiment, r, "toggled_mask")) for r in by_mode["isolated"]]
    toggled_pairs = [(a, b) for a, b in toggled_pairs if b is not None]
    if toggled_pairs:
        toggled_ratio = _per_run_mean_ratio([b for _, b in toggled_pairs])
        out["isolated_minus_visible_same_tokens"] = _paired([mean_ratio.get(a.name, np.nan) for a, _ in toggled_pairs],
                                                            [toggled_ratio.get(b.name, np.nan) for _, b in toggled_pairs])
    out["shared_minus_unique"] = {}
    for mode, runs in by_mode.items():
        pairs = [(r, _variant_of(experiment, r, "unique_positions")) for r in runs]
        pairs = [(a, b) for a, b in pairs if b is not None]
        if pairs:
            unique_ratio = _per_run_mean_ratio([b for _, b in pairs])
            out["shared_minus_unique"][mode] = _paired([mean_ratio.get(a.name, np.nan) for a, _ in pairs],
                                                       [unique_ratio.get(b.name, np.nan) for _, b in pairs])
            out["modes"][mode]["ratio_unique"] = _ci([unique_ratio.get(b.name, np.nan) for _, b in pairs])
    preference = [np.mean(v) if (v := sibling_preference(r)) else np.nan for r in generated]
    out["sibling_preference"] = _ci(preference)
    out["per_run"] = [{"run": r.name, "mode": r.mode, "prompt": r.prompt, "mean_ratio": mean_ratio.get(r.name)} for r in generated]
    return out


def pruning_metrics(experiment: Experiment) -> dict:
    """Attention each parallel token drew at the step whose forward decided its set's fate."""
    rows = []
    n_sets = n_collapsed = 0
    for run in experiment.generated():
        layout = run.layout
        n_sets += len(layout.parallel_steps())
        for set_step in layout.parallel_steps():
            members = list(layout.step_range(set_step))
            decided_at = sorted({layout.pruned_at[k] for k in members if layout.is_pruned(k)})
            decided = decided_at[0] if decided_at else None  # a set is judged (and pruned) at most once
            if decided is not None:
                n_collapsed += 1
            # attention before pruning: the deciding step's forward (for survivors, every later step)
            steps = [decided] if decided is not None else [s for s in run.attention if s > set_step]
            for step in steps:
                if step not in run.attention:
                    continue
                a = run.attention[step].mean(axis=(0, 1, 2, 3), dtype=np.float64)
                start = layout.step_range(step).start
                reference = [k for k in range(1, start) if not layout.is_hidden(k, step)]
                denominator = a[reference].mean() if reference else np.nan
                for rank, k in enumerate(members):
                    if decided is None:
                        outcome = "survivor"
                    elif layout.is_pruned(k):
                        outcome = "pruned"
                    else:
                        outcome = "kept (top sibling)" if rank == 0 else "kept (not pruned)"
                    rows.append({"run": run.name, "set_step": set_step, "step": step, "physical": k, "rank": rank,
                                 "token": run.token_strings[k], "prob": layout.probs[k], "outcome": outcome,
                                 "relative_attention": float(a[k] / denominator) if denominator > 0 else np.nan,
                                 "prune_score": layout.prune_scores[k] if layout.is_pruned(k) else np.nan})
    df = pd.DataFrame(rows, columns=["run", "set_step", "step", "physical", "rank", "token", "prob", "outcome",
                                     "relative_attention", "prune_score"])
    summary = {}
    for outcome, part in df.groupby("outcome"):
        tokens = part[["run", "physical"]].drop_duplicates()
        summary[outcome] = {**_ci(part["relative_attention"].to_numpy()), "n_tokens": int(len(tokens))}
    config = experiment.config.get("pruning") or {}
    return {
        "strategy": pruning_from_config(config).describe() if config else None,
        "attention_threshold": config.get("attention_threshold"), "n_runs": len(experiment.generated()),
        "n_parallel_sets": n_sets, "n_collapsed_sets": n_collapsed,
        "n_pruned_tokens": int(sum(1 for r in experiment.generated() for i in range(len(r.layout)) if r.layout.is_pruned(i))),
        "summary": summary, "events": _records(df[df["outcome"] != "survivor"]),
    }


def compute_metrics(inputs: ReportInputs) -> dict:
    iso = inputs.isolated
    config = iso.config
    metrics = {
        "model": iso.model,
        "settings": {"prompt": config["prompts"][0], "threshold": config["threshold"], "max_steps": config["max_steps"],
                     "seed": config["seed"], "max_parallel": config["max_parallel"], "next_token_source": config["next_token_source"]},
        "versions": iso.versions,
        "single_run": single_run_metrics(inputs),
        "multi_prompt": multi_prompt_metrics(inputs.multi) if inputs.multi is not None else None,
        "pruning": pruning_metrics(inputs.pruning) if inputs.pruning is not None else None,
        "reference": reference_values(),
    }
    return _clean(metrics)
