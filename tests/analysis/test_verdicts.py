"""Each verdict rule on its own, with the cases that made the report contradict its statistics."""

from __future__ import annotations

import pytest

from tempo_lens.analysis.metrics.schema import Interval
from tempo_lens.analysis.verdicts import (
    FUNNEL,
    LESS,
    MINIMAL,
    MORE,
    NARROWS,
    NO_DOWN_WEIGHTING,
    NO_RELIABLE,
    NOT_MEASURED,
    WIDENS,
    accounts_for,
    definition_explains_gap,
    depth_profile,
    direction,
    funnel_reading,
    gap_from_definition,
    interval_direction,
    interval_verdict,
    ordering_reliable,
    point_direction,
    position_sharing_role,
    permutation_confirms,
    within_tolerance,
)


@pytest.mark.parametrize("estimate, null, word", [
    (0.48, 1.0, LESS), (1.2, 1.0, MORE), (1.049, 1.0, MINIMAL), (0.951, 1.0, MINIMAL), (1.05, 1.0, MORE),
    (0.508 - 0.506, 0.0, MINIMAL),  # "sharing gives more attention" rested on this
    (0.06, 0.0, MORE), (-0.06, 0.0, LESS), (None, 1.0, NOT_MEASURED), (float("nan"), 1.0, NOT_MEASURED),
])
def test_point_direction_uses_the_tolerance(estimate, null, word):
    assert point_direction(estimate, null) == word


@pytest.mark.parametrize("ci, word", [
    (Interval(1.052, 0.982, 1.124, n=26), NO_RELIABLE),  # must not read as "more attention"
    (Interval(0.638, 0.554, 0.728, n=13), LESS),
    (Interval(1.796, 1.387, 2.259, n=13), MORE),
    (Interval(0.039, 0.004, 0.089, n=13, null=0.0), MORE),
    (Interval(-0.008, -0.119, 0.089, n=14, null=0.0), NO_RELIABLE),
    (Interval(0.9, None, None, n=1), NO_RELIABLE),  # one value: no interval, no direction
    (Interval(None), NOT_MEASURED), (None, NOT_MEASURED),
])
def test_interval_direction(ci, word):
    assert interval_direction(ci) == word


def test_the_interval_decides_and_the_test_can_only_weaken_it():
    weak = interval_verdict(Interval(0.039, 0.004, 0.089, n=13, p=0.065, null=0.0))
    assert weak.word == MORE and weak.confirmed is False and not weak.reliable
    assert "the permutation test does not confirm it" in weak.phrase() and "0.065" in weak.phrase()
    strong = interval_verdict(Interval(0.036, 0.017, 0.056, n=13, p=0.004, null=0.0))
    assert strong.reliable and strong.phrase() == MORE
    # a small p never turns an interval that contains the null into a direction
    assert interval_verdict(Interval(0.01, -0.01, 0.03, n=13, p=0.01, null=0.0)).phrase() == NO_RELIABLE
    assert permutation_confirms(Interval(1.0, p=None)) is None


def test_minimal_in_size_when_the_whole_interval_is_within_the_tolerance():
    ci = Interval(0.007, 0.003, 0.011, n=13, p=0.005, null=0.0)
    assert within_tolerance(ci) and "minimal in size" in interval_verdict(ci).phrase()
    assert not within_tolerance(Interval(0.03, 0.01, 0.06, n=13, null=0.0))


def test_direction_prefers_the_interval():
    assert direction(Interval(1.052, 0.982, 1.124, n=26)) == NO_RELIABLE
    assert direction(Interval(1.3, None, None, n=1)) == MORE  # no interval: the point rule
    assert direction(estimate=1.02) == MINIMAL


@pytest.mark.parametrize("with_word, without_word, with_value, without_value, verdict", [
    (LESS, MORE, 0.5, 1.06, "accounts for"),
    (LESS, MINIMAL, 0.5, 1.01, "accounts for"),
    (LESS, NO_RELIABLE, 0.5, 0.98, "accounts for"),
    (LESS, LESS, 0.5, 0.8, "accounts for part of"),
    (LESS, LESS, 0.8, 0.5, "does not account for"),
    (MORE, MORE, 1.2, 1.5, NO_DOWN_WEIGHTING),
    (NOT_MEASURED, MORE, None, 1.2, NOT_MEASURED),
])
def test_accounts_for(with_word, without_word, with_value, without_value, verdict):
    assert accounts_for(with_word, without_word, with_value, without_value) == verdict


@pytest.mark.parametrize("shared, unique, diff, role", [
    (LESS, LESS, MORE, "does not cause"), (LESS, LESS, NO_RELIABLE, "does not cause"), (LESS, LESS, MINIMAL, "does not cause"),
    (LESS, LESS, LESS, "contributes to"), (LESS, MINIMAL, LESS, "causes"), (LESS, MORE, MORE, "does not cause"),
    (MORE, MORE, LESS, NO_DOWN_WEIGHTING),  # sharing lowers the ratio, but there is no down-weighting to cause
    (LESS, NOT_MEASURED, LESS, NOT_MEASURED),
])
def test_position_sharing_role(shared, unique, diff, role):
    assert position_sharing_role(shared, unique, diff) == role


@pytest.mark.parametrize("early, middle, late, profile", [
    (1.0, 1.2, 0.5, FUNNEL), (1.10, 1.01, 0.65, NARROWS), (0.5, 0.7, 0.9, WIDENS),
    (1.2, 0.5, 0.9, "highest in the early third, lowest in the middle third"), (1.0, None, 0.5, NOT_MEASURED),
])
def test_depth_profile(early, middle, late, profile):
    assert depth_profile(early, middle, late) == profile


def test_funnel_reading():
    assert funnel_reading(FUNNEL) == "holds"
    assert funnel_reading(NARROWS) == "does not hold; here entropy narrows with depth"
    assert "cannot be checked" in funnel_reading(NOT_MEASURED)


def test_definition_explains_gap():
    assert definition_explains_gap(-0.095, -0.103, 0.005)
    assert not definition_explains_gap(-0.095, 0.103, 0.005)  # opposite sign
    assert not definition_explains_gap(-0.095, -0.06, -0.03)  # not 0.05 larger than the intended gap
    assert not definition_explains_gap(-0.095, None, 0.005)


def test_ordering_reliable():
    assert ordering_reliable(Interval(1.1, 1.0, 1.2, n=5), Interval(0.6, 0.5, 0.7, n=5))
    assert not ordering_reliable(Interval(1.1, 0.6, 1.2, n=5), Interval(0.6, 0.5, 0.7, n=5))


def test_gap_from_definition_across_prompts():
    script = Interval(-0.105, -0.165, -0.049, n=13, p=0.005, null=0.0)
    assert gap_from_definition(script, Interval(0.015, 0.005, 0.026, n=13, p=0.019, null=0.0))
    assert gap_from_definition(script, Interval(-0.005, -0.031, 0.019, n=14, null=0.0))
    assert gap_from_definition(script, Interval(-0.02, -0.03, -0.01, n=14, null=0.0))  # negative, but minimal
    assert not gap_from_definition(script, Interval(-0.2, -0.3, -0.1, n=14, null=0.0))
    assert not gap_from_definition(Interval(-0.1, -0.2, 0.05, n=13, null=0.0), Interval(0.0, -0.1, 0.1, n=13, null=0.0))


def test_distance_reading_one_rule():
    from tempo_lens.analysis.verdicts import DOES_NOT_SURVIVE, NOTHING_TO_EXPLAIN, PARTLY_SURVIVES, SURVIVES, distance_reading

    assert distance_reading(MORE, {"a": MORE, "b": MORE, "c": MORE}) == SURVIVES
    assert distance_reading(MORE, {"a": NO_RELIABLE, "b": LESS}) == DOES_NOT_SURVIVE
    assert distance_reading(MORE, {"a": MORE, "b": NO_RELIABLE}) == PARTLY_SURVIVES
    assert distance_reading(LESS, {"a": MORE}) == NOTHING_TO_EXPLAIN
    assert distance_reading(MORE, {"a": NOT_MEASURED}) == NOT_MEASURED
    assert distance_reading(MORE, {}) == NOT_MEASURED


def test_explained_amount_words():
    from tempo_lens.analysis.verdicts import explained_amount

    assert explained_amount(1.24).startswith("all of it and more")
    assert explained_amount(1.02) == "all of it"
    assert explained_amount(0.6) == "most of it"
    assert explained_amount(0.17) == "part of it"
    assert explained_amount(0.01) == "almost none of it"
    assert explained_amount(-0.16).startswith("none")
    assert explained_amount(None).startswith("nothing")
