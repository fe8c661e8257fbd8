"""The one cache hooks keep: values derived for a forward, each under a key naming everything it depends on.

The layers of one forward ask a hook for the same derived tensor (a mask on the device, rotary tables at
the wanted positions), so a hook set computes it once per forward and keeps it in a :class:`HookCache`. A
key names everything the value depends on (the layout's ``version``, query and key counts, dtype, device,
...), so a hit is always right; the cache holds the last ``size`` keys and drops the least recently used,
so its memory is bounded by what one forward asks for. A key part compared by identity (a mask a caller
built) is wrapped in :class:`Same`, which holds the object, so its identity cannot be reused while cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, eq=False)
class Same:
    """A key part equal only to the same object (held, so its ``id`` is not reused while the key is cached)."""

    obj: Any

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


class HookCache(Generic[K, V]):
    """The values of the last ``size`` keys; :meth:`get` computes a missing one and evicts the least recently used."""

    def __init__(self, size: int = 1):
        if size < 1:
            raise ValueError(f"a hook cache holds at least one value, got size {size}")
        self.size = size
        self._values: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The value under ``key``, made by ``make()`` on a miss."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = make()
        self._values[key] = value
        while len(self._values) > self.size:
            self._values.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._values)
