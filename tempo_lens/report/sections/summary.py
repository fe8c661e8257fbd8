"""Executive Summary: the controlled numbers first, then the reference's reading, then the knock-out."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...analysis.metrics.causal_schema import Causal, read_causal
from ...analysis.metrics.schema import MODES, Interval, Metrics, MultiPrompt, SingleRun
from ...analysis.verdicts import LESS, MINIMAL, MORE, NOT_MEASURED, TOLERANCE, interval_verdict, point_direction
from ..document import Document
from ..readings import (
    coefficient_interval,
    factor_text,
    knockout_status,
    knockout_word,
    raw_interval,
    reading_sentence,
    settled_word,
    sharing_verdict,
    sink_verdict,
)
from ..text import ci_text, ci_with_verdict, compared, difference, explains, mean_of, num, p_clause, points, times, value_range


def render(doc: Document, metrics: Metrics) -> None:
    """Executive Summary: what survives the controls, the reference's reading, the knock-out; its measures read
    across prompts are corrected for their number (:func:`summary_view`)."""
    single = metrics.single_run
    multi = summary_view(metrics.multi_prompt)
    ratios = [r.ratio for r in single.ratios if r.ratio is not None]
    overall = point_direction(mean_of(ratios))
    doc.h(2, "Executive Summary")
    doc.p(summary_paragraph(single, multi))
    if not ratios:
        doc.p(
            "**The reference's reading** (the uncontrolled ratio): no step had an earlier parallel set, so the parallel : "
            "non-parallel ratio could not be measured in this run."
        )
    else:
        step_words = {point_direction(r) for r in ratios}
        consistency = "consistently" if len(step_words) == 1 else "on average (not at every step)"
        modes_text = ", ".join(f"{m} {times(single.mode_averages.get(m))}" for m in MODES)
        summary = {LESS: "less attention than", MORE: "more attention than"}.get(overall, "about as much attention as")
        doc.p(
            f'**The reference\'s reading** (the uncontrolled ratio, first token and prompt in the "other" bucket): in this run '
            f"parallel tokens {consistency} receive {summary} non-parallel tokens: per-step ratios "
            f"{value_range(ratios, 3)}x, mode averages {modes_text}. " + _mode_effect(single)
        )
        doc.p(
            "The controls the reference lacked change the reading: "
            + sink_reading(single, multi)
            + " "
            + sharing_reading(single, multi)
        )
        if multi and multi.mode("isolated"):
            iso = multi.mode("isolated")
            doc.p(
                f"Across {multi.n_prompts} prompts the uncontrolled isolated ratio is {ci_with_verdict(iso.ratio)} (mean, "
                f"{level_text(multi)} bootstrap interval, sign-flip p against 1; n = runs with at least one measured step)."
            )

    if note := correction_note(multi):
        doc.p(note)
    if (knockout := knockout_summary(multi)) is not None:
        doc.p(knockout)


def _mode_effect(single: SingleRun) -> str:
    averages = single.mode_averages
    diff = (
        None
        if NOT_MEASURED in (point_direction(averages.isolated), point_direction(averages.visible))
        else averages.isolated - averages.visible
    )
    word = point_direction(diff, 0.0)
    if word == NOT_MEASURED:
        return (
            "The isolated and visible averages cannot be compared: "
            + ", ".join(f"{m} {times(averages.get(m))}" for m in MODES)
            + "."
        )
    if word == MINIMAL:
        return (
            f"The isolated and visible averages differ by {points(diff)} (under the {TOLERANCE} tolerance), so in this run "
            "isolation has a minimal effect on attention to earlier parallel tokens."
        )
    return f"Isolated mode's average is {points(diff)} {word} than visible mode's."


def sink_reading(single: SingleRun, multi: MultiPrompt | None) -> str:
    sink = single.no_sink_averages
    verdict, where = sink_verdict(single, multi)
    return (
        f"leaving out the first token (the attention sink) gives isolated {times(sink.isolated)} and visible {times(sink.visible)} "
        f"(parallel tokens get {compared(point_direction(mean_of([sink.isolated, sink.visible])), 'an average non-sink token')}); "
        f"{where}, {explains('the first token', verdict)}."
    )


def sharing_reading(single: SingleRun, multi: MultiPrompt | None) -> str:
    base = single.baseline_of("isolated")
    if base is None:
        return "No unique-position control was run."
    diff = difference(base.shared, base.unique)
    word = point_direction(diff, 0.0)
    text = (
        f"The same tokens replayed at unique positions (RoPE sharing ablated) give {times(base.unique)} against {times(base.shared)} "
        f"with shared positions (isolated run): a difference of {num(diff)}, "
        + (f"minimal (under {TOLERANCE})." if word == MINIMAL else f"sharing gives {word} attention.")
        + " "
    )
    if multi and multi.pair("shared_minus_unique_isolated"):
        text += (
            f"Across prompts the shared - unique difference is {ci_with_verdict(multi.pair('shared_minus_unique_isolated'))}. "
        )
    role, where = sharing_verdict(single, multi)
    if role != NOT_MEASURED:
        text += f"So, {where}, {explains('position sharing', role)}."
    return text


def _shrink(before: Interval | None, after: Interval | None) -> str:
    """How much of the excess over 1 is left once distance is matched (only when the ratio without the first token is above 1)."""
    if before is None or after is None or before.mean is None or after.mean is None or before.mean <= 1:
        return ""
    left = (after.mean - 1) / (before.mean - 1)
    return (
        f" Matching distance leaves {left * 100:.0f} % of the excess over 1 ({before.mean - 1:.3f} without the first "
        f"token, {after.mean - 1:.3f} distance-matched)."
    )


def summary_view(multi: MultiPrompt | None) -> MultiPrompt | None:
    """``multi`` with the executive summary's measures replaced by their corrected versions (``multi.summary``:
    intervals at ``summary_level``, Holm-adjusted p-values); unchanged when it has none."""
    if multi is None or not multi.summary:
        return multi
    corrected = {n.key: n.interval for n in multi.summary}
    modes = []
    for m in multi.modes:
        fields: dict[str, Any] = {k: ci for k, ci in corrected.items() if hasattr(m, k)}
        modes.append(dataclasses.replace(m, **fields) if m.mode == "isolated" else m)
    paired = [dataclasses.replace(p, interval=corrected.get(p.key, p.interval)) for p in multi.paired]
    regressions = []
    for reg in multi.regression:
        if reg.mode == "isolated":
            coefs = [
                dataclasses.replace(c, lo=corrected[k].lo, hi=corrected[k].hi)
                if c.term == "parallel" and (k := "regression_parallel") in corrected
                else c
                for c in reg.coefficients
            ]
            raw = corrected.get("regression_raw")
            reg = dataclasses.replace(
                reg, coefficients=coefs, raw=dataclasses.replace(reg.raw, lo=raw.lo, hi=raw.hi) if raw else reg.raw
            )
        regressions.append(reg)
    return dataclasses.replace(multi, modes=modes, paired=paired, regression=regressions)


def level_text(multi: MultiPrompt | None) -> str:
    """The level of the intervals the executive summary shows: "95 %", or the corrected level."""
    level = multi.summary_level if multi is not None and multi.summary else None
    return "95 %" if level is None else f"{level * 100:.1f} %"


def correction_note(multi: MultiPrompt | None) -> str:
    """What the executive summary's correction is, or "" without one."""
    if multi is None or not multi.summary or multi.summary_level is None:
        return ""
    n_tests = sum(1 for n in multi.summary if n.interval.p is not None)
    return (
        f"The intervals and p-values in this summary are corrected for the {len(multi.summary)} measures it reads across prompts: "
        f"{multi.summary_level * 100:.1f} % intervals (Bonferroni, 0.05 / {len(multi.summary)}) and p-values Holm-adjusted over "
        f"its {n_tests} tests; the tables below give each measure's uncorrected 95 % interval and p."
    )


def summary_paragraph(single: SingleRun, multi: MultiPrompt | None, mode: str = "isolated") -> str:
    """The executive summary's lead: the controlled numbers first, then the verdict."""
    m = multi.mode(mode) if multi else None
    if m is None:
        return (
            f"**What survives the controls** (this run, {mode}, point estimates): without the first token the ratio is "
            f"{times(single.no_sink_averages.get(mode))}; against generated non-parallel tokens only "
            f"{times(single.generated_averages.get(mode))}; against non-parallel tokens at the same logical distance "
            f"{times(single.matched_averages.get(mode))}. " + reading_sentence(single, multi, mode)
        )
    reg = multi.regression_of(mode)
    coef = coefficient_interval(reg)
    n_note = (
        ""
        if m.n_runs_with_ratio == m.n_runs
        else (
            f" (n counts runs with at least one measured step: {m.n_runs_with_ratio} of the {m.n_runs} {mode} runs had a step after "
            "a parallel set; the others have no ratio and are left out)"
        )
    )
    text = (
        f"**What survives the controls** ({multi.n_prompts} prompts, {mode} mode, mean [{level_text(multi)} interval over prompts]"
        f"{n_note}). "
        f"Without the first token, the parallel : other ratio is {ci_with_verdict(m.ratio_no_sink)}. "
        f"Against generated, non-parallel tokens only: {ci_with_verdict(m.ratio_generated)}. Against non-parallel tokens at the "
        f"same logical distance (±1): {ci_with_verdict(m.ratio_matched)}." + _shrink(m.ratio_no_sink, m.ratio_matched)
    )
    if coef is not None:
        text += (
            f" In a regression of log attention over every (query, key) pair, with distance, prompt token, first token and "
            f"sibling held fixed, a parallel key draws {factor_text(coef)} the attention of a non-parallel one "
            f"({interval_verdict(coef).phrase()}; from {factor_text(raw_interval(reg))} with only the first token held fixed)."
        )
    return text + " " + reading_sentence(single, multi, mode)


def knockout_summary(multi: MultiPrompt | None) -> str | None:
    """The executive summary's knock-out paragraph: its reading per mode, then how the attention measures line up."""
    causal = read_causal(multi)
    if multi is None or causal is None:
        return None
    knockout = causal.knockout
    blocks = [b for mode in MODES if (b := knockout.block(mode)) is not None and b.ratio.mean is not None]
    lead = (
        "**The knock-out** (an intervention: each step's attention to earlier parallel keys removed on every layer, against "
        "as many matched non-parallel generated keys at the same logical distance; KL of the next-token distribution, "
        "geometric mean over prompts of the per-run ratio KL(parallel) / KL(matched)): "
    )
    if not blocks:
        return lead + knockout_status(knockout) + "."
    corrected = {n.key: n.interval for n in multi.summary}  # the Holm family's version where the summary corrects it
    ratios = {b.mode: corrected.get(f"knockout_{b.mode}", b.ratio) for b in blocks}
    readings = "; ".join(f"{mode}: {ci_text(r)}, {p_clause(r.p)}: {knockout_word(r)}" for mode, r in ratios.items())
    return lead + readings + ". " + lineup_sentence(multi, causal)


def lineup_sentence(multi: MultiPrompt, causal: Causal) -> str:
    """How the attention measures (arithmetic-mean ratio, log-attention regression) line up with the knock-out, isolated."""
    mode = "isolated"
    block = causal.knockout.block(mode)
    intervals = multi.mode(mode)
    measures = {
        "the distance-matched ratio (a ratio of arithmetic means)": intervals.ratio_matched if intervals else None,
        "the regression on log attention (a geometric-mean effect, null 0)": coefficient_interval(multi.regression_of(mode)),
    }
    corrected = {n.key: n.interval for n in multi.summary}
    wanted = settled_word(corrected.get(f"knockout_{mode}", block.ratio) if block else None)
    said, agree = [], []
    for label, ci in measures.items():
        word = settled_word(ci)
        said.append(f"{label} says {word} ({ci_text(ci)})")
        if word == wanted and word != NOT_MEASURED:
            agree.append(label.split(" (")[0])
    keys = {k.kind: k for k in causal.key_attention if k.mode == mode}
    spread = ""
    if {"parallel", "matched"} <= set(keys) and None not in (keys["matched"].arithmetic_mean, keys["matched"].geometric_mean):
        par, mat = keys["parallel"], keys["matched"]
        arith = None if par.arithmetic_mean is None or not mat.arithmetic_mean else par.arithmetic_mean / mat.arithmetic_mean
        geo = None if par.geometric_mean is None or not mat.geometric_mean else par.geometric_mean / mat.geometric_mean
        spread = (
            f" Over the same keys, parallel / matched attention is {times(arith)} by arithmetic means and {times(geo)} by "
            "geometric means (figure *Per-key attention*): the arithmetic mean follows the few heavily attended keys, the "
            "geometric mean the bulk."
        )
    agreement = f"The knock-out agrees with {' and '.join(agree)}." if agree else "The knock-out agrees with neither."
    return f"How the attention measures line up ({mode}): " + "; ".join(said) + "." + spread + " " + agreement
