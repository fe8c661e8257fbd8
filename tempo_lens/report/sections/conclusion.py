"""Conclusion: the readings that survive the controls, in order."""

from __future__ import annotations

from ...analysis.metrics.schema import Metrics
from ...analysis.verdicts import NOT_MEASURED, definition_explains_gap, point_direction
from ..document import Document
from ..readings import COVERS, reading_sentence, script_gap, sharing_verdict, sink_verdict
from ..text import ci_with_verdict, compared, difference, explains, mean_of, num, points, times, value_range


def render(doc: Document, metrics: Metrics) -> None:
    single, multi, reference = metrics.single_run, metrics.multi_prompt, metrics.reference
    doc.h(2, "Conclusion")
    ratios = [r.ratio for r in single.ratios if r.ratio is not None]
    if not ratios:
        doc.p("No step had an earlier parallel set, so this run cannot speak to parallel-token attention.")
        return
    lead = reading_sentence(single, multi).removeprefix("So, ")
    points_ = [
        lead[:1].upper() + lead[1:],
        f"The reference's reading (uncontrolled ratio, intended definition): parallel tokens receive "
        f"{compared(point_direction(mean_of(ratios)))} in this run ({value_range(ratios, 3)}x per step).",
    ]
    sink, where = sink_verdict(single, multi)
    points_.append(
        f"Leaving out the first token (attention sink): {where}, {explains('the first token', sink)} "
        f"(without it: isolated {times(single.no_sink_averages.isolated)}, visible {times(single.no_sink_averages.visible)} in this run)."
    )
    role, where = sharing_verdict(single, multi)
    base = single.baseline_of("isolated")
    if role != NOT_MEASURED and base:
        points_.append(
            f"{explains('position sharing', role).capitalize()} ({where}; this run: unique positions {times(base.unique)}, "
            f"shared {times(base.shared)})."
        )
    diff = difference(single.mode_averages.isolated, single.mode_averages.visible)
    word = point_direction(diff, 0.0)
    points_.append(
        f"Isolation changes the single-run ratio by {points(diff)} ({word}); it acts within a step, where it is measured directly."
    )
    if multi and multi.mode("isolated"):
        iso = multi.mode("isolated")
        points_.append(
            f"Across {multi.n_prompts} prompts: isolated ratio {ci_with_verdict(iso.ratio)}; without the first token "
            f"{ci_with_verdict(iso.ratio_no_sink)}."
        )
    chain = single.script_chain[0] if single.script_chain else None
    ref = reference.get("mode_averages", {})
    ref_gap = difference(ref.get("isolated"), ref.get("visible"))
    if definition_explains_gap(ref_gap, script_gap(chain), diff):
        points_.append(
            f"The reference's isolated - visible gap ({num(ref_gap)}) appears in this data under the reference script's own "
            f"definition ({num(script_gap(chain))}) and not under the intended one ({num(diff)}): it comes from the definition "
            "(see *The reference script's definition*). " + COVERS
        )
    doc.bullets(points_)
