"""Holm's correction against values worked by hand."""

from __future__ import annotations

import pytest

from tempo_lens.analysis.multiplicity import holm


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_untested_values_stay_out_of_the_family_and_p_is_capped_at_one():
    assert holm([None, 0.2, float("nan"), 0.6]) == [None, pytest.approx(0.4), None, pytest.approx(0.6)]
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
