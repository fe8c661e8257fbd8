"""Key Findings: the reference report's four findings measured on this run, and the figures."""

from __future__ import annotations

from ...analysis.metrics.causal_schema import read_causal
from ...analysis.metrics.schema import MODES, Interval, Metrics, SingleRun
from ...analysis.verdicts import LESS, MINIMAL, MORE, NOT_MEASURED, TOLERANCE, depth_profile, funnel_reading, point_direction
from ...figures import causal as causal_plots
from ...figures import report as plots
from ..document import Document
from ..text import by_measured, ci_text, compared, layer_list, mean_of, num, times, value_range

HEAD_WORDS = {
    ("distance", "highest"): "longest-range (highest mean logical distance)",
    ("distance", "lowest"): "most local (lowest mean logical distance)",
    ("sink", "highest"): "most sink-bound (highest first-token share)",
    ("entropy", "lowest"): "most focused (lowest entropy, nats)",
}


def render(doc: Document, metrics: Metrics) -> None:
    """Key Findings: the reference's four findings on this run (ratio, isolation, layer entropy, heads), then the figures."""
    single, model = metrics.single_run, metrics.model
    ratios = [r.ratio for r in single.ratios if r.ratio is not None]
    overall = point_direction(mean_of(ratios))
    doc.h(2, "Key Findings")
    heading = {LESS: "Reduced", MORE: "Increased"}.get(overall, "About Equal" if overall == MINIMAL else "Unmeasured")
    doc.h(3, f"1. Parallel Tokens Receive {heading} Attention (the reference's reading, before the controls)")
    doc.p(
        "The ratio (`docs/definitions.md`): attention averaged over layers, batch, heads and the step's queries; the mean over "
        "earlier parallel-set tokens divided by the mean over every other earlier token (prompt and first token included). "
        "Every step with an earlier parallel set is listed."
    )
    doc.table(
        ["Step", "Mode", "Parallel:Non-Parallel Ratio", "Interpretation"],
        [
            [r.step, r.mode.upper(), times(r.ratio), interpretation(r.ratio)]
            for r in sorted(single.ratios, key=lambda r: (r.step, r.mode))
        ],
    )
    if single.missing_steps:
        modes: dict[tuple[int, str], list[str]] = {}
        for m in single.missing_steps:
            modes.setdefault((m.step, m.reason), []).append(m.mode)
        doc.p(
            "Not measured: "
            + "; ".join(f"step {s} {' and '.join(sorted(ms))} ({reason})" for (s, reason), ms in sorted(modes.items()))
            + "."
        )
    doc.p("**Average Ratios** (mean of the per-step ratios):")
    doc.bullets(
        [
            f"**{m.capitalize()} mode:** {times(single.mode_averages.get(m))} ({interpretation(single.mode_averages.get(m))})"
            for m in MODES
        ]
    )
    words = [point_direction(single.mode_averages.get(m)) for m in MODES]
    doc.p(
        f"**Interpretation:** per token, parallel tokens receive {compared(words[0])} in isolated mode, and "
        f"{compared(words[1])} in visible mode. Whether this is a property of shared positions, of the first token (attention sink), "
        "or of the tokens themselves is what the controls below test (*Beyond the Reference Report*, 2 and 2b: the first token, "
        "then distance and token kind)."
    )

    _isolation_section(doc, single)
    _entropy_section(doc, single)
    _heads_section(doc, metrics, model.n_kv_heads < model.n_heads)
    _figures(doc, metrics)


def interpretation(ratio: float | None) -> str:
    word = point_direction(ratio)
    if word == NOT_MEASURED:
        return word
    if word == MINIMAL:
        return f"about equal attention (within {TOLERANCE})"
    return f"{round(abs(1 - ratio) * 100)}% {word} attention"


def _isolation_section(doc: Document, single: SingleRun) -> None:
    a = single.mode_averages
    diff = None if a.isolated is None or a.visible is None else a.isolated - a.visible
    word = point_direction(diff, 0.0)
    title = {MINIMAL: "Minimal", NOT_MEASURED: "an Unmeasured"}.get(word, "a Measurable")
    doc.h(3, f"2. Isolation Mode Has {title} Effect on Attention to Prior Parallel Tokens")
    detail = {MINIMAL: f"minimal: under {TOLERANCE}", NOT_MEASURED: "not measured"}.get(word, f"isolated {word} than visible")
    doc.bullets(
        [
            f"**Isolated:** {times(a.isolated)} ratio",
            f"**Visible:** {times(a.visible)} ratio",
            f"**Difference (isolated - visible):** {num(diff)} ({detail})",
            f"**Same tokens, mask toggled** (the isolated run replayed with the visible mask): {times(single.toggled_mask_average)}",
        ]
    )
    iso, vis = single.intra("isolated"), single.intra("visible")
    doc.p(
        "Isolation only changes what a sibling sees of its own step. Measured directly (every sibling is a query here): siblings after "
        f"the first pay {num(vis.to_siblings_later if vis else None)} of their attention to earlier siblings in visible mode and "
        f"{num(iso.to_siblings_later if iso else None)} in isolated mode (0 by construction). Attention to *previous* steps' parallel "
        "tokens is a separate quantity; the mode changes it only through the different context the later tokens were computed in."
    )


def _entropy_section(doc: Document, single: SingleRun) -> None:
    doc.h(3, "3. Layer-Wise Attention Patterns")
    if not single.entropy:
        doc.p("No step was captured, so layer entropy was not measured.")
        return
    doc.p(
        f"**Entropy Analysis (Step {single.entropy_step}, {single.entropy_mode} run):** natural log, unnormalised, averaged over heads "
        "and queries. The 3 lowest-entropy layers are most focused, the 3 highest most diffuse, the rest mid."
    )
    rows = []
    for group, label, meaning in (
        ("most focused", "Most Focused", "Sharp, concentrated attention"),
        ("mid", "Mid-Range", "Intermediate attention"),
        ("most diffuse", "Most Diffuse", "Broad, spread attention"),
    ):
        part = [e for e in single.entropy if e.group == group]
        rows.append([label, layer_list(e.layer for e in part), value_range([e.entropy for e in part]), meaning])
    doc.table(["Layer Type", "Layers", "Entropy Range", "Interpretation"], rows)
    doc.p("**Key Observations:**")
    doc.bullets(
        [
            f"**{d.depth.capitalize()} layers ({layer_list(range(d.first_layer, d.last_layer + 1))}):** entropy {value_range([d.min, d.max])} (mean {num(d.mean, 2)})"
            for d in single.depth
        ]
    )
    depth = single.depth_all_steps or single.depth
    means = {d.depth: d.mean for d in depth}
    profile = depth_profile(means.get("early"), means.get("middle"), means.get("late"))
    doc.p(
        f"**Pattern:** the reference's funnel pattern (middle layers most diffuse, late layers most focused) {funnel_reading(profile)} "
        "in this model (from the mean entropy of each depth third, averaged over every captured step of the isolated run, not "
        f"only step {single.entropy_step}: "
        + ", ".join(f"{d.depth} {num(d.mean, 2)}" for d in depth)
        + "; across prompts see the Cross-model section when it is run)."
    )


def _layer_heads(doc: Document, metrics: Metrics) -> None:
    """The primary head analysis: every (layer, head) on its own, with its figure."""
    cells = metrics.single_run.layer_heads
    measured = [h for h in cells if None not in (h.entropy, h.recent, h.distant)]
    counts = {g: sum(h.group == g for h in cells) for g in ("Long-range", "Balanced", "Diffuse")}
    doc.p(
        f"**Per (layer, head) at one step** (a comparison, in the reference's step-{metrics.single_run.entropy_step} view: "
        "recent and distant are tied at one step, so this scatter lies on a line; isolated run, "
        f"{len(cells)} heads = {metrics.model.n_layers} layers x {metrics.model.n_heads} heads, each on its own). The grouping rule above, "
        "applied over every (layer, head) together: " + ", ".join(f"{g} {n}" for g, n in counts.items()) + "."
    )
    if measured:
        name = lambda h: f"L{h.layer}H{h.head}"  # noqa: E731
        focused = by_measured(measured, lambda h: h.entropy)[:3]
        bias = sorted(measured, key=lambda h: h.distant - h.recent, reverse=True)[:3]
        local = sorted(measured, key=lambda h: h.recent - h.distant, reverse=True)[:3]
        doc.bullets(
            [
                "**Most focused:** "
                + ", ".join(f"{name(h)} (entropy {num(h.entropy, 2)}, max {num(h.max, 2)})" for h in focused),
                "**Strongest distant bias:** "
                + ", ".join(f"{name(h)} (distant - recent {num(h.distant - h.recent, 3)})" for h in bias),
                "**Strongest recent bias:** "
                + ", ".join(f"{name(h)} (recent - distant {num(h.recent - h.distant, 3)})" for h in local),
            ]
        )
        doc.figure(
            "layer-heads",
            plots.layer_heads_plot(metrics),
            "Specialisation of every (layer, head), recent vs distant "
            "attention, coloured by group (hover for layer, head, entropy and max)",
        )


def _heads_section(doc: Document, metrics: Metrics, gqa: bool) -> None:
    single = metrics.single_run
    heads = single.heads
    doc.h(3, "4. Attention Head Specialization")
    if not heads:
        doc.p("No step was captured, so head specialisation was not measured.")
        return
    doc.p(
        "Recent = mean attention over each query's last 3 visible keys, distant = over its other visible keys. Grouping rule "
        "(deterministic): with the entropy range [lo, hi] of the heads compared, Diffuse = entropy in the top third of the range; "
        "Long-range = bottom third and distant > recent; Balanced = the rest."
    )
    _head_measures_part(doc, metrics)
    _layer_heads(doc, metrics)
    doc.p(
        f"**The reference's view** ({len(heads)} heads, step {single.entropy_step}, attention averaged over layers by head index, "
        "as the reference did). Head h of layer 0 and head h of layer 20 are unrelated heads, so this view has no meaning of its "
        "own; it is kept only to compare with the reference report."
    )
    rows = []
    for group, meaning in (
        ("Long-range", "Focus on distant context"),
        ("Balanced", "Even attention distribution"),
        ("Diffuse", "Broad, unfocused attention"),
    ):
        part = [h for h in heads if h.group == group]
        if not part:
            rows.append([f"**{group}**", "none", "-", "-", "-", meaning])
            continue
        rows.append(
            [
                f"**{group}**",
                layer_list(h.head for h in part),
                value_range([h.recent for h in part]),
                value_range([h.distant for h in part]),
                value_range([h.entropy for h in part]),
                meaning,
            ]
        )
    doc.table(["Head Type", "Heads", "Recent Attn", "Distant Attn", "Entropy", "Specialization"], rows)
    measured = [h for h in heads if None not in (h.entropy, h.recent, h.distant)]
    if not measured:
        return
    by_entropy = by_measured(measured, lambda h: h.entropy)
    focused, diffuse = by_entropy[0], by_entropy[::-1][:3]
    bias = sorted(measured, key=lambda h: h.distant - h.recent, reverse=True)[:3]
    doc.p("**Key Patterns:**")
    doc.bullets(
        [
            f"**Head {focused.head}:** most focused (entropy={num(focused.entropy, 2)}, max_attn={num(focused.max, 2)}), "
            f"distant={num(focused.distant, 2)}, recent={num(focused.recent, 2)}",
            f"**Heads {layer_list(h.head for h in diffuse)}:** most diffuse (entropy {value_range([h.entropy for h in diffuse])}), "
            f"recent {value_range([h.recent for h in diffuse])}",
            f"**Heads {layer_list(h.head for h in bias)}:** strongest distant bias (distant - recent {value_range([h.distant - h.recent for h in bias])})",
        ]
    )
    if gqa and single.kv_groups:
        doc.p("**Heads grouped by shared KV head (GQA):**")
        doc.table(
            ["KV head", "Query heads", "Recent", "Distant", "Entropy (min-max)", "Groups"],
            [
                [k.kv_head, k.heads, num(k.recent), num(k.distant), f"{num(k.entropy_min, 2)}-{num(k.entropy_max, 2)}", k.groups]
                for k in single.kv_groups
            ],
        )


def _head_measures_part(doc: Document, metrics: Metrics) -> None:
    """Head specialisation over every step and prompt, with standout heads named with their intervals."""
    causal = read_causal(metrics.multi_prompt)
    measures = causal.head_measures if causal else None
    if measures is None:
        doc.p("**Heads over every step and prompt:** not measured (no multi-prompt runs with captured attention).")
        return
    doc.p(
        f"**Heads over every step and prompt** (the primary head analysis; {measures.n_runs} {measures.mode} runs of the "
        "multi-prompt set, every captured step and query): per (layer, head) the mean logical distance attended, the share "
        "on the first token and the entropy, each averaged within a run, then a mean over runs with a 95 % bootstrap interval "
        "over prompts. Unlike recent and distant attention at one step, these three are not tied to each other."
    )
    rows = []
    for s in measures.standout:
        head = measures.head(s.layer, s.head)
        value, lo, hi = head.measure(s.measure) if head else (None, None, None)
        ci = Interval(mean=value, lo=lo, hi=hi, n=head.n_runs if head else 0)
        rows.append([HEAD_WORDS.get((s.measure, s.direction), f"{s.direction} {s.measure}"), f"L{s.layer}H{s.head}", ci_text(ci)])
    doc.table(["Standout (ranked by the interval's bound)", "Head", "Mean [95 % CI] (n runs)"], rows)
    named = {(m, d): {(s.layer, s.head) for s in measures.standout if (s.measure, s.direction) == (m, d)} for m, d in HEAD_WORDS}
    both = sorted(named[("distance", "highest")] & named[("sink", "highest")])
    if both:
        doc.p(
            "Named both longest-range and most sink-bound: "
            + ", ".join(f"L{layer}H{head}" for layer, head in both)
            + ". Their long distance is the distance to the first token, not attention spread over distant context."
        )
    doc.figure(
        "head-measures",
        causal_plots.head_measures_plot(measures),
        "Every (layer, head) over every step and prompt: mean logical distance against first-token share, coloured by entropy",
    )


def _figures(doc: Document, metrics: Metrics) -> None:
    data = metrics.figures
    doc.h(3, "Figures")
    if metrics.single_run.ratios:
        doc.figure(
            "ratio", plots.ratio_plot(metrics), "Parallel : non-parallel ratio per step, by mode (dashed: 1.0 = equal attention)"
        )
    if data.entropy:
        doc.figure("entropy", plots.entropy_plot(metrics), "Layer entropy (nats) at every step, layers down and steps across")
    if data.heads_by_step:
        doc.figure(
            "heads",
            plots.heads_plot(metrics),
            f"The reference's view of head specialisation (averaged over layers by head "
            f"index; isolated run), recent vs distant, coloured by group; step {data.heads_step} first, the slider shows every step",
        )
    if data.heatmaps:
        doc.figure(
            "heatmap",
            plots.heatmap_plot(metrics),
            "Attention of each step's siblings (isolated run), averaged over layers and "
            f"heads; parallel keys marked; step {data.heatmap_step} first",
        )
    if data.head_grid is not None:
        doc.figure(
            "head-grid",
            plots.head_grid_plot(metrics),
            f"Every layer × head at step {data.head_grid.step} (isolated run): "
            "query siblings × keys per tile, attention to parallel keys in orange",
        )
    if data.lattice:
        doc.figure(
            "lattice",
            plots.lattice_plot(metrics),
            "Token lattice, isolated above visible: siblings stacked at their "
            "logical position, arcs for the attention later tokens pay earlier ones (width = weight, orange = to a "
            "parallel key, hover for the value, slider for the threshold); pruned tokens struck through",
        )
