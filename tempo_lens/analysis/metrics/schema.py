"""The typed schema of ``metrics.json``: every number the findings report states, and the figures' data.

The metrics are computed once from experiment files (:mod:`.metrics`), written as JSON with
:data:`SCHEMA_VERSION`, and read back into these dataclasses by :func:`read_metrics`; the renderer
(:mod:`.findings`) works only from a :class:`Metrics`. ``None`` stands for "not measured" everywhere.
Definitions of the quantities: ``docs/definitions.md``.

The records live by concept: :mod:`.values` (intervals, per-mode values), :mod:`.single_schema`,
:mod:`.multi_schema` (across prompts, pruning, cross-model) and :mod:`.figure_schema`; every name is importable
from here, where :class:`Metrics` gathers them with its JSON reader and writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ExperimentFileError
from ...io.records import MAX_RECORD_BYTES, parse_json, read_bounded
from ...layout import MODES
from .codec import decode, encode
from .figure_schema import EntropyPoint, FigureData, HeadGridData, HeatmapData, LatticeEdge, LatticeRun
from .multi_schema import (
    CrossModelEntry,
    DepthInterval,
    HeadCell,
    ModeIntervals,
    MultiPrompt,
    PerRun,
    Pruning,
    PruningEvent,
    PruningOutcome,
    Regression,
    RegressionTerm,
)
from .single_schema import (
    BaselineRow,
    DepthThird,
    HeadRow,
    HeadSpecialisation,
    IntraStep,
    KVGroup,
    LayerEntropy,
    LayerHeadRow,
    LayerRatio,
    MissingStep,
    ModelFacts,
    RunSummary,
    ScriptChainRow,
    Settings,
    SharedUnique,
    SingleRun,
    StepRatio,
    StepSummary,
)
from .values import ByMode, Interval, NamedInterval, missing

SCHEMA_VERSION = 3  # 3: distance and token-kind controls, regression, per-(layer, head) maps; 2: lattice, heatmap, head grid


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


__all__ = [
    "BaselineRow",
    "ByMode",
    "CrossModelEntry",
    "DepthInterval",
    "DepthThird",
    "EntropyPoint",
    "FigureData",
    "HeadCell",
    "HeadGridData",
    "HeadRow",
    "HeadSpecialisation",
    "HeatmapData",
    "Interval",
    "IntraStep",
    "KVGroup",
    "LatticeEdge",
    "LatticeRun",
    "LayerEntropy",
    "LayerHeadRow",
    "LayerRatio",
    "MODES",
    "Metrics",
    "MissingStep",
    "ModeIntervals",
    "ModelFacts",
    "MultiPrompt",
    "NamedInterval",
    "PerRun",
    "Pruning",
    "PruningEvent",
    "PruningOutcome",
    "Regression",
    "RegressionTerm",
    "RunSummary",
    "SCHEMA_VERSION",
    "ScriptChainRow",
    "Settings",
    "SharedUnique",
    "SingleRun",
    "StepRatio",
    "StepSummary",
    "metrics_json",
    "missing",
    "parse_metrics",
    "read_metrics",
]
