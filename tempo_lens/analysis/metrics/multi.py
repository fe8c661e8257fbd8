"""The multi-prompt and pruning sections' metrics: one value per run, intervals across prompts.

Multi-prompt: every run contributes the mean of its measured per-step ratios (runs with no measured
step are counted as n/a, never as 0); paired differences pair a run with the other mode's run of
the same prompt, or with its own control replay (same tokens); the sibling preference is one value per
prompt. Pruning: the attention each parallel token drew in the forward pass that decided its set's
fate, and the pruned siblings against the kept top sibling of the same set at that same step; each run's
tokens and sets are averaged to one value per run before any interval.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ...capture import CapturedRun
from ...experiment import Experiment, pruning_from_config
from ...layout import Mode
from .. import mode_averages, ratio_table
from ..head_map import head_map
from ..ratios import measurable
from ..reference_script import script_average
from ..regression import attention_regression, pair_table
from ..stats import holm
from .causal import SavedKnockout, knockout_ratios, log_ratio_interval, saved_knockout
from .inputs import experiment_name
from .measures import fnum, interval, mean_matched_by_run, mean_ratio_by_run, paired, records, run_depth, sibling_preference
from .schema import (
    MODES,
    DepthInterval,
    HeadCell,
    Interval,
    ModeIntervals,
    MultiPrompt,
    NamedInterval,
    PerRun,
    Pruning,
    PruningEvent,
    PruningOutcome,
    Regression,
)

PAIRED_LABELS = {
    "isolated_minus_visible": "Isolated - visible (separate generations)",
    "same_tokens": "Isolated - visible (same tokens, mask toggled)",
    "shared_minus_unique_isolated": "Shared - unique positions (isolated)",
    "shared_minus_unique_visible": "Shared - unique positions (visible)",
    "script_isolated_minus_visible": "Isolated - visible, reference script's definition (separate generations)",
}


def _variants(experiment: Experiment, variant: str) -> dict[str | None, CapturedRun]:
    """The experiment's ``variant`` replays by the name of the run each replays (``meta.source_run``)."""
    return {run.meta.get("source_run"): run for run in experiment.variant(variant)}


def _depth_intervals(runs: list[CapturedRun], n_layers: int) -> list[DepthInterval]:
    """Per depth third, the mean layer entropy of each run (averaged over its captured steps), across runs."""
    per_run = [table.set_index("depth") for run in runs if (table := run_depth(run, n_layers)) is not None]
    if not per_run:
        return []
    first = per_run[0]
    return [
        DepthInterval(
            depth=str(d),
            first_layer=int(first.loc[d, "first_layer"]),
            last_layer=int(first.loc[d, "last_layer"]),
            entropy=interval([p.loc[d, "mean"] for p in per_run if d in p.index], test=False),
        )
        for d in first.index
    ]


def _mode_intervals(
    mode: str,
    runs: list[CapturedRun],
    ratio: dict,
    no_sink: dict,
    set_ratio: dict,
    unique: dict[str | None, CapturedRun],
    unique_ratio: dict,
    generated: dict,
    matched: dict,
    script: dict,
) -> ModeIntervals:
    values = [ratio.get(r.name, np.nan) for r in runs]
    with_unique = [r for r in runs if r.name in unique]
    return ModeIntervals(
        mode=mode,
        n_runs=len(runs),
        n_runs_with_ratio=int(np.sum(~np.isnan(values))) if values else 0,
        ratio=interval(values),
        ratio_no_sink=interval([no_sink.get(r.name, np.nan) for r in runs]),
        set_ratio=interval([set_ratio.get(r.name, np.nan) for r in runs]),
        script_ratio=interval([script[r.name] for r in runs]),
        ratio_unique=interval([unique_ratio.get(unique[r.name].name, np.nan) for r in with_unique]) if with_unique else None,
        ratio_generated=interval([generated.get(r.name, np.nan) for r in runs]),
        ratio_matched=interval([matched.get(r.name, np.nan) for r in runs]),
    )


def _preference_by_prompt(runs: list[CapturedRun]) -> list[float]:
    """One sibling preference per prompt: each run's mean over its steps and sets, averaged over the prompt's runs.

    A prompt's isolated and visible runs share their prompt, so they are one unit, not two. NaN for a prompt
    none of whose runs has a measurable value.
    """
    by_prompt: dict[object, list[float]] = {}
    for run in runs:
        values = sibling_preference(run)
        by_prompt.setdefault(run.meta.get("prompt_index", run.name), []).append(float(np.mean(values)) if values else np.nan)
    return [_run_mean(v) for v in by_prompt.values()]


def regression_metrics(mode: str, runs: list[CapturedRun], ci: float = 0.95) -> Regression | None:
    """The (query, key) regression of one mode's runs (:mod:`tempo_lens.analysis.regression`), None when unmeasurable."""
    result = attention_regression(pair_table(runs), ci=ci) if runs else None
    if result is None:
        return None
    return Regression(**vars(result), mode=mode)


SUMMARY_MODE: Mode = "isolated"
SUMMARY_RATIOS = ("ratio", "ratio_no_sink", "ratio_generated", "ratio_matched", "ratio_unique")
SUMMARY_PAIR = "shared_minus_unique_isolated"
SUMMARY_TERMS = {
    "regression_parallel": "Regression: parallel coefficient",
    "regression_raw": "Regression: raw parallel coefficient",
    "knockout_isolated": "Knock-out: KL(parallel) / KL(matched), isolated",
    "knockout_visible": "Knock-out: KL(parallel) / KL(matched), visible",
}
FAMILY_ALPHA = 0.05


def _summary_family(
    values: dict[str, list[float]],
    pair: tuple[list[float], list[float]] | None,
    runs: list[CapturedRun],
    knockout: dict[str, list[float]] | None = None,
) -> tuple[list[NamedInterval], float | None]:
    """The executive summary's measures, corrected for how many it reads: intervals at ``1 - 0.05 / m`` (Bonferroni)
    and p-values Holm-adjusted over the measures that have a test (the regression's coefficients have none).

    ``knockout``: per mode, each run's knock-out ratio (:func:`~.causal.knockout_ratios`), read by the summary too."""
    knockout = knockout or {}
    m = len(values) + (pair is not None) + 2 + len(knockout)  # + the regression's parallel coefficient and its raw effect
    level = 1 - FAMILY_ALPHA / m
    family = {key: interval(v, ci=level) for key, v in values.items()}
    for mode, ratios in knockout.items():
        family[f"knockout_{mode}"] = log_ratio_interval(ratios, ci=level)
    if pair is not None:
        family[SUMMARY_PAIR] = paired(*pair, ci=level)
    reg = regression_metrics(SUMMARY_MODE, runs, ci=level)
    if reg is None:
        return [], None
    coef, raw = reg.coefficient("parallel"), reg.raw
    for key, c in (("regression_parallel", coef), ("regression_raw", raw)):
        if c is not None and c.estimate is not None:
            family[key] = Interval(mean=c.estimate, lo=c.lo, hi=c.hi, n=reg.n_runs, null=0.0)
    adjusted = holm([ci.p for ci in family.values()])
    labels = {**PAIRED_LABELS, **SUMMARY_TERMS}
    return [
        NamedInterval(key, labels.get(key, key), dataclasses.replace(ci, p=fnum(p)))
        for (key, ci), p in zip(family.items(), adjusted)
    ], level


def multi_prompt_metrics(experiment: Experiment, saved: SavedKnockout | None = None) -> MultiPrompt:
    """The multi-prompt section without its causal part; ``saved``: the experiment's knock-out when the caller has read
    it (:func:`~.causal.saved_knockout`), whose ratios join the executive summary's family."""
    generated = experiment.generated()
    by_mode = {m: [r for r in generated if r.mode == m] for m in MODES}
    averages = mode_averages(ratio_table(generated)) if generated else pd.DataFrame(columns=["run", "ratio", "set_ratio"])
    ratio = dict(zip(averages["run"], averages["ratio"]))
    set_ratio = dict(zip(averages["run"], averages["set_ratio"]))
    no_sink = mean_ratio_by_run(generated, exclude_first=True)
    unique = _variants(experiment, "unique_positions")
    toggled = _variants(experiment, "toggled_mask")
    unique_ratio = mean_ratio_by_run(list(unique.values()))
    toggled_ratio = mean_ratio_by_run(list(toggled.values()))
    generated_only = mean_ratio_by_run(generated, other="generated")
    matched = mean_matched_by_run(generated)
    script = {r.name: script_average(r) for r in generated}
    modes = [
        _mode_intervals(m, runs, ratio, no_sink, set_ratio, unique, unique_ratio, generated_only, matched, script)
        for m, runs in by_mode.items()
    ]

    iso = {r.meta.get("prompt_index"): r for r in by_mode["isolated"]}
    vis = {r.meta.get("prompt_index"): r for r in by_mode["visible"]}
    both = sorted(set(iso) & set(vis), key=str)
    pairs = {
        "isolated_minus_visible": paired(
            [ratio.get(iso[i].name, np.nan) for i in both], [ratio.get(vis[i].name, np.nan) for i in both]
        ),
        "script_isolated_minus_visible": paired([script[iso[i].name] for i in both], [script[vis[i].name] for i in both]),
    }
    with_toggle = [r for r in by_mode["isolated"] if r.name in toggled]
    if with_toggle:
        pairs["same_tokens"] = paired(
            [ratio.get(r.name, np.nan) for r in with_toggle],
            [toggled_ratio.get(toggled[r.name].name, np.nan) for r in with_toggle],
        )
    for mode, runs in by_mode.items():
        with_unique = [r for r in runs if r.name in unique]
        if with_unique:
            pairs[f"shared_minus_unique_{mode}"] = paired(
                [ratio.get(r.name, np.nan) for r in with_unique],
                [unique_ratio.get(unique[r.name].name, np.nan) for r in with_unique],
            )
    iso_runs = by_mode[SUMMARY_MODE]
    iso_unique = [r for r in iso_runs if r.name in unique]
    columns = {"ratio": ratio, "ratio_no_sink": no_sink, "ratio_generated": generated_only, "ratio_matched": matched}
    summary_values = {key: [values.get(r.name, np.nan) for r in iso_runs] for key, values in columns.items()}
    summary_pair = None
    if iso_unique:
        summary_values["ratio_unique"] = [unique_ratio.get(unique[r.name].name, np.nan) for r in iso_unique]
        summary_pair = (
            [ratio.get(r.name, np.nan) for r in iso_unique],
            [unique_ratio.get(unique[r.name].name, np.nan) for r in iso_unique],
        )
    knockout = knockout_ratios((saved_knockout(experiment) if saved is None else saved)[0])
    summary, summary_level = _summary_family(summary_values, summary_pair, iso_runs, knockout) if iso_runs else ([], None)
    preference = _preference_by_prompt(generated)
    return MultiPrompt(
        experiment=experiment_name(experiment),
        n_prompts=len(experiment.config.get("prompts") or []),
        modes=modes,
        paired=[NamedInterval(key, PAIRED_LABELS[key], value) for key, value in pairs.items()],
        sibling_preference=interval(preference),
        depth=_depth_intervals(by_mode["isolated"], int(experiment.model["n_layers"])),
        per_run=[PerRun(run=r.name, mode=r.mode, prompt=r.prompt, mean_ratio=fnum(ratio.get(r.name))) for r in generated],
        regression=[reg for m, runs in by_mode.items() if (reg := regression_metrics(m, runs)) is not None],
        head_map=records(head_map(by_mode["isolated"]), HeadCell),
        summary=summary,
        summary_level=summary_level,
    )


def _relative_attention(run: CapturedRun, step: int) -> np.ndarray:
    """Each key's attention at ``step`` (mean over layers, heads, queries) over the mean of earlier keys but the first."""
    a = run.attention[step].mean(axis=(0, 1, 2, 3), dtype=np.float64)
    start = run.layout.step_range(step).start
    reference = [k for k in range(1, start) if not run.layout.is_hidden(k, step)]
    denominator = a[reference].mean() if reference else np.nan
    return a / denominator if measurable(denominator) else np.full_like(a, np.nan)


def _outcome(layout, k: int, rank: int, decided: int | None) -> str:
    if decided is None:
        return "survivor"
    if layout.is_pruned(k):
        return "pruned"
    return "kept (top sibling)" if rank == 0 else "kept (not pruned)"


def _pruning_rows(run: CapturedRun) -> tuple[list[dict], list[float], list[float]]:
    """Event rows of one run, and per collapsed set the pruned siblings' mean and the kept top sibling at that step."""
    layout, rows, pruned_means, kept_top = run.layout, [], [], []
    for set_step in layout.parallel_steps():
        members = list(layout.step_range(set_step))
        decided_at = sorted({layout.pruned_at[k] for k in members if layout.is_pruned(k)})
        decided = decided_at[0] if decided_at else None  # a set is judged (and pruned) at most once
        steps = [decided] if decided is not None else [s for s in run.step_ids if s > set_step]
        for step in (s for s in steps if s in run.attention):
            relative = _relative_attention(run, step)
            for rank, k in enumerate(members):
                rows.append(
                    dict(
                        run=run.name,
                        set_step=set_step,
                        step=step,
                        physical=k,
                        rank=rank,
                        token=run.token_strings[k],
                        prob=layout.probs[k],
                        outcome=_outcome(layout, k, rank, decided),
                        relative_attention=relative[k],
                        prune_score=layout.prune_scores[k] if layout.is_pruned(k) else np.nan,
                    )
                )
            if decided is not None:
                pruned_means.append(float(np.mean([relative[k] for k in members if layout.is_pruned(k)])))
                kept_top.append(float(relative[members[0]]))
    return rows, pruned_means, kept_top


def _run_mean(values: list[float]) -> float:
    """The mean of one run's measurable values (NaN when it has none): the run's one value for the intervals."""
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def pruning_metrics(experiment: Experiment) -> Pruning:
    """Relative attention per outcome and pruned - kept top, each one value per run (its mean) before any interval."""
    rows: list[dict] = []
    pruned_means: list[float] = []
    kept_top: list[float] = []
    n_collapsed = 0
    for run in experiment.generated():
        r, p, k = _pruning_rows(run)
        rows += r
        n_collapsed += len(k)
        if k:
            pruned_means.append(_run_mean(p))
            kept_top.append(_run_mean(k))
    df = pd.DataFrame(
        rows,
        columns=["run", "set_step", "step", "physical", "rank", "token", "prob", "outcome", "relative_attention", "prune_score"],
    )
    outcomes = [
        PruningOutcome(
            outcome=str(name),
            attention=interval(_run_mean(list(v)) for _, v in part.groupby("run", sort=False)["relative_attention"]),
            n_tokens=int(len(part[["run", "physical"]].drop_duplicates())),
        )
        for name, part in df.groupby("outcome", sort=True)
    ]
    config = experiment.config.get("pruning") or {}
    generated = experiment.generated()
    return Pruning(
        experiment=experiment_name(experiment),
        strategy=pruning_from_config(config).describe() if config else None,
        n_runs=len(generated),
        n_parallel_sets=sum(len(r.layout.parallel_steps()) for r in generated),
        n_collapsed_sets=n_collapsed,
        n_pruned_tokens=sum(1 for r in generated for i in range(len(r.layout)) if r.layout.is_pruned(i)),
        outcomes=outcomes,
        pruned_minus_kept_top=paired(pruned_means, kept_top) if kept_top else None,
        events=records(df[df["outcome"] != "survivor"], PruningEvent),
    )
