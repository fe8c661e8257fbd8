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

from .cases import Case, cases
from .check import Run, run_case
from .known import unexcused
from .models import family_shape

FAST_EXAMPLES = int(os.environ.get("TEMPO_FUZZ_FAST_EXAMPLES", "30"))
CHUNK = 25  # examples per fresh seed in the long tier
RELAXED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


def check(shelf, case) -> Run:
    run = run_case(shelf, case)
    left = unexcused(run)
    assert not left, "\n".join(run.notes + left)
    return run


@settings(derandomize=True, max_examples=FAST_EXAMPLES, deadline=None, suppress_health_check=RELAXED, database=None)
@given(data=st.data())
def test_drawn_runs_match_the_oracle(shelf, data):
    check(shelf, data.draw(cases(shelf.backends), label="case"))


def _case(family: str, backend: str, prompts, **settings) -> Case:
    base = dict(
        dtype="float32",
        fast=None,
        api="generate",
        mode="isolated",
        threshold=1e-5,
        max_parallel=8,
        max_steps=8,
        pruning=None,
        capture=False,
        hooks=(),
    )
    return Case(family=family, backend=backend, prompts=tuple((n, 0) for n in prompts), **{**base, **settings})


# The examples of issue 28 on the tiny models, and what the harness found beside them (rows sharing a lane, the hooked
# rotary table): each must match the oracle, or, where one prompt's worst case passes a physical limit, be refused
# before generation.
ISSUE_EXAMPLES = {
    "gemma3-past-window-capture": _case("gemma3", "bridge", [90], threshold=0.05, max_parallel=4, capture=True),
    "gemma3-past-window-batch": _case("gemma3", "bridge", [90, 20], api="generate_batch", threshold=0.05, max_parallel=4),
    "gemma3-past-window-hooked": _case("gemma3", "hooked", [90], threshold=0.05, max_parallel=4, capture=True),
    "torch-hook-on-a-norm": _case("llama", "bridge", [6], max_steps=3, hooks=(("torch", "blocks.0.ln1.hook_normalized"),)),
    "gpt2-physical-past-n_positions": _case("gpt2", "bridge", [100], hooks=(("tl", "hook_embed"),)),
    # every row fits n_positions (48 physical tokens each), the lane they share does not (144)
    "gpt2-rows-sharing-a-lane-past-n_positions": _case(
        "gpt2", "bridge", [40, 40, 40], api="generate_batch", threshold=1.0, hooks=(("tl", "hook_embed"),)
    ),
    "hooked-rope-physical-past-n_ctx": _case("llama", "hooked", [100], hooks=(("tl", "hook_embed"),)),
}


@pytest.mark.parametrize("name", list(ISSUE_EXAMPLES))
def test_issue_examples(shelf, name):
    case = ISSUE_EXAMPLES[name]
    if case.backend not in shelf.backends:
        pytest.skip(f"backend {case.backend} is not available here")
    check(shelf, case)


def outcome(run: Run) -> list[str]:
    """What a passing case exercised, for the long tier's summary."""
    if run.error is not None:
        return ["refused before generation"]
    shape, lengths = family_shape(run.case.family), run.physical_lengths()
    found = ["matched the oracle"]
    if shape.window is not None and max(lengths) > shape.window:
        found.append("past the sliding window")
    if max(lengths) > shape.n_ctx:
        found.append("physical length past n_ctx")
    if any(max(r.layout.step_sizes(), default=1) > 1 for r in run.results):
        found.append("parallel steps")
    return found


@pytest.mark.fuzz
@pytest.mark.timeout(float(os.environ.get("TEMPO_FUZZ_SECONDS", "0") or 0) + 900)  # the budget, the last chunk, a shrink
def test_long_tier(shelf, capsys):
    """Fresh seeds until the time budget is spent; prints every case drawn, and a summary."""
    budget = float(os.environ.get("TEMPO_FUZZ_SECONDS", "0"))
    if budget <= 0:
        pytest.skip("the long tier runs under `make fuzz` (TEMPO_FUZZ_SECONDS sets its budget)")
    drawn: Counter = Counter()
    outcomes: Counter = Counter()
    start = time.monotonic()

    @settings(max_examples=CHUNK, deadline=None, suppress_health_check=RELAXED, database=None)
    @given(data=st.data())
    def chunk(data):
        case = data.draw(cases(shelf.backends), label="case")
        drawn[(case.backend, case.family)] += 1
        with capsys.disabled():
            print(f"{sum(drawn.values()):5d} {time.monotonic() - start:6.1f}s  {case}", flush=True)
        outcomes.update(outcome(check(shelf, case)))

    try:
        while time.monotonic() - start < budget:
            chunk()
    finally:
        with capsys.disabled():
            print(
                f"\nlong tier: {sum(drawn.values())} cases drawn in {time.monotonic() - start:.0f} s on backends "
                f"{', '.join(shelf.backends)}; per backend and family: {dict(sorted(drawn.items()))}; "
                f"outcomes: {dict(sorted(outcomes.items()))}",
                flush=True,
            )
