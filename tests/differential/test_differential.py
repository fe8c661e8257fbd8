"""The differential harness (issue 28): drawn TEMPO runs against the HF eager oracle, plus the invariants.

Fast tier (``make test``): a fixed seed and few examples. Long tier (``make fuzz``, marker ``fuzz``):
fresh seeds for ``TEMPO_FUZZ_SECONDS``, each case printed as it is drawn; a failure is shrunk to a
minimal case, printed by hypothesis with the case's notes.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .cases import cases
from .check import run_case
from .known import unexcused

FAST_EXAMPLES = int(os.environ.get("TEMPO_FUZZ_FAST_EXAMPLES", "40"))
CHUNK = 25  # examples per fresh seed in the long tier
RELAXED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


def check(shelf, case) -> None:
    left = unexcused(run_case(shelf, case))
    assert not left, f"{case}\n" + "\n".join(left)


@settings(derandomize=True, max_examples=FAST_EXAMPLES, deadline=None, suppress_health_check=RELAXED, database=None)
@given(data=st.data())
def test_drawn_runs_match_the_oracle(shelf, data):
    check(shelf, data.draw(cases(shelf.backends), label="case"))


@pytest.mark.fuzz
def test_long_tier(shelf, capsys):
    """Fresh seeds until the time budget is spent; prints every case drawn, and a summary."""
    budget = float(os.environ.get("TEMPO_FUZZ_SECONDS", "0"))
    if budget <= 0:
        pytest.skip("the long tier runs under `make fuzz` (TEMPO_FUZZ_SECONDS sets its budget)")
    drawn: Counter = Counter()
    start = time.monotonic()

    @settings(max_examples=CHUNK, deadline=None, suppress_health_check=RELAXED, database=None)
    @given(data=st.data())
    def chunk(data):
        case = data.draw(cases(shelf.backends), label="case")
        drawn[(case.backend, case.family)] += 1
        with capsys.disabled():
            print(f"{sum(drawn.values()):5d} {time.monotonic() - start:6.1f}s  {case}", flush=True)
        check(shelf, case)

    try:
        while time.monotonic() - start < budget:
            chunk()
    finally:
        with capsys.disabled():
            print(f"\nlong tier: {sum(drawn.values())} cases drawn in {time.monotonic() - start:.0f} s on backends "
                  f"{', '.join(shelf.backends)}; per backend and family: {dict(sorted(drawn.items()))}", flush=True)
