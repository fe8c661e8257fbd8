"""A captured run from what a user passes (a CapturedRun, or a result generated with ``capture=True``), and its layers."""

from __future__ import annotations

from typing import Any

from ..capture import CapturedRun, as_run
from ..errors import InvalidInputError


def as_captured(run: Any) -> CapturedRun:
    """A :class:`CapturedRun` from itself or from a GenerationResult generated with ``capture=True``."""
    if isinstance(run, CapturedRun) or (getattr(run, "capture", None) is not None and hasattr(run, "layout")):
        return as_run(run)
    raise InvalidInputError(
        f"this view needs captured attention; pass a CapturedRun or generate(..., capture=True) (got {type(run).__name__})"
    )


def layer_position(run: CapturedRun, layer: int) -> int:
    """Where model layer ``layer`` sits in the run's captured arrays, or a clear error."""
    if layer not in run.layers:
        raise InvalidInputError(f"layer {layer} was not captured (captured: {list(run.layers)}); capture it or pick another")
    return list(run.layers).index(layer)
