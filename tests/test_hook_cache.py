"""The hooks' one cache: a value per key of what it depends on, the least recently used dropped past its size."""

from __future__ import annotations

import pytest
import torch

from tempo_lens.hook_cache import HookCache, Same


def test_a_value_is_made_once_per_key_and_the_least_recently_used_goes_first():
    made: list[str] = []
    cache: HookCache[str, str] = HookCache(size=2)

    def get(key: str) -> str:
        return cache.get(key, lambda: made.append(key) or key.upper())

    assert [get("a"), get("b"), get("a")] == ["A", "B", "A"] and made == ["a", "b"]
    get("c")  # evicts b (a was used more recently)
    assert len(cache) == 2 and get("a") == "A" and made == ["a", "b", "c"]
    get("b")
    assert made == ["a", "b", "c", "b"]


def test_same_compares_by_identity_and_keeps_the_object():
    mask = torch.zeros(2, 2, dtype=torch.bool)
    cache: HookCache[Same, int] = HookCache(size=1)
    assert cache.get(Same(mask), lambda: 1) == 1
    assert cache.get(Same(mask), lambda: 2) == 1  # the same tensor: a hit
    assert cache.get(Same(mask.clone()), lambda: 3) == 3  # equal values, another tensor: a miss
    assert Same(mask) != Same(mask.clone()) and Same(mask) == Same(mask)


def test_a_cache_holds_at_least_one_value():
    with pytest.raises(ValueError, match="at least one"):
        HookCache(size=0)
