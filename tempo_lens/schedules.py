"""Selection thresholds that change over the steps of a generation.

Progress is ``t = s / max(1, max_steps - 1)`` for step ``s``. A schedule goes from the start value ``a``
to a final value ``b``:

- constant: ``thr = a``;
- Bezier: ``thr = a + (b - a) * (3(1-t)^2 t p1 + 3(1-t) t^2 p2 + t^3)`` (control points ``p1, p2``);
- ReLU: ``thr = a`` while ``t < knee``, then linear to ``b`` at ``t = 1``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from .errors import InvalidInputError


def check_threshold(value: object, name: str = "threshold") -> float:
    """A selection threshold in (0, 1], or a clear error."""
    if isinstance(value, bool):
        raise InvalidInputError(f"{name} must be a number in (0, 1], got {value!r}")
    if not isinstance(value, (int, float)):
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be a number in (0, 1], got {value!r}") from None
    value = float(value)
    if math.isnan(value) or not (0.0 < value <= 1.0):
        raise InvalidInputError(f"{name} must be in (0, 1], got {value!r}; e.g. 0.1 keeps every token with probability >= 10 %")
    return value


@dataclass(frozen=True)
class ThresholdSchedule:
    """A threshold per step: ``kind`` is ``constant``, ``bezier`` or ``relu``."""

    start: float
    kind: Literal["constant", "bezier", "relu"] = "constant"
    final: float | None = None
    p1: float = 0.2
    p2: float = 0.8
    knee: float = 0.5

    def __post_init__(self) -> None:
        check_threshold(self.start, "threshold")
        if self.kind not in ("constant", "bezier", "relu"):
            raise InvalidInputError(f"unknown threshold schedule {self.kind!r}; use constant, bezier or relu")
        if self.kind != "constant":
            if self.final is None:
                raise InvalidInputError(f"a {self.kind} schedule needs a final threshold")
            check_threshold(self.final, "final threshold")
        if self.kind == "relu" and not (0.0 <= self.knee <= 1.0):
            raise InvalidInputError(f"relu knee must be in [0, 1], got {self.knee}")
        if self.kind == "bezier" and not all(isinstance(p, (int, float)) and 0.0 <= p <= 1.0 for p in (self.p1, self.p2)):
            raise InvalidInputError(
                f"bezier control points must be numbers in [0, 1] (so the threshold stays between "
                f"start and final), got {self.p1!r}, {self.p2!r}"
            )

    def at(self, step: int, max_steps: int) -> float:
        t = step / max(1, max_steps - 1)
        a, b = self.start, self.final if self.final is not None else self.start
        if self.kind == "constant":
            return a
        if self.kind == "bezier":
            shape = 3 * (1 - t) ** 2 * t * self.p1 + 3 * (1 - t) * t**2 * self.p2 + t**3
            return a + (b - a) * shape
        if t < self.knee:
            return a
        return a + (b - a) * ((t - self.knee) / (1 - self.knee) if self.knee < 1 else 1.0)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str | None:
        """The CLI form that :meth:`parse` reads back (None for a constant threshold)."""
        if self.kind == "bezier":
            return f"bezier:{self.final!r}:{self.p1!r}:{self.p2!r}"
        if self.kind == "relu":
            return f"relu:{self.final!r}:{self.knee!r}"
        return None

    @classmethod
    def parse(cls, start: float, text: str | None) -> ThresholdSchedule:
        """From the CLI form ``bezier:FINAL[:P1:P2]`` or ``relu:FINAL:KNEE`` (None: constant)."""
        if not text:
            return cls(start=check_threshold(start))
        parts = text.split(":")
        try:
            kind, numbers = parts[0], [float(p) for p in parts[1:]]
        except ValueError:
            raise InvalidInputError(
                f"cannot read threshold schedule {text!r}; use bezier:FINAL[:P1:P2] or relu:FINAL:KNEE"
            ) from None
        if kind == "bezier" and len(numbers) in (1, 3):
            p1, p2 = (numbers[1], numbers[2]) if len(numbers) == 3 else (0.2, 0.8)
            return cls(start=check_threshold(start), kind="bezier", final=numbers[0], p1=p1, p2=p2)
        if kind == "relu" and len(numbers) == 2:
            return cls(start=check_threshold(start), kind="relu", final=numbers[0], knee=numbers[1])
        raise InvalidInputError(f"cannot read threshold schedule {text!r}; use bezier:FINAL[:P1:P2] or relu:FINAL:KNEE")
