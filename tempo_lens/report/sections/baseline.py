"""Comparison to Baseline: the same tokens replayed at unique positions."""

from __future__ import annotations

from ...analysis.metrics.schema import Metrics
from ...analysis.verdicts import point_direction, position_sharing_role
from ..document import Document
from ..text import compared, difference, explains, num, times


def render(doc: Document, metrics: Metrics) -> None:
    single = metrics.single_run
    doc.h(2, "Comparison to Baseline")
    doc.p(
        "The reference report assumed what standard generation would show. Here the baseline is measured: the same token sequence is "
        "replayed teacher-forced with every token at its own position (RoPE sharing ablated through the same hooks, mask unchanged)."
    )
    rows = sorted(single.baseline, key=lambda r: (r.step, r.mode))
    doc.table(
        ["Step", "Mode", "Shared positions (TEMPO)", "Unique positions (baseline)", "Shared - unique"],
        [[r.step, r.mode.upper(), times(r.ratio), times(r.ratio_unique), num(difference(r.ratio, r.ratio_unique))] for r in rows],
    )
    doc.bullets(
        [
            f"**{b.mode.capitalize()} average:** shared {times(b.shared)}, unique {times(b.unique)} "
            f"(difference {num(difference(b.shared, b.unique))}: {point_direction(difference(b.shared, b.unique), 0.0)})"
            for b in single.baseline_averages
        ]
    )
    base = single.baseline_of("isolated")
    if base is None:
        return
    unique_word = point_direction(base.unique)
    role = position_sharing_role(
        point_direction(base.shared), unique_word, point_direction(difference(base.shared, base.unique), 0.0)
    )
    doc.p(
        f"**Conclusion (this run, point estimates):** with unique positions parallel tokens receive {compared(unique_word)} "
        f"({times(base.unique)}), and {explains('position sharing', role)}"
        + ("; the down-weighting is present with ordinary positions too." if unique_word == "less" else ".")
    )
