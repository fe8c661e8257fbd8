"""Future Research Directions: the reference's list, with what this project now measures."""

from __future__ import annotations

from ...analysis.metrics.schema import Metrics
from ..document import Document
from ..text import by_measured, num, times


def render(doc: Document, metrics: Metrics) -> None:
    single, pruning = metrics.single_run, metrics.pruning
    doc.h(2, "Future Research Directions (the reference's list, with what this project now measures)")
    iso, vis = single.intra("isolated"), single.intra("visible")
    base = single.baseline_of("isolated")
    lowest = by_measured(single.layer_ratio, lambda r: r.ratio)[:3]
    doc.bullets(
        [
            "**1. Measure intra-step attention directly** - done: every sibling is a query; later siblings pay "
            f"{num(vis.to_siblings_later if vis else None)} of their attention to earlier siblings in visible mode "
            f"and {num(iso.to_siblings_later if iso else None)} in isolated mode (Beyond, section 3).",
            "**2. Ablation: remove RoPE sharing** - done: unique-position replay "
            + (f"({times(base.unique)} vs {times(base.shared)} shared, isolated run)" if base else "(not run)")
            + "; across prompts in Beyond, section 4.",
            "**3. Boost parallel-token attention** - available as `tempo_lens.hooks.attention_bias_hooks`; "
            "`notebooks/03_interventions.ipynb` measures its effect on the ratio and on the predictions.",
            "**4. Trace token paths through layers** - the ratio per layer is computed (lowest: "
            + (", ".join(f"layer {r.layer} ({times(r.ratio)})" for r in lowest) if lowest else "n/a")
            + "); `tempo_lens.replay(..., run_with_cache=True)` gives every activation of a layout for path tracing.",
            "**5. Compare attention in pruned vs unpruned tokens** - "
            + (f"done (Beyond, section 5: {pruning.n_collapsed_sets} collapsed sets)." if pruning else "not run."),
        ]
    )
