"""Every judgement the findings report makes, one small rule per function (``docs/definitions.md``, "Verdicts").

- Direction from a point estimate (single-run tables): "less" / "more" than the null value, or
  "minimal" when the estimate is within :data:`TOLERANCE` of it.
- Direction from an interval (multi-prompt, or any value that has one): the 95 % bootstrap interval
  decides; "no reliable difference" when it contains the null value. The paired sign-flip permutation
  test can only weaken that word: when the interval excludes the null but ``p >= ALPHA`` the verdict
  says the test does not confirm it. A whole interval inside the tolerance is "minimal" in size.
- "accounts for", "does not cause", the funnel (entropy depth) pattern: each from direction words.
- Whether "more attention without the first token" survives the distance and token-kind controls, and
  how much of the raw regression effect a term explains: each from direction words or one number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .metrics.schema import Interval
from .stats import direction_from_interval

TOLERANCE = 0.05  # |estimate - null| below this is "minimal" (ratio units: 5 points of a ratio)
ALPHA = 0.05  # a permutation p below this confirms an interval's direction

LESS, MORE, MINIMAL = "less", "more", "minimal"
NO_RELIABLE = "no reliable difference"
NO_DOWN_WEIGHTING = "has no down-weighting to explain"
NOT_MEASURED = "not measured"
FUNNEL = "funnel"
SURVIVES, PARTLY_SURVIVES, DOES_NOT_SURVIVE = "survives", "partly survives", "does not survive"
NOTHING_TO_EXPLAIN = "has no 'more' to explain"
NARROWS, WIDENS = "narrows with depth", "widens with depth"


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def point_direction(estimate: float | None, null: float = 1.0, tolerance: float = TOLERANCE) -> str:
    """ "less" / "more" than ``null``; "minimal" when ``|estimate - null| < tolerance``; "not measured" for None/NaN."""
    if _missing(estimate):
        return NOT_MEASURED
    if abs(estimate - null) < tolerance:
        return MINIMAL
    return LESS if estimate < null else MORE


def has_interval(interval: Interval | None) -> bool:
    return interval is not None and not _missing(interval.lo) and not _missing(interval.hi)


def interval_direction(interval: Interval | None) -> str:
    """ "less" / "more" when the whole interval is on one side of its null value, else "no reliable difference"."""
    if interval is None or _missing(interval.mean):
        return NOT_MEASURED
    return direction_from_interval(interval.lo, interval.hi, interval.null)


def permutation_confirms(interval: Interval | None, alpha: float = ALPHA) -> bool | None:
    """Whether the permutation test rejects the null at ``alpha`` on the interval's side (None when no test was run).

    A ratio's test acts on log ratios; when their mean is on the other side of the null, it does not confirm.
    """
    if interval is None or _missing(interval.p):
        return None
    return interval.p < alpha and tested_side_agrees(interval)


def tested_side_agrees(interval: Interval | None) -> bool:
    """The tested statistic is on the interval's side of the null (or its side is not known)."""
    if interval is None:
        return True
    side = interval.test_direction
    return side is None or interval_direction(interval) not in (LESS, MORE) or side == interval_direction(interval)


def within_tolerance(interval: Interval | None, tolerance: float = TOLERANCE) -> bool:
    """The whole interval lies within ``tolerance`` of its null value: any difference is minimal in size."""
    return has_interval(interval) and max(abs(interval.lo - interval.null), abs(interval.hi - interval.null)) < tolerance


@dataclass(frozen=True)
class Verdict:
    """A direction word and the two qualifiers an interval can add to it."""

    word: str
    confirmed: bool | None = None  # permutation test agrees (None: no test, or nothing to confirm)
    small: bool = False  # the whole interval is within the tolerance
    p: float | None = None
    opposite: bool = False  # the test's statistic (mean log ratio) is on the other side of the null

    @property
    def reliable(self) -> bool:
        return self.word in (LESS, MORE) and self.confirmed is not False

    def phrase(self) -> str:
        if self.word not in (LESS, MORE):
            return self.word
        text = self.word
        if self.confirmed is False and self.opposite:
            text += f", though the mean log ratio is on the other side of the null (permutation p = {self.p:.3f})"
        elif self.confirmed is False:
            text += f", though the permutation test does not confirm it (p = {self.p:.3f}, not below {ALPHA})"
        if self.small:
            text += f", but minimal in size (whole interval within {TOLERANCE} of the null)"
        return text


def interval_verdict(interval: Interval | None) -> Verdict:
    """The interval's direction, weakened when the permutation test does not confirm it."""
    word = interval_direction(interval)
    if word not in (LESS, MORE):
        return Verdict(word)
    return Verdict(
        word,
        confirmed=permutation_confirms(interval),
        small=within_tolerance(interval),
        p=interval.p,
        opposite=not tested_side_agrees(interval),
    )


def direction(interval: Interval | None = None, estimate: float | None = None, null: float = 1.0) -> str:
    """From the interval when it has one (interval rule), else from the point estimate (tolerance rule)."""
    if has_interval(interval):
        return interval_direction(interval)
    if interval is not None and estimate is None:
        estimate, null = interval.mean, interval.null
    return point_direction(estimate, null)


def accounts_for(
    with_word: str, without_word: str, with_value: float | None, without_value: float | None, null: float = 1.0
) -> str:
    """Does leaving a confound out remove the down-weighting?

    "accounts for" when the ratio is "less" with the confound and not "less" without it; "accounts for
    part of" when it stays "less" but moves closer to the null; else "does not account for".
    """
    if NOT_MEASURED in (with_word, without_word):
        return NOT_MEASURED
    if with_word != LESS:
        return NO_DOWN_WEIGHTING
    if without_word != LESS:
        return "accounts for"
    if abs(without_value - null) < abs(with_value - null):
        return "accounts for part of"
    return "does not account for"


def position_sharing_role(shared_word: str, unique_word: str, shared_minus_unique_word: str) -> str:
    """What shared positions do to the down-weighting, from the unique-position control.

    Only when the ratio with shared positions is "less" is there a down-weighting to explain. Then
    "does not cause": sharing does not lower the ratio; "contributes to": it does and parallel tokens
    get less attention at unique positions too; "causes": it does and they do not.
    """
    if NOT_MEASURED in (shared_word, unique_word, shared_minus_unique_word):
        return NOT_MEASURED
    if shared_word != LESS:
        return NO_DOWN_WEIGHTING
    if shared_minus_unique_word != LESS:
        return "does not cause"
    return "contributes to" if unique_word == LESS else "causes"


def depth_profile(early: float | None, middle: float | None, late: float | None) -> str:
    """Entropy by depth thirds: "funnel" (middle highest, late lowest), "narrows/widens with depth", or other."""
    if early is None or middle is None or late is None or any(_missing(v) for v in (early, middle, late)):
        return NOT_MEASURED
    values = {"early": early, "middle": middle, "late": late}
    highest, lowest = max(values, key=values.__getitem__), min(values, key=values.__getitem__)
    if highest == "middle" and lowest == "late":
        return FUNNEL
    if early > middle > late:
        return NARROWS
    if early < middle < late:
        return WIDENS
    return f"highest in the {highest} third, lowest in the {lowest} third"


def funnel_reading(profile: str) -> str:
    """The sentence ending for the reference's funnel claim."""
    if profile == NOT_MEASURED:
        return "cannot be checked (fewer than three depth thirds were measured)"
    if profile == FUNNEL:
        return "holds"
    return f"does not hold; here entropy {profile}" if profile in (NARROWS, WIDENS) else f"does not hold; entropy is {profile}"


def definition_explains_gap(
    reference_gap: float | None, script_gap: float | None, intended_gap: float | None, tolerance: float = TOLERANCE
) -> bool:
    """The reference's isolated - visible gap comes from its script's definition when this data, under that
    definition, gives a gap of the same sign (beyond the tolerance) that is at least ``tolerance`` larger in
    size than the gap under the intended definition."""
    if script_gap is None or intended_gap is None or any(_missing(v) for v in (reference_gap, script_gap, intended_gap)):
        return False
    sign = point_direction(script_gap, 0.0, tolerance)
    return (
        sign in (LESS, MORE)
        and sign == point_direction(reference_gap, 0.0, tolerance)
        and abs(script_gap) - abs(intended_gap) >= tolerance
    )


def gap_from_definition(script_gap: Interval | None, intended_gap: Interval | None) -> bool:
    """Across prompts: the isolated - visible gap is reliably negative under the reference script's definition
    (as the reference reported it) while under the intended definition it is not reliably negative, or minimal."""
    if interval_direction(script_gap) != LESS or interval_direction(intended_gap) == NOT_MEASURED:
        return False
    return interval_direction(intended_gap) != LESS or within_tolerance(intended_gap)


def ordering_reliable(higher: Interval | None, lower: Interval | None) -> bool:
    """Two intervals do not overlap, ``higher`` above ``lower`` (a conservative check of an ordering claim)."""
    return has_interval(higher) and has_interval(lower) and higher.lo > lower.hi


def distance_reading(no_sink: str, controls: dict[str, str]) -> str:
    """Does "parallel tokens get more attention once the first token is left out" survive distance and token kind?

    ``no_sink``: the direction word of the ratio without the first token; ``controls``: the direction word of
    each control (generated-only ratio, distance-matched ratio, regression coefficient), by name. Only a
    "more" needs explaining. It **survives** when every control still says "more", **does not survive**
    when none does, and **partly survives** otherwise.
    """
    if no_sink == NOT_MEASURED or not controls or NOT_MEASURED in controls.values():
        return NOT_MEASURED
    if no_sink != MORE:
        return NOTHING_TO_EXPLAIN
    n_more = sum(word == MORE for word in controls.values())
    if n_more == len(controls):
        return SURVIVES
    return DOES_NOT_SURVIVE if n_more == 0 else PARTLY_SURVIVES


def explained_amount(share: float | None, tolerance: float = TOLERANCE) -> str:
    """A regression term's share of the raw parallel effect in words (shares add up to the whole change)."""
    if _missing(share):
        return "nothing (the term is constant here, so it is not fitted)"
    if share > 1 + tolerance:
        return "all of it and more (with it, the sign of the parallel effect reverses)"
    if share >= 1 - tolerance:
        return "all of it"
    if share >= 0.5:
        return "most of it"
    if share >= tolerance:
        return "part of it"
    if share > -tolerance:
        return "almost none of it"
    return "none; it makes the parallel effect larger"
