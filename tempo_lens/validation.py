"""Generic checks of settings, shared by every config (generation, pruning, experiments): a clear error or the value."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import InvalidInputError


def check_int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    """An integer in ``[minimum, maximum]`` (``max_steps``, ``max_parallel``, ...), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__") and not isinstance(value, bool):
            value = value.__index__()  # numpy integers
        else:
            raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidInputError(f"{name} {value} is far beyond anything sensible (at most {maximum:,}); check the value")
    return int(value)


def check_finite(value: Any, name: str) -> float:
    """A real, finite number (an int or float, numpy's included; not a bool, text, NaN or an infinity), or a clear error."""
    try:
        number = float(value) if hasattr(value, "__float__") and not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):  # a tensor of many numbers
        number = math.nan
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    return number


def check_token_ids(model: Any, ids: Sequence[int]) -> list[int]:
    """``ids`` when every one is in the model's vocabulary (the rule of every prompt and replayed layout)."""
    vocab = int(model.cfg.d_vocab)
    bad = [int(i) for i in ids if not 0 <= i < vocab]
    if bad:
        raise InvalidInputError(f"token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})")
    return list(ids)


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidInputError(f"unknown {name} {value!r}; use one of {', '.join(choices)}")
    return str(value)


def reject_unknown(keys: Iterable[str], allowed: Iterable[str], where: str) -> None:
    """Name unknown keys, each with its closest allowed key as a hint."""
    allowed = sorted(allowed)
    bad = sorted(set(keys) - set(allowed))
    if not bad:
        return
    hints = []
    for key in bad:
        close = difflib.get_close_matches(key, allowed, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise InvalidInputError(
        f"unknown key{'s' if len(bad) > 1 else ''} {', '.join(hints)} in {where}; allowed: {', '.join(allowed)}"
    )
