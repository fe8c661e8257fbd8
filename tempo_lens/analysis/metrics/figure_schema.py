"""``metrics.json``'s figure data: what the report's figures draw, computed at metrics time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .single_schema import HeadRow


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
