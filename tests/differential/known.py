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

from .check import Run


@dataclass(frozen=True)
class KnownBug:
    item: str  # the issue item, as its fix will be named
    checks: frozenset[str]  # the checks it breaks
    applies: Callable[[Run], bool]  # whether the case is in the bug's region


# Empty while no known bug is open: items 1 and 3 (edges) and 2 (speed) are merged, and the harness holds them.
# An entry: KnownBug("issue N item M: what (branch B)", frozenset({"hook_calls", ...}), lambda run: <the region>).
KNOWN_BUGS: tuple[KnownBug, ...] = ()

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
