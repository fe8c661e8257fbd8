"""Implications for TEMPO: the reference's suggestions, each with what the controls say."""

from __future__ import annotations

from ...analysis.metrics.schema import Metrics
from ...analysis.verdicts import NO_DOWN_WEIGHTING, NOT_MEASURED
from ..document import Document
from ..readings import sharing_verdict, sink_verdict
from ..text import by_measured, explains, num, times


def render(doc: Document, metrics: Metrics) -> None:
    single, multi = metrics.single_run, metrics.multi_prompt
    doc.h(2, "Implications for TEMPO (hypotheses, with what the controls say)")
    sink, where = sink_verdict(single, multi)
    fate = {
        "accounts for": "disappears",
        "accounts for part of": "shrinks but persists",
        "does not account for": "persists",
        NO_DOWN_WEIGHTING: "is not there to begin with",
    }.get(sink, "cannot be judged")
    role, role_where = sharing_verdict(single, multi)
    iso, vis = single.intra("isolated"), single.intra("visible")
    lowest = by_measured(single.layer_ratio, lambda r: r.ratio)[:3]
    doc.bullets(
        [
            "*Down-weighting may be beneficial (coherence over exploration).* Not testable from attention alone; the controls show the "
            f"per-token down-weighting {fate} once the first token (attention sink) is left out ({where}; this run: isolated "
            f"{times(single.no_sink_averages.isolated)}, visible {times(single.no_sink_averages.visible)}).",
            "*RoPE sharing has unintended consequences; offset positions slightly (5.0, 5.001, ...).* "
            + (
                f"{explains('position sharing', role).capitalize()} ({role_where}, Hypothesis 1). "
                if role != NOT_MEASURED
                else ""
            )
            + "Notebook `03_interventions.ipynb` applies fractional positions through the hooks and compares the ratio.",
            "*Isolation works but may be overly conservative.* The mask reaches the attention here: isolated siblings pay "
            f"{num(iso.to_siblings if iso else None)} to each other, visible ones {num(vis.to_siblings_later if vis else None)} (later siblings).",
            "*Layers and heads as intervention points.* Lowest per-layer ratios in the isolated run (mean over measured steps): "
            + (", ".join(f"layer {r.layer} ({times(r.ratio)})" for r in lowest) if lowest else "not measured")
            + ". Notebook `03_interventions.ipynb` adds an attention bias toward parallel keys on chosen layers / heads.",
        ]
    )
