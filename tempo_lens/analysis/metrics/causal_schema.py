"""The schema of the multi-prompt section's causal part (``MultiPrompt.causal`` in ``metrics.json``).

The knock-out (what removing attention to earlier parallel keys does to the next token, against a
matched control and the sink), per-key attention of parallel and matched keys (the figure that shows
why arithmetic-mean ratios and the log-attention regression differ), and head measures over every step
and prompt. :class:`~.schema.MultiPrompt` holds it as plain JSON (``causal``), so its schema lives here
without an import cycle; :func:`read_causal` types it. Definitions: ``docs/definitions.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...lookup import FindBy
from .codec import decode
from .schema import Interval, MultiPrompt


@dataclass
class ArmOutcome:
    """One knock-out arm across prompts: each run's mean KL (nats) over its measured steps, and its share of steps
    whose kept set changed."""

    arm: str
    kl: Interval
    kept_changed: Interval


@dataclass
class KnockoutBlock:
    """One mode and layer block: KL(parallel) / KL(matched) per run, as a geometric mean with its interval on log
    ratios; the per-run difference; and each arm's KL and kept-set change share."""

    mode: str
    block: str
    layers: list[int]
    n_runs: int  # runs with a step where both the parallel and the matched arm were measured
    n_ratio_unmeasurable: int  # of those, runs whose matched KL is below the floor (no ratio)
    ratio: Interval
    difference: Interval
    arms: list[ArmOutcome]

    arm = FindBy[ArmOutcome]("arms", "arm")


@dataclass
class KnockoutMetrics:
    """The knock-out of the multi-prompt runs; ``status`` is empty when it was measured, else why not."""

    status: str
    seconds: float | None = None
    n_forwards: int = 0
    cpu_seconds: float | None = None
    seed: int = 0
    blocks: list[KnockoutBlock] = field(default_factory=list)
    sampled_prompts: int | None = None  # the knock-out replayed the runs of this many prompts, spread over the set (None: all)

    def block(self, mode: str, block: str = "all") -> KnockoutBlock | None:
        return next((b for b in self.blocks if b.mode == mode and b.block == block), None)


@dataclass
class KeyAttention:
    """Per-key attention (mean over layers, heads and the step's queries) of one kind of key, over every measured step
    of one mode's runs: its arithmetic and geometric means and a histogram on log10 bins."""

    mode: str
    kind: str  # "parallel" or "matched" (non-parallel, non-first keys at the same logical distance)
    n_keys: int
    arithmetic_mean: float | None
    geometric_mean: float | None
    median: float | None
    log10_edges: list[float]
    counts: list[int]


@dataclass
class HeadMeasureRow:
    """One (layer, head) over the isolated runs: each measure's mean across runs with its 95 % interval."""

    layer: int
    head: int
    n_runs: int
    distance: float | None
    distance_lo: float | None
    distance_hi: float | None
    sink: float | None
    sink_lo: float | None
    sink_hi: float | None
    entropy: float | None
    entropy_lo: float | None
    entropy_hi: float | None

    def measure(self, name: str) -> tuple[float | None, float | None, float | None]:
        return getattr(self, name), getattr(self, f"{name}_lo"), getattr(self, f"{name}_hi")


@dataclass
class StandoutHead:
    measure: str
    direction: str  # "highest" or "lowest"
    layer: int
    head: int


@dataclass
class HeadMeasures:
    mode: str
    n_runs: int
    heads: list[HeadMeasureRow]
    standout: list[StandoutHead]

    def head(self, layer: int, head: int) -> HeadMeasureRow | None:
        return next((h for h in self.heads if h.layer == layer and h.head == head), None)


@dataclass
class Causal:
    knockout: KnockoutMetrics
    key_attention: list[KeyAttention] = field(default_factory=list)
    head_measures: HeadMeasures | None = None


def read_causal(multi: MultiPrompt | None) -> Causal | None:
    """The causal part of a multi-prompt section, typed (None when the metrics predate it or no multi-prompt ran)."""
    raw: Any = getattr(multi, "causal", None) if multi is not None else None
    return None if raw is None else decode(Causal, raw, "multi_prompt.causal")
