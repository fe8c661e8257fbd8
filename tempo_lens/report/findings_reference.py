"""The report's closing sections: future directions, conclusion, the reference comparison, data summary."""

from __future__ import annotations

from ..analysis.metrics.schema import MODES, Metrics, MultiPrompt, Pruning, ScriptChainRow, SingleRun
from ..analysis.verdicts import NOT_MEASURED, TOLERANCE, definition_explains_gap, point_direction
from .document import Document
from .findings_controls import sharing_verdict, sink_verdict
from .findings_distance import reading_sentence
from .ordering import by_measured
from .text import ci_with_verdict, code, compared, difference, explains, layer_list, mean_of, num, points, times, value_range


def future_directions(doc: Document, single: SingleRun, pruning: Pruning | None) -> None:
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


def _script_gap(row: ScriptChainRow | None) -> float | None:
    return difference(row.isolated, row.visible) if row else None


def conclusion_section(doc: Document, single: SingleRun, multi: MultiPrompt | None, reference: dict) -> None:
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
    if definition_explains_gap(ref_gap, _script_gap(chain), diff):
        points_.append(
            f"The reference's isolated - visible gap ({num(ref_gap)}) appears in this data under the reference script's own "
            f"definition ({num(_script_gap(chain))}) and not under the intended one ({num(diff)}): it comes from the definition "
            "(see *The reference script's definition*). " + COVERS
        )
    doc.bullets(points_)


COVERS = "This covers this model and this data only: it shows that the script's definition produces the reference's kind of gap, a sufficient explanation of the reference's number; it does not show what cogito-3B's own gap would be under the intended definition, which was never measured."


def reference_comparison(doc: Document, metrics: Metrics) -> None:
    reference, single, model = metrics.reference, metrics.single_run, metrics.model
    doc.h(2, "Comparison with the Reference Report")
    doc.p(
        f"**{reference['label']}.** Reference values are quoted, not recomputed; this run's values are computed on {model.name}. "
        "The reference's ratios came from its analysis script, whose definition differs from the intended one; each row says "
        "which definition it uses, and only numbers of the same definition sit side by side."
    )
    ref_avg = reference["mode_averages"]
    chain = single.script_chain[0] if single.script_chain else None
    ours = single.mode_averages
    groups = reference["entropy_groups"]
    not_reported = "not reported (the reference script's definition only)"
    iso_run = single.run("isolated")
    doc.table(
        ["Quantity", "Reference (cogito 3B)", f"This run ({model.name})"],
        [
            [
                "Model",
                f"{reference['n_layers']} layers, {reference['n_heads']} heads",
                f"{model.n_layers} layers, {model.n_heads} heads",
            ],
            [
                "Isolated average ratio, reference script's definition",
                times(ref_avg["isolated"]),
                times(chain.isolated if chain else None),
            ],
            [
                "Visible average ratio, reference script's definition",
                times(ref_avg["visible"]),
                times(chain.visible if chain else None),
            ],
            [
                "Isolated - visible, reference script's definition",
                num(ref_avg["isolated"] - ref_avg["visible"]),
                num(_script_gap(chain)),
            ],
            ["Isolated average ratio, intended definition", not_reported, times(ours.isolated)],
            ["Visible average ratio, intended definition", not_reported, times(ours.visible)],
            ["Isolated - visible, intended definition", not_reported, num(difference(ours.isolated, ours.visible))],
            [
                "Steps with a ratio (isolated)",
                ", ".join(str(r["step"]) for r in reference["ratios"] if r["mode"] == "isolated")
                + " (the script's labels: this project's step + 1)",
                ", ".join(str(r.step) for r in single.ratios if r.mode == "isolated") or "none",
            ],
            [
                "Parallel steps (isolated)",
                str(len(reference["parallel_steps"])),
                str(len(iso_run.parallel_steps)) if iso_run else "n/a",
            ],
            ["Queries per step captured", "1 (last sibling only)", "every sibling"],
            [
                "Most focused layers (step 1)",
                layer_list(groups["most focused"]["layers"]),
                layer_list(e.layer for e in single.entropy if e.group == "most focused"),
            ],
            [
                "Most diffuse layers (step 1)",
                layer_list(groups["most diffuse"]["layers"]),
                layer_list(e.layer for e in single.entropy if e.group == "most diffuse"),
            ],
        ],
    )
    _script_definition(doc, single, ref_avg)
    doc.p('**Why the numbers may differ** (`docs/definitions.md`, "The reference pipeline"):')
    doc.bullets(
        [f"Reference pipeline: {note}." for note in reference["pipeline_notes"]]
        + [
            f"The reference's own later validation: {reference['later_validation']}.",
            "This project implements the intended design (shared RoPE positions through hooks, the isolation mask at the attention "
            "scores, all siblings fed as queries), checked against Hugging Face eager attention with explicit position_ids and a 4D mask.",
            f"The model here is {model.name}; `tempo-lens analyze analyses --model NAME` runs the same analysis on another model, "
            "and the Cross-model section compares the installed zoo models.",
        ]
    )


def _script_definition(doc: Document, single: SingleRun, ref_avg: dict) -> None:
    doc.h(3, "The reference script's definition")
    doc.p(
        "The reference report's ratio came from a script that (1) averaged head 0 only instead of every head, (2) labelled each "
        "forward pass with the next step's number, (3) counted the keys of the query's own step, its hidden siblings included, "
        "as earlier parallel tokens, (4) used one query row (the last sibling) and (5) averaged reference steps 3-6 only. "
        "Computed on this run's attention, the choices are undone one at a time:"
    )
    doc.table(
        ["Definition", "Isolated", "Visible", "Isolated - visible"],
        [
            [r.definition, times(r.isolated), times(r.visible), num(difference(r.isolated, r.visible))]
            for r in single.script_chain
        ],
    )
    chain = single.script_chain
    if len(chain) < 2:
        return
    gap, intended = _script_gap(chain[0]), _script_gap(chain[-1])
    ref_gap = ref_avg["isolated"] - ref_avg["visible"]
    explains = definition_explains_gap(ref_gap, gap, intended)
    doc.p(
        f"Under the script's definition this run's isolated - visible gap is {num(gap)} (reference: {num(ref_gap)}); under the "
        f"intended definition it is {num(intended)} ({point_direction(intended, 0.0)}). "
        + (
            "The reference's gap is therefore an artifact of its definition: with shifted step labels and the query's own step in the "
            "buckets, the hidden siblings of an isolated query (zero attention by construction) count as earlier parallel tokens, "
            "which lowers the isolated ratio and not the visible one. " + COVERS
            if explains
            else f"This run does not reproduce the reference's gap under the script's definition (same sign and more than {TOLERANCE} "
            "apart from the intended definition's gap are both needed), so it cannot attribute the gap to the definition."
        )
    )


def data_summary(doc: Document, metrics: Metrics) -> None:
    single, settings, model = metrics.single_run, metrics.settings, metrics.model
    doc.h(2, "Data Summary")
    doc.p("**Experiments Analyzed:**")
    used = [
        f"{single.isolated_experiment}: isolated run (parallel tokens cannot attend to each other)",
        f"{single.visible_experiment}: visible run (parallel tokens can attend to each other)",
    ]
    if metrics.multi_prompt:
        used.append(f"{metrics.multi_prompt.experiment}: multi-prompt validation ({metrics.multi_prompt.n_prompts} prompts)")
    if metrics.pruning:
        used.append(f"{metrics.pruning.experiment}: retroactive pruning")
    doc.bullets(used)
    doc.bullets(
        [
            f"**Prompt:** {code(settings.prompt)}",
            f"**Selection Threshold:** {settings.threshold}",
            f"**Max Tokens:** {settings.max_steps} (steps; max {settings.max_parallel} siblings per step, next token from the "
            f"{settings.next_token_source} of siblings)",
            f"**Model:** {model.name} ({model.n_layers} layers, {model.n_heads} heads, {model.n_kv_heads} KV heads)",
        ]
    )
    for mode in MODES:
        run = single.run(mode)
        if run is None:
            continue
        doc.p(f"**Generated ({mode}):** {code(run.text or '')}")
        doc.p(f"**Parallel Steps ({mode}):**")
        doc.bullets(
            [
                f"Step {s.step}: {s.size} parallel tokens (positions {s.first}-{s.last}; logical position {s.logical_position}): "
                + " / ".join(f"{code(t)} {p:.2f}" for t, p in zip(s.tokens, s.probs))
                for s in run.parallel_steps
            ]
            or ["none"]
        )
    iso = single.run("isolated")
    shapes = iso.capture_shapes if iso else {}
    if shapes:
        first = next(iter(shapes.values()))
        doc.p(
            f"**Attention Captured:** [{first[0]} layers, {first[1]} batch, {first[2]} heads, q queries (the step's siblings), K keys] per step; "
            + ", ".join(f"step {s}: q={v[3]}, K={v[4]}" for s, v in shapes.items())
        )
