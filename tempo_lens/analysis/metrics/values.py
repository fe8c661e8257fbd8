"""The values ``metrics.json`` is made of: "not measured", an interval across runs, a value per mode."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


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
