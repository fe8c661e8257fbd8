"""Report rows in order of a measured value: the rows whose value is None (not measured) are left out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def by_measured(items: Iterable[T], value: Callable[[T], float | None], *, reverse: bool = False) -> list[T]:
    """The ``items`` whose ``value`` is not None, sorted by it (stable; ``reverse``: largest first)."""
    keyed = [(v, item) for item in items if (v := value(item)) is not None]
    keyed.sort(key=lambda pair: pair[0], reverse=reverse)
    return [item for _, item in keyed]
