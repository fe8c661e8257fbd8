"""The multi-prompt section's causal part: the saved knock-out, per-key attention, head measures over every step.

Every interval resamples one value per run (:func:`~.measures.interval`). The knock-out ratio of a mode and
block is the geometric mean of the runs' KL(parallel) / KL(matched): its interval and sign-flip p are taken on
the log ratios and mapped back, so a run whose ratio is 4 and one whose ratio is 1/4 cancel. Definitions:
``docs/definitions.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...capture import CapturedRun
from ...experiment import Experiment
from ...layout import MODES
from ..distance import distance_match
from ..head_measures import HEAD_MEASURES, head_intervals, run_head_measures
from ..knockout import ARMS, StepKnockout, summarise_run
from ..knockout_store import DEFAULT_BLOCKS, KnockoutFile, RunKnockoutRecord, experiment_digest, read_knockout
from .causal_schema import (
    ArmOutcome,
    Causal,
    HeadMeasureRow,
    HeadMeasures,
    KeyAttention,
    KnockoutBlock,
    KnockoutMetrics,
    StandoutHead,
)
from .codec import clean
from .measures import fnum, interval
from .schema import Interval

N_BINS = 30
BLOCK_ORDER = {block: i for i, block in enumerate(DEFAULT_BLOCKS)}
STANDOUT = (("distance", "highest"), ("distance", "lowest"), ("sink", "highest"), ("entropy", "lowest"))


def log_ratio_interval(ratios: Sequence[float], ci: float = 0.95) -> Interval:
    """The geometric mean of positive ``ratios`` with its bootstrap interval (level ``ci``) and sign-flip p, both on the logs."""
    logs = [math.log(r) for r in ratios if r is not None and r > 0 and math.isfinite(r)]
    on_logs = interval(logs, null=0.0, ci=ci)

    def back(x: float | None) -> float | None:
        return None if x is None else fnum(math.exp(x))

    return Interval(mean=back(on_logs.mean), lo=back(on_logs.lo), hi=back(on_logs.hi), n=on_logs.n, p=on_logs.p, null=1.0)


def _steps(run: RunKnockoutRecord, block: str) -> list[StepKnockout]:
    return [
        StepKnockout(s.step, s.arm, block, s.n_keys, np.nan if s.kl is None else s.kl, s.kept_changed, s.distance_gap)  # type: ignore[arg-type]
        for s in run.blocks.get(block, [])
    ]


def knockout_block(mode: str, block: str, layers: list[int], runs: Sequence[RunKnockoutRecord]) -> KnockoutBlock:
    """One mode and block across ``runs``: one value per run (its mean over the steps where both arms were measured)."""
    summaries = [s for run in runs if (s := summarise_run(_steps(run, block), block)) is not None]  # type: ignore[arg-type]
    arms = [
        ArmOutcome(
            arm=arm,
            kl=interval([s.mean_kl[arm] for s in summaries if arm in s.mean_kl], test=False),
            kept_changed=interval([s.kept_changed_share[arm] for s in summaries if arm in s.kept_changed_share], test=False),
        )
        for arm in ARMS
    ]
    ratios = [s.kl_ratio for s in summaries if s.kl_ratio is not None]
    return KnockoutBlock(
        mode=mode,
        block=block,
        layers=layers,
        n_runs=len(summaries),
        n_ratio_unmeasurable=len(summaries) - len(ratios),
        ratio=log_ratio_interval(ratios),
        difference=interval([s.kl_difference for s in summaries], null=0.0),
        arms=arms,
    )


SavedKnockout = tuple[KnockoutFile | None, str]  # the record, or None and the reason there is none to use


def saved_knockout(experiment: Experiment) -> SavedKnockout:
    """The knock-out saved beside the experiment's runs, read and checked once for every measure that uses it."""
    if experiment.path is None:
        return None, "not run (the experiment was not read from a folder)"
    return read_knockout(experiment.path, experiment_digest(experiment.path))


def knockout_ratios(record: KnockoutFile | None) -> dict[str, list[float]]:
    """Per mode, each run's KL(parallel) / KL(matched) on every layer (block ``"all"``) from a saved knock-out; empty
    when there is none."""
    if record is None:
        return {}
    ratios: dict[str, list[float]] = {}
    for mode in MODES:
        summaries = [summarise_run(_steps(run, "all"), "all") for run in record.runs if run.mode == mode]
        values = [s.kl_ratio for s in summaries if s is not None and s.kl_ratio is not None]
        if values:
            ratios[mode] = values
    return ratios


def knockout_from_file(record: KnockoutFile) -> KnockoutMetrics:
    blocks = [
        knockout_block(mode, block, layers, runs)
        for mode in MODES
        if (runs := [r for r in record.runs if r.mode == mode])
        for block, layers in sorted(record.layers.items(), key=lambda item: BLOCK_ORDER.get(item[0], len(BLOCK_ORDER)))
    ]
    return KnockoutMetrics(
        status="",
        seconds=record.seconds,
        n_forwards=record.n_forwards,
        seed=record.seed,
        blocks=blocks,
        cpu_seconds=record.cpu_seconds,
        sampled_prompts=len(record.settings["prompts"]) if "prompts" in record.settings else None,
    )


def knockout_metrics(saved: SavedKnockout) -> KnockoutMetrics:
    """A saved knock-out (:func:`saved_knockout`) summarised; its status says why when there is none."""
    record, reason = saved
    return KnockoutMetrics(status=reason) if record is None else knockout_from_file(record)


def _key_values(runs: Sequence[CapturedRun]) -> tuple[list[float], list[float]]:
    """Per measured step: each distance-matched parallel key's attention, and each of their matched keys' (once per step)."""
    parallel: list[float] = []
    matched: list[float] = []
    for run in runs:
        for step in run.step_ids:
            match = distance_match(run.layout, step)
            if match.n_matched == 0:
                continue
            a = np.asarray(run.attention[step]).mean(axis=(0, 1, 2, 3), dtype=np.float64)[: match.first]
            parallel += a[match.parallel_keys].tolist()
            matched += a[match.matches.any(axis=0)].tolist()
    return parallel, matched


def key_attention(mode: str, runs: Sequence[CapturedRun]) -> list[KeyAttention]:
    """Parallel and matched keys' attention of one mode, summarised on shared log10 bins (values at or below 0 left out)."""
    values = dict(zip(("parallel", "matched"), _key_values(runs)))
    positive = {k: np.asarray([x for x in v if x > 0]) for k, v in values.items()}
    pooled = np.concatenate(list(positive.values()))
    if len(pooled) == 0:
        return []
    lo, hi = np.log10(pooled.min()), np.log10(pooled.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, N_BINS + 1)
    out = []
    for kind, x in positive.items():
        counts = np.histogram(np.log10(x), bins=edges)[0] if len(x) else np.zeros(N_BINS, dtype=int)
        out.append(
            KeyAttention(
                mode=mode,
                kind=kind,
                n_keys=len(x),
                arithmetic_mean=fnum(x.mean()) if len(x) else None,
                geometric_mean=fnum(np.exp(np.log(x).mean())) if len(x) else None,
                median=fnum(np.median(x)) if len(x) else None,
                log10_edges=[float(e) for e in edges],
                counts=[int(c) for c in counts],
            )
        )
    return out


def head_measures(runs: Sequence[CapturedRun], mode: str = "isolated") -> HeadMeasures | None:
    """Distance, sink share and entropy per (layer, head) over every step of each run, with intervals over runs."""
    per_run = [run_head_measures(run.attention, run.layout, run.mask) for run in runs if run.step_ids]  # type: ignore[arg-type]
    if not per_run:
        return None
    table = head_intervals(per_run)
    rows = [HeadMeasureRow(**{k: clean(row[k]) for k in HeadMeasureRow.__dataclass_fields__}) for row in table.to_dict("records")]
    standout = []
    for measure, direction in STANDOUT:
        bound = f"{measure}_lo" if direction == "highest" else f"{measure}_hi"
        ranked = table.sort_values(bound, ascending=direction == "lowest").head(3)
        standout += [StandoutHead(measure, direction, int(r["layer"]), int(r["head"])) for r in ranked.to_dict("records")]
    return HeadMeasures(mode=mode, n_runs=len(per_run), heads=rows, standout=standout)


def causal_metrics(experiment: Experiment, saved: SavedKnockout | None = None) -> dict:
    """The causal part of the multi-prompt section, as the JSON ``MultiPrompt.causal`` holds (``saved``: the
    experiment's knock-out when the caller has read it, :func:`saved_knockout`)."""
    generated = experiment.generated()
    by_mode = {m: [r for r in generated if r.mode == m] for m in MODES}
    causal = Causal(
        knockout=knockout_metrics(saved_knockout(experiment) if saved is None else saved),
        key_attention=[k for m, runs in by_mode.items() for k in key_attention(m, runs)],
        head_measures=head_measures(by_mode["isolated"]),
    )
    return clean(causal)


__all__ = ["HEAD_MEASURES", "causal_metrics", "head_measures", "key_attention", "knockout_block", "log_ratio_interval"]
