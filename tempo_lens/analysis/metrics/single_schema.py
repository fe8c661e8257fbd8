"""``metrics.json``'s single-run part: the model and settings, and every number of the single-prompt pair."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...experiment.record import ModelRecord
from ...lookup import FindBy
from .values import ByMode, Interval


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
