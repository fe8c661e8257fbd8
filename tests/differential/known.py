"""Known, open bugs that other branches are fixing: the checks each one breaks, and where.

A failure is excused only when a known bug covers both the case and the failed check; every other
failure fails the test. Each entry names its issue item; the excused cases are counted and printed at
the end of the session (``tally``). Delete an entry once its fix is merged (``TEMPO_FUZZ_STRICT=1``
ignores them all, to see whether a fix holds).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .check import CHECKS, Run, physical_limit
from .models import family_shape


@dataclass(frozen=True)
class KnownBug:
    item: str  # the issue item, as its fix will be named
    checks: frozenset[str]  # the checks it breaks
    applies: Callable[[Run], bool]  # whether the case is in the bug's region


def _past_window(run: Run) -> bool:
    """Gemma 3 whose physical length passed the sliding window (a batch's rows may share one lane, side by side)."""
    window = family_shape(run.case.family).window
    if window is None:
        return False
    if run.error is not None:
        return run.case.lane_bound() > window
    lengths = run.physical_lengths()
    return (max(lengths) if run.case.api == "generate" else sum(lengths)) > window


def _torch_hook_on_a_norm(run: Run) -> bool:
    return run.case.fast is None and any(kind == "torch" and ".hook_normalized" in name for kind, name in run.case.hooks)


def _past_the_physical_limit(run: Run, learned: bool) -> bool:
    """An IndexError where a lane's physical length can pass the limit (with learned positions, or without)."""
    limit = physical_limit(run.case)
    return (
        limit is not None
        and family_shape(run.case.family).learned_positions == learned
        and run.case.lane_bound() > limit
        and isinstance(run.error, IndexError)
    )


KNOWN_BUGS = (
    KnownBug(
        "issue 28 item 1: Gemma 3 past its sliding window (branch edges)",
        frozenset(CHECKS) - {"model_changed", "hooks_left", "hook_calls", "hook_rows"},
        _past_window,
    ),
    KnownBug(
        "issue 28 item 2: a plain torch hook on a norm hook point never fires with the default speed paths (branch speed)",
        frozenset({"hook_calls", "hook_rows"}),
        lambda run: run.case.backend == "bridge" and _torch_hook_on_a_norm(run),
    ),
    KnownBug(
        "issue 28 item 3: learned positions past the context raise IndexError (branch edges: a clear error before generation)",
        frozenset({"run"}),
        lambda run: _past_the_physical_limit(run, learned=True),
    ),
    KnownBug(  # found by this harness: the same fix ("refuse where a cache has a physical bound") covers it
        "issue 28 'Context' (found here): HookedTransformer with RoPE past n_ctx physical tokens raises IndexError "
        "in its rotary table (branch edges: a clear error before generation)",
        frozenset({"run"}),
        lambda run: _past_the_physical_limit(run, learned=False),
    ),
)

tally: Counter = Counter()  # (item, "excused" or "passed") -> cases


def unexcused(run: Run) -> list[str]:
    """The failures no known bug covers, as text; counts the cases each known bug's region held."""
    strict = os.environ.get("TEMPO_FUZZ_STRICT", "") not in ("", "0")
    left = []
    regions = [bug for bug in KNOWN_BUGS if not strict and bug.applies(run)]
    for failure in run.failures:
        if not any(failure.check in bug.checks for bug in regions):
            left.append(str(failure))
    for bug in regions:
        excused = any(failure.check in bug.checks for failure in run.failures)
        tally[(bug.item, "failed as known" if excused else "passed")] += 1
    return left
