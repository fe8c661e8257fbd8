"""Number and text formatting shared by the report's sections (no judgements here: those are in :mod:`.verdicts`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ..analysis.metrics.schema import Interval, missing
from ..analysis.verdicts import NO_DOWN_WEIGHTING, has_interval, interval_verdict

T = TypeVar("T")


def num(value: Any, digits: int = 3) -> str:
    return "n/a" if missing(value) else f"{value:.{digits}f}"


def times(value: Any) -> str:
    return "n/a" if missing(value) else f"{value:.3f}x"


def points(value: Any) -> str:
    """A ratio difference in points (hundredths of a ratio)."""
    return "n/a" if missing(value) else f"{abs(value) * 100:.1f} points"


def p_text(p: float | None) -> str:
    return "n/a" if missing(p) else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def p_clause(p: float | None) -> str:
    """``p = 0.065`` or ``p < 0.001``."""
    text = p_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def ci_text(ci: Interval | None, digits: int = 3) -> str:
    """``mean [lo, hi] (n = N)``; the interval is left out with fewer than two values; runs without a measurable
    value are counted: ``(n = N; n/a in k of N + k runs)``, or ``n/a in k of k runs`` when none has one."""
    if ci is None:
        return "n/a"
    if missing(ci.mean):
        return f"n/a in {ci.n_na} of {ci.n_na} runs" if ci.n_na else "n/a"
    count = f"n = {ci.n}" + (f"; n/a in {ci.n_na} of {ci.n + ci.n_na} runs" if ci.n_na else "")
    if not has_interval(ci):
        return f"{num(ci.mean, digits)} ({count})"
    return f"{num(ci.mean, digits)} [{num(ci.lo, digits)}, {num(ci.hi, digits)}] ({count})"


def ci_with_verdict(ci: Interval | None) -> str:
    """``mean [lo, hi] (n = N), p = P: word`` as the multi-prompt tables and bullets state it."""
    if ci is None or missing(ci.mean):
        return "not measured" + (f" ({ci_text(ci)})" if ci is not None and ci.n_na else "")
    test = "" if missing(ci.p) else f", {p_clause(ci.p)}"
    return f"{ci_text(ci)}{test}: {interval_verdict(ci).phrase()}"


def mean_of(values: Iterable[Any]) -> float | None:
    values = [v for v in values if not missing(v)]
    return sum(values) / len(values) if values else None


def difference(a: Any, b: Any) -> float | None:
    return None if missing(a) or missing(b) else a - b


def layer_list(layers: Iterable[int]) -> str:
    """``[2, 16, 17, 18, 20]`` -> ``2, 16-18, 20``."""
    layers = sorted(int(l) for l in layers)
    parts, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            parts.append(str(start) if start == layer else f"{start}-{layer}")
            start = None
    return ", ".join(parts) if parts else "none"


def value_range(values: Sequence[Any], digits: int = 2) -> str:
    values = [v for v in values if not missing(v)]
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    if round(lo, digits) == round(hi, digits):
        return num(lo, digits)
    return f"{num(lo, digits)} to {num(hi, digits)}" if lo < 0 else f"{num(lo, digits)}-{num(hi, digits)}"


def visible_text(text: str) -> str:
    """Whitespace a reader cannot see made visible: newline ⏎, tab ⇥ (one line of Markdown stays one line)."""
    return str(text).replace("\r", "").replace("\n", "⏎").replace("\t", "⇥")


def code(text: str) -> str:
    """``text`` as a Markdown code span, with a fence longer than any backtick run inside it."""
    text = visible_text(text)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def parameters(n: int | None) -> str:
    if n is None:
        return "n/a"
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    return f"{n / 1e6:.0f} M" if n >= 1e6 else f"{n:,}"


def compared(word: str, other: str = "non-parallel tokens") -> str:
    """A direction word as a comparison: "less attention than X", "about as much attention as X", ..."""
    if word in ("less", "more"):
        return f"{word} attention than {other}"
    if word == "minimal":
        return f"about as much attention as {other} (within the tolerance)"
    return f"attention not measured against {other}"


def explains(subject: str, verdict: str) -> str:
    """``subject`` + a verdict of :func:`~.verdicts.accounts_for` / :func:`~.verdicts.position_sharing_role`."""
    if verdict == NO_DOWN_WEIGHTING:
        return f"parallel tokens are not down-weighted here, so there is nothing for {subject} to explain"
    return f"{subject} {verdict} the down-weighting"


def by_measured(items: Iterable[T], value: Callable[[T], float | None], *, reverse: bool = False) -> list[T]:
    """The ``items`` whose ``value`` is not None, sorted by it (stable; ``reverse``: largest first)."""
    keyed = [(v, item) for item in items if (v := value(item)) is not None]
    keyed.sort(key=lambda pair: pair[0], reverse=reverse)
    return [item for _, item in keyed]
