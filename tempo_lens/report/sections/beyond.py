"""Beyond the Reference Report: the sink and sibling-mass controls, distance and token kind, intra-step attention,
the multi-prompt validation and pruning."""

from __future__ import annotations

from ...analysis.metrics.schema import MODES, Interval, Metrics, MultiPrompt, Pruning, SingleRun
from ...analysis.verdicts import explained_amount, interval_verdict, point_direction
from ...figures import report as plots
from ..document import Document
from ..readings import coefficient_interval, factor_text, raw_interval, reading_sentence, standout_text
from ..text import ci_text, ci_with_verdict, compared, num, p_text, times

MULTI_MEASURES = (
    ("Ratio", "ratio"),
    ("Ratio, reference script's definition", "script_ratio"),
    ("Ratio without first token", "ratio_no_sink"),
    ("Set mass / token mean", "set_ratio"),
    ("Ratio at unique positions", "ratio_unique"),
)
"""The across-prompt table's measures: (label, :class:`~.schema.ModeIntervals` field)."""


TERM_LABELS = {
    "intercept": "intercept",
    "parallel": "parallel key",
    "first": "first token (position 0)",
    "prompt": "prompt token",
    "log_distance": "log(1 + logical distance)",
    "sibling": "same-step sibling",
}


CONTROL_MEASURES = (
    ("Ratio without first token", "ratio_no_sink"),
    ("Generated-only ratio", "ratio_generated"),
    ("Distance-matched ratio", "ratio_matched"),
)
"""The controls' across-prompt table: (label, :class:`~.schema.ModeIntervals` field)."""


def render(doc: Document, metrics: Metrics) -> None:
    single, multi, pruning = metrics.single_run, metrics.multi_prompt, metrics.pruning
    doc.h(2, "Beyond the Reference Report")
    doc.h(3, "1. Baseline measured, not assumed")
    doc.p("See *Comparison to Baseline* above (unique-position replay of the same tokens) and, across prompts, section 4.")
    doc.h(3, "2. Confounds: the attention sink and sibling mass")
    doc.p(
        "The first token (BOS / attention sink) sits in the non-parallel bucket and takes a large share of attention. "
        "Sibling tokens with near-equal keys split attention, so the mass of a whole set is shown beside the per-token mean."
    )
    doc.table(
        [
            "Step",
            "Mode",
            "Ratio",
            "Ratio without first token",
            "Generated-only ratio",
            "Distance-matched ratio",
            "Set mass / token mean",
        ],
        [
            [
                r.step,
                r.mode.upper(),
                times(r.ratio),
                times(r.ratio_no_sink),
                times(r.ratio_generated),
                times(r.ratio_matched),
                times(r.set_ratio),
            ]
            for r in sorted(single.ratios, key=lambda r: (r.step, r.mode))
        ],
    )
    doc.p(
        "Averages without the first token: "
        + ", ".join(
            f"{m} {times(single.no_sink_averages.get(m))} ({compared(point_direction(single.no_sink_averages.get(m)))})"
            for m in MODES
        )
        + "."
    )
    _distance_section(doc, single, multi)
    doc.h(3, "3. Intra-step attention (visible vs isolated)")
    doc.p(
        "Each sibling is a query of its step's forward, so attention between siblings is measured directly "
        "(the reference fed one query per step and could not). Means over sibling rows:"
    )
    doc.table(
        ["Mode", "To other siblings", "To other siblings (2nd+ sibling)", "To itself", "To earlier tokens", "Rows"],
        [
            [v.mode.upper(), num(v.to_siblings), num(v.to_siblings_later), num(v.to_self), num(v.to_earlier), v.n_rows]
            for v in single.intra_step
        ],
    )
    doc.h(3, "4. Multi-prompt validation")
    if not multi:
        doc.p("Not run (no multi-prompt experiment, or quick mode).")
    else:
        _multi_section(doc, multi)
    doc.h(3, "5. Pruned vs surviving tokens")
    if not pruning:
        doc.p("Not run (no pruning experiment, or quick mode).")
    else:
        _pruning_section(doc, pruning)


def _distance_section(doc: Document, single: SingleRun, multi: MultiPrompt | None) -> None:
    """Beyond the Reference Report, beside the sink control: the three controls and the per-head map."""
    doc.h(3, "2b. Confounds: distance and token kind")
    doc.p(
        'Without the first token, the "other" bucket is mostly prompt, far from the query, while every parallel key is a recent '
        'generated token; attention falls with distance, so part of "more" may be recency. Three controls '
        '(`docs/definitions.md`, "Distance and token kind"): the **generated-only ratio** (other = generated, non-parallel keys); '
        "the **distance-matched ratio** (each parallel key against the non-parallel keys, first token excluded, whose logical "
        "distance from the query is within ±1 of its own, averaged per step then per run); and a **regression** of log attention "
        "over every (query, key) pair on parallel key, first token, prompt token, log(1 + logical distance) and same-step sibling, "
        "fitted by least squares with `numpy.linalg.lstsq`, intervals from 1000 resamples of the prompts (each refitted "
        "the same way)."
    )
    doc.p(
        "This run (point estimates): "
        + ", ".join(
            f"{m} generated-only {times(single.generated_averages.get(m))}, distance-matched {times(single.matched_averages.get(m))}"
            for m in MODES
        )
        + "."
    )
    if not multi:
        doc.p(reading_sentence(single, multi))
        return
    rows = [
        [mode.upper(), label, ci_text(ci), interval_verdict(ci).phrase()] for mode, label, ci in multi.measured(CONTROL_MEASURES)
    ]
    doc.table(["Mode", "Measure", "Mean [95 % CI] (n runs)", "Direction vs 1.0"], rows)
    if multi.regression:
        doc.p(
            "**Regression over (query, key) pairs** (log attention; a coefficient of b means a factor exp(b) of attention, the "
            "other terms held fixed; a geometric-mean effect, where the ratios are ratios of arithmetic means, so a few heavily "
            "attended keys move a ratio more than a coefficient):"
        )
        _regression_table(doc, multi)
    doc.p(reading_sentence(single, multi))
    if multi.head_map:
        doc.p(
            "**Where it lives, per (layer, head)** (isolated runs; sink share = weight on position 0, averaged over steps and "
            "prompts; parallel coefficient = the regression's parallel term fitted to each head alone, distance and token kind "
            "held fixed; point estimates, no per-head interval). Heads that stand out: " + standout_text(multi.head_map) + "."
        )
        doc.figure(
            "head-map",
            plots.head_map_plot(multi.head_map),
            "Per (layer, head): share of attention on the first token (left) and the parallel coefficient with distance "
            "and token kind held fixed (right; red = parallel keys favoured)",
        )


def _regression_table(doc: Document, multi: MultiPrompt) -> None:
    rows = []
    for reg in multi.regression:
        for c in reg.coefficients:
            ci = coefficient_interval(reg, c.term)
            word = interval_verdict(ci).phrase() if ci is not None else "not fitted (constant here)"
            rows.append(
                [
                    reg.mode.upper(),
                    TERM_LABELS.get(c.term, c.term),
                    ci_text(ci) if ci else "n/a",
                    factor_text(ci) if c.term != "intercept" else "-",
                    word if c.term != "intercept" else "-",
                ]
            )
    doc.table(
        [
            "Mode",
            "Term",
            "Coefficient of log attention [95 % interval over prompts] (n runs)",
            "As a factor of attention",
            "Direction vs 0",
        ],
        rows,
    )
    for reg in multi.regression:
        raw = raw_interval(reg)
        shares = "; ".join(
            f"{TERM_LABELS[t]} explains {explained_amount(v)} ({'n/a' if v is None else f'{v * 100:.0f} %'})"
            for t, v in reg.shares.items()
        )
        doc.p(
            f"**{reg.mode.capitalize()}** ({reg.n_pairs} pairs from {reg.n_runs} runs). The raw effect, the parallel coefficient with "
            f"only the first token held fixed, is {ci_text(raw)} ({factor_text(raw)}). Adding the terms one at a time, in this "
            f"order: {shares}. With every term in, the parallel coefficient is {ci_text(coefficient_interval(reg))} "
            f"({factor_text(coefficient_interval(reg))})."
        )


def _interval_row(label: str, ci: Interval | None) -> list[str]:
    return [label, ci_text(ci), p_text(ci.p if ci else None), interval_verdict(ci).phrase()]


def _multi_section(doc: Document, multi: MultiPrompt) -> None:
    iso = multi.mode("isolated")
    doc.p(
        f"{multi.n_prompts} prompts (experiment `{multi.experiment}`), both modes; {iso.n_runs_with_ratio if iso else 0} of the isolated "
        "runs had a step with an earlier parallel set (the others have no ratio to measure and are left out, not counted as 0). "
        "One value per run: the mean of its per-step ratios. Means with 95 % studentized-bootstrap intervals over runs (none with "
        "fewer than 4 runs) and a two-sided sign-flip permutation p-value against the null (on log ratios for ratios, 0 for "
        "differences). The interval decides the direction word; "
        "the permutation test can only weaken it (see *How the words are chosen*)."
    )
    rows = [[mode.upper(), *_interval_row(label, ci)] for mode, label, ci in multi.measured(MULTI_MEASURES)]
    doc.table(["Mode", "Measure", "Mean [95 % CI] (n runs)", "Permutation p (vs 1)", "Direction vs 1.0"], rows)
    doc.table(
        ["Paired difference", "Mean [95 % CI] (n pairs)", "Permutation p (vs 0)", "Direction vs 0"],
        [_interval_row(p.label, p.interval) for p in multi.paired],
    )
    doc.figure("multi", plots.multi_plot(multi), "Mean ratio per mode across prompts with 95 % bootstrap intervals")


def _pruning_section(doc: Document, pruning: Pruning) -> None:
    rule = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (pruning.strategy or {}).items() if v is not None)
    doc.p(
        f"A run with retroactive pruning on ({rule}) over the prompts of `{pruning.experiment}`, isolated mode: "
        f"{pruning.n_parallel_sets} parallel sets, {pruning.n_collapsed_sets} collapsed, {pruning.n_pruned_tokens} tokens pruned. "
        "Relative attention = a token's attention (mean over layers, heads, queries) / the mean over earlier keys except the first, "
        "measured in the forward pass that decided its set (before the pruning took effect); survivors over every later step."
    )
    doc.table(
        ["Tokens", "Relative attention, mean [95 % CI] over runs (n runs, each its tokens' mean)", "Distinct tokens"],
        [[o.outcome, ci_text(o.attention), o.n_tokens] for o in pruning.outcomes],
    )
    pruned, kept, survivor = (pruning.outcome(n) for n in ("pruned", "kept (top sibling)", "survivor"))
    if pruned is None or kept is None:
        return
    doc.p(
        f"At the step that decided their set, pruned siblings drew {ci_text(pruned.attention)} and the kept top sibling of the same "
        f"set, measured at that same step, {ci_text(kept.attention)}. Paired per run (pruned - kept top, each run's mean over its collapsed sets): "
        f"{ci_with_verdict(pruning.pruned_minus_kept_top)}. "
        + (
            f"Surviving parallel tokens ({ci_text(survivor.attention)}) are measured over every later step, not at a deciding step, "
            "so a comparison with them mixes steps; the same-step comparison is the fair one."
            if survivor
            else ""
        )
    )
