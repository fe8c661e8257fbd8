"""The typed schema of ``metrics.json``: every number the findings report states, and the figures' data.

The metrics are computed once from experiment files (:mod:`.metrics`), written as JSON with
:data:`SCHEMA_VERSION`, and read back into these dataclasses by :func:`read_metrics`; the renderer
(:mod:`.findings`) works only from a :class:`Metrics`. ``None`` stands for "not measured" everywhere.
Definitions of the quantities: ``docs/definitions.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ExperimentFileError
from ...experiment.record import ModelRecord
from ...io.records import MAX_RECORD_BYTES, parse_json, read_bounded
from ...layout import MODES  # noqa: F401  (re-exported for the report modules)
from ...lookup import FindBy
from ..regression import Coefficient, RegressionResult
from .codec import decode, encode

SCHEMA_VERSION = 3  # 3: distance and token-kind controls, regression, per-(layer, head) maps; 2: lattice, heatmap, head grid


def missing(value: Any) -> bool:
    """Not measured: ``None``, or a float NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass
class Interval:
    """A mean of ``n`` values (one per run) with its 95 % studentized-bootstrap interval (None under 4 values) and a
    sign-flip p against ``null`` (None: no test); ``test_direction``: the side of the null its statistic (a ratio's mean
    log) is on; ``n_na``: runs without a measurable value, left out of ``n``."""

    mean: float | None
    lo: float | None = None
    hi: float | None = None
    n: int = 0
    p: float | None = None
    null: float = 1.0
    n_na: int = 0
    test_direction: str | None = None


@dataclass
class NamedInterval:
    key: str
    label: str
    interval: Interval


@dataclass
class ByMode:
    isolated: float | None = None
    visible: float | None = None

    def get(self, mode: str) -> float | None:
        return getattr(self, mode)


@dataclass
class ModelFacts(ModelRecord):
    """The model as the metrics state it: its experiment record with the KV head count always given."""

    n_kv_heads: int = field()  # required here: ``field()`` drops the record's default of None


@dataclass
class Settings:
    prompt: str
    threshold: float
    max_steps: int
    max_parallel: int
    next_token_source: str


@dataclass
class StepRatio:
    mode: str
    step: int
    ratio: float | None
    ratio_no_sink: float | None
    set_ratio: float | None
    n_parallel_keys: int
    n_other_keys: int
    n_parallel_sets: int
    ratio_generated: float | None = None  # "other" = generated, non-parallel keys only
    ratio_matched: float | None = None  # against non-parallel, non-first keys at the same logical distance


@dataclass
class MissingStep:
    mode: str
    step: int
    reason: str


@dataclass
class BaselineRow:
    mode: str
    step: int
    ratio: float | None
    ratio_unique: float | None


@dataclass
class SharedUnique:
    mode: str
    shared: float | None
    unique: float | None


@dataclass
class IntraStep:
    mode: str
    to_siblings: float | None
    to_siblings_later: float | None
    to_self: float | None
    to_earlier: float | None
    n_rows: int


@dataclass
class LayerEntropy:
    layer: int
    entropy: float | None
    group: str
    depth: str


@dataclass
class DepthThird:
    depth: str
    first_layer: int
    last_layer: int
    n_layers: int
    min: float | None
    max: float | None
    mean: float | None


@dataclass
class HeadSpecialisation:
    """How one head spreads its attention: recent and distant keys, entropy, peak, and its group (``docs/definitions.md``)."""

    recent: float | None
    distant: float | None
    entropy: float | None
    max: float | None
    group: str


@dataclass
class LayerHeadRow(HeadSpecialisation):
    """Head specialisation of one (layer, head), not averaged over layers."""

    layer: int
    head: int


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
class HeadRow(HeadSpecialisation):
    """Head specialisation of one head, averaged over the captured layers; ``kv_head`` is the KV head it reads."""

    head: int
    kv_head: int


@dataclass
class KVGroup:
    kv_head: int
    heads: str
    recent: float | None
    distant: float | None
    entropy_min: float | None
    entropy_max: float | None
    groups: str


@dataclass
class LayerRatio:
    layer: int
    ratio: float | None


@dataclass
class StepSummary:
    step: int
    size: int
    first: int
    last: int
    logical_position: int
    tokens: list[str]
    probs: list[float]
    pruned: list[bool]


@dataclass
class RunSummary:
    experiment: str
    name: str
    mode: str
    prompt: str
    text: str | None
    n_prompt_tokens: int
    n_tokens: int
    steps: list[StepSummary]
    capture_shapes: dict[str, list[int]]

    @property
    def parallel_steps(self) -> list[StepSummary]:
        return [s for s in self.steps if s.size >= 2]


@dataclass
class ScriptChainRow:
    """One entry of the reference script's undo chain: its ratio averaged per mode (see ``docs/definitions.md``)."""

    order: int
    definition: str
    isolated: float | None
    visible: float | None


@dataclass
class SingleRun:
    isolated_experiment: str
    visible_experiment: str
    ratios: list[StepRatio]
    missing_steps: list[MissingStep]
    mode_averages: ByMode
    set_ratio_averages: ByMode
    no_sink_averages: ByMode
    toggled_mask_average: float | None
    baseline: list[BaselineRow]
    baseline_averages: list[SharedUnique]
    intra_step: list[IntraStep]
    entropy_step: int | None
    entropy_mode: str
    entropy: list[LayerEntropy]
    depth: list[DepthThird]
    heads: list[HeadRow]
    kv_groups: list[KVGroup]
    layer_ratio: list[LayerRatio]
    sibling_preference: Interval
    script_chain: list[ScriptChainRow]
    runs: list[RunSummary]
    generated_averages: ByMode = field(default_factory=ByMode)
    matched_averages: ByMode = field(default_factory=ByMode)
    layer_heads: list[LayerHeadRow] = field(default_factory=list)
    depth_all_steps: list[DepthThird] = field(default_factory=list)  # isolated run, layer entropy averaged over every step

    run = FindBy[RunSummary]("runs", "mode")
    baseline_of = FindBy[SharedUnique]("baseline_averages", "mode")
    intra = FindBy[IntraStep]("intra_step", "mode")


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


@dataclass
class HeatmapData:
    step: int
    z: list[list[float | None]]
    labels: list[str]
    first: int
    last: int
    title: str


@dataclass
class HeadGridData:
    """Every layer × head of one step of the isolated run: attention ``[layer][head][query][key]``."""

    step: int
    layers: list[int]
    attention: list[list[list[list[float]]]]


@dataclass
class LatticeEdge:
    step: int
    query: int
    key: int
    weight: float
    parallel: bool


@dataclass
class LatticeRun:
    """One run of the token lattice: its layout and token texts, and its attention arcs above the lowest threshold."""

    name: str
    mode: str
    layout: dict[str, Any]
    tokens: list[str]
    edges: list[LatticeEdge]


@dataclass
class EntropyPoint:
    run: str
    mode: str
    step: int
    layer: int
    entropy: float | None


@dataclass
class FigureData:
    """What the report's figures draw, computed at metrics time (the renderer never reruns the analysis)."""

    entropy: list[EntropyPoint] = field(default_factory=list)
    heads_by_step: dict[str, list[HeadRow]] = field(default_factory=dict)
    heads_step: int | None = None
    heatmaps: list[HeatmapData] = field(default_factory=list)
    heatmap_step: int | None = None
    lattice: list[LatticeRun] = field(default_factory=list)
    head_grid: HeadGridData | None = None


@dataclass
class Metrics:
    schema_version: int
    model: ModelFacts
    settings: Settings
    versions: dict[str, str | None]
    single_run: SingleRun
    multi_prompt: MultiPrompt | None
    pruning: Pruning | None
    cross_model: list[CrossModelEntry]
    reference: dict[str, Any]
    figures: FigureData


def metrics_json(metrics: Metrics) -> str:
    return json.dumps(encode(metrics), indent=1, ensure_ascii=False, allow_nan=False)


def parse_metrics(text: bytes | str, source: str = "metrics.json") -> Metrics:
    """Parse and check a metrics file; another schema version is refused with both versions named."""

    data = parse_json(text, source, "re-run `tempo-lens analyze`")
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise ExperimentFileError(
            f"{source} has metrics schema version {version!r}; this tempo_lens reads version {SCHEMA_VERSION}. "
            "Re-run `tempo-lens analyze` to rebuild it."
        )
    try:
        return decode(Metrics, data, source)
    except ExperimentFileError as exc:
        raise ExperimentFileError(f"{source}: {exc}") from None


def read_metrics(path: Path) -> Metrics:
    """A ``metrics.json`` read bounded (:mod:`tempo_lens.io.records`) and checked against the schema."""

    return parse_metrics(read_bounded(path, "metrics.json", "re-run `tempo-lens analyze`", MAX_RECORD_BYTES), str(path))
