"""Holm's step-down correction of a family of p-values (the measures one reading rests on).

With ``m`` tested p-values sorted ascending, ``p_(i)`` becomes ``max over j <= i of min(1, (m - j + 1) p_(j))``:
the family-wise error rate stays at the level for any dependence between the tests. Kept separate from
:mod:`.stats` so that a report can say which family it corrected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values in the input order; None (or NaN) stays None and does not count in the family size."""
    tested = [(i, float(p)) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    adjusted: list[float | None] = [None] * len(pvalues)
    m, running = len(tested), 0.0
    for rank, (i, p) in enumerate(sorted(tested, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
