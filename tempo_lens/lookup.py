"""Lookup methods of dataclass records: the first item of a list field whose key field matches a value.

``run = FindBy[RunSummary]("runs", "mode")`` in a class body gives ``record.run("isolated")``: the first of
``record.runs`` whose ``mode`` is ``"isolated"``, or None. The search is written once for every such method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class FindBy(Generic[T]):
    """A method looking up the first of the list field ``items`` whose field ``key`` equals its argument (None: none)."""

    def __init__(self, items: str, key: str):
        self.items, self.key = items, key

    def __get__(self, record: Any, owner: type | None = None) -> Callable[[Any], T | None]:
        def find(value: Any) -> T | None:
            return next((item for item in getattr(record, self.items) if getattr(item, self.key) == value), None)

        return find
