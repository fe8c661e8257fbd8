"""``metrics.json``'s across-prompt parts: the multi-prompt intervals and regression, pruning, and one cross-model entry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...lookup import FindBy
from ..regression import Coefficient, RegressionResult
from .single_schema import DepthThird, ModelFacts
from .values import ByMode, Interval, NamedInterval


@dataclass
class HeadCell:
    """One (layer, head) of the localisation map: weight on the first token, and the parallel coefficient with
    distance and token kind held fixed (log factor; ``docs/definitions.md``)."""

    layer: int
    head: int
    sink_share: float | None
    parallel_coef: float | None


RegressionTerm = Coefficient
"""A coefficient of log attention with its 95 % interval from resampling prompts."""


@dataclass
class Regression(RegressionResult):
    """One mode's log attention over (query, key) pairs on parallel, first token, prompt token, log distance, sibling.

    ``raw``: the parallel coefficient with the first token only; ``shares``: how much of it each later term
    explains when added in order (prompt, log distance, sibling). Fitted with ``numpy.linalg.lstsq``.
    """

    mode: str


@dataclass
class ModeIntervals:
    """Across prompts, one value per run: the run's mean over its measured steps."""

    mode: str
    n_runs: int
    n_runs_with_ratio: int
    ratio: Interval
    ratio_no_sink: Interval
    set_ratio: Interval
    script_ratio: Interval
    ratio_unique: Interval | None = None
    ratio_generated: Interval | None = None
    ratio_matched: Interval | None = None


@dataclass
class DepthInterval:
    """Mean layer entropy of one depth third, one value per prompt (isolated runs, averaged over steps)."""

    depth: str
    first_layer: int
    last_layer: int
    entropy: Interval


@dataclass
class PerRun:
    run: str
    mode: str
    prompt: str
    mean_ratio: float | None


@dataclass
class MultiPrompt:
    experiment: str
    n_prompts: int
    modes: list[ModeIntervals]
    paired: list[NamedInterval]
    sibling_preference: Interval
    depth: list[DepthInterval]
    per_run: list[PerRun]
    regression: list[Regression] = field(default_factory=list)
    head_map: list[HeadCell] = field(default_factory=list)  # isolated runs
    # the executive summary's measures, corrected: intervals at ``summary_level`` (Bonferroni), p-values Holm-adjusted
    summary: list[NamedInterval] = field(default_factory=list)
    summary_level: float | None = None
    causal: dict[str, Any] | None = None  # knock-out, key attention, head measures: typed by .causal_schema.read_causal

    regression_of = FindBy[Regression]("regression", "mode")
    mode = FindBy[ModeIntervals]("modes", "mode")

    def pair(self, key: str) -> Interval | None:
        return next((p.interval for p in self.paired if p.key == key), None)

    def measured(self, measures: Sequence[tuple[str, str]]) -> list[tuple[str, str, Interval]]:
        """``(mode, label, interval)`` for every mode and ``(label, ModeIntervals field)`` of ``measures`` it has."""
        return [(m.mode, label, ci) for m in self.modes for label, name in measures if (ci := getattr(m, name)) is not None]


@dataclass
class PruningOutcome:
    outcome: str
    attention: Interval
    n_tokens: int


@dataclass
class PruningEvent:
    run: str
    set_step: int
    step: int
    physical: int
    rank: int
    token: str
    prob: float | None
    outcome: str
    relative_attention: float | None
    prune_score: float | None


@dataclass
class Pruning:
    experiment: str
    strategy: dict[str, Any] | None
    n_runs: int
    n_parallel_sets: int
    n_collapsed_sets: int
    n_pruned_tokens: int
    outcomes: list[PruningOutcome]
    pruned_minus_kept_top: Interval | None
    events: list[PruningEvent]

    outcome = FindBy[PruningOutcome]("outcomes", "outcome")


@dataclass
class CrossModelEntry:
    """One model of the cross-model study, summarised from that model's own ``metrics.json``."""

    folder: str
    model: ModelFacts
    exp1_ratio: ByMode
    exp1_script_ratio: ByMode
    head_groups: dict[str, int]
    depth: list[DepthThird]
    multi: MultiPrompt | None
