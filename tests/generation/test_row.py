"""One row's bookkeeping: the check that stops generation on non-finite logits."""

from __future__ import annotations

import pytest
import torch

from tempo_lens.errors import NonFiniteLogitsError
from tempo_lens.generation.row import check_finite


@pytest.mark.parametrize(("value", "counts"), [(float("nan"), "1 NaN, 0 inf"), (float("inf"), "0 NaN, 1 inf"), (float("-inf"), "0 NaN, 1 inf")])
@pytest.mark.parametrize("where", [(0, 0), (2, 7), (4, 999)])
def test_one_non_finite_value_anywhere_stops_the_row(value, counts, where):
    logits = torch.randn(5, 1000) * 30
    check_finite(logits, "step 3's forward")  # finite: nothing happens
    logits[where] = value
    with pytest.raises(NonFiniteLogitsError, match=rf"step 3's forward gave non-finite logits \({counts} of 5000 values"):
        check_finite(logits, "step 3's forward")


def test_opposite_infinities_are_caught_too():
    logits = torch.zeros(2, 10)
    logits[0, 1], logits[1, 2] = float("inf"), float("-inf")
    with pytest.raises(NonFiniteLogitsError, match="0 NaN, 2 inf"):
        check_finite(logits, "the prompt's forward")
