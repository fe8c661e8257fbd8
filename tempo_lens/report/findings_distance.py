"""The distance and token-kind controls in the report: does "more attention without the first token" survive?

Without the first token the "other" bucket is mostly prompt, far from the query, while every parallel
key is a nearby generated token. Three controls hold that fixed (``docs/definitions.md``, "Distance
and token kind"): the generated-only ratio, the distance-matched ratio, and a regression over
(query, key) pairs; the per (layer, head) map says where the sink and the parallel effect live.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..analysis.metrics.schema import MODES, HeadCell, Interval, MultiPrompt, Regression, SingleRun
from ..analysis.verdicts import (
    DOES_NOT_SURVIVE,
    NOT_MEASURED,
    PARTLY_SURVIVES,
    SURVIVES,
    direction,
    distance_reading,
    explained_amount,
    interval_verdict,
    point_direction,
)
from ..figures import report as plots
from .document import Document
from .ordering import by_measured
from .text import ci_text, ci_with_verdict, num, times

TERM_LABELS = {
    "intercept": "intercept",
    "parallel": "parallel key",
    "first": "first token (position 0)",
    "prompt": "prompt token",
    "log_distance": "log(1 + logical distance)",
    "sibling": "same-step sibling",
}
N_STANDOUT = 3
CONTROL_MEASURES = (
    ("Ratio without first token", "ratio_no_sink"),
    ("Generated-only ratio", "ratio_generated"),
    ("Distance-matched ratio", "ratio_matched"),
)
"""The controls' across-prompt table: (label, :class:`~.schema.ModeIntervals` field)."""


def coefficient_interval(regression: Regression | None, term: str = "parallel") -> Interval | None:
    """A regression coefficient as an :class:`Interval` against 0 (resampling prompts; no permutation test)."""
    c = regression.coefficient(term) if regression else None
    if c is None or c.estimate is None:
        return None
    return Interval(mean=c.estimate, lo=c.lo, hi=c.hi, n=regression.n_runs, p=None, null=0.0)


def raw_interval(regression: Regression | None) -> Interval | None:
    if regression is None or regression.raw.estimate is None:
        return None
    r = regression.raw
    return Interval(mean=r.estimate, lo=r.lo, hi=r.hi, n=regression.n_runs, p=None, null=0.0)


def factor_text(ci: Interval | None) -> str:
    """A log coefficient as a factor of attention: ``exp(b) [exp(lo), exp(hi)]x``."""
    if ci is None or ci.mean is None:
        return "n/a"
    text = f"{math.exp(ci.mean):.2f}x"
    if ci.lo is not None and ci.hi is not None:
        text += f" [{math.exp(ci.lo):.2f}, {math.exp(ci.hi):.2f}]"
    return text


def control_words(single: SingleRun | None, multi: MultiPrompt | None, mode: str = "isolated") -> tuple[str, dict[str, str], str]:
    """(word without the first token, each control's word, where the words come from): prompts first, else this run
    (``single`` None: across prompts only)."""
    m = multi.mode(mode) if multi else None
    if m is not None and m.ratio_no_sink.n >= 2 and m.ratio_matched is not None:
        controls = {"generated-only ratio": direction(m.ratio_generated), "distance-matched ratio": direction(m.ratio_matched)}
        coef = coefficient_interval(multi.regression_of(mode))
        if coef is not None:
            controls["regression coefficient"] = direction(coef)
        return direction(m.ratio_no_sink), controls, f"across {multi.n_prompts} prompts"
    if single is None:
        return NOT_MEASURED, {}, "across prompts"
    controls = {
        "generated-only ratio": point_direction(single.generated_averages.get(mode)),
        "distance-matched ratio": point_direction(single.matched_averages.get(mode)),
    }
    return point_direction(single.no_sink_averages.get(mode)), controls, "in this run"


def distance_verdict(single: SingleRun | None, multi: MultiPrompt | None, mode: str = "isolated") -> tuple[str, str]:
    no_sink, controls, where = control_words(single, multi, mode)
    return distance_reading(no_sink, controls), where


def reading_sentence(single: SingleRun, multi: MultiPrompt | None, mode: str = "isolated") -> str:
    """One sentence: which reading survives, and which controls say so."""
    no_sink, controls, where = control_words(single, multi, mode)
    verdict = distance_reading(no_sink, controls)
    said = "; ".join(f"{name}: {word}" for name, word in controls.items())
    if verdict == NOT_MEASURED:
        return f"Whether it survives distance and token kind could not be judged {where} ({said})."
    if verdict == SURVIVES:
        return f'So, {where}, the reading "parallel tokens draw more attention" survives: every control still says more ({said}).'
    if verdict == DOES_NOT_SURVIVE:
        return (
            f'So, {where}, the reading "parallel tokens draw more attention" does not survive: once distance and token kind '
            f"are held fixed no control says more ({said}); what survives is that nearby tokens draw more attention than the "
            "prompt, parallel or not."
        )
    if verdict == PARTLY_SURVIVES:
        return (
            f'So, {where}, the reading "parallel tokens draw more attention" only partly survives ({said}): a good part of '
            'the raw "more" is recency and token kind, and what remains depends on the measure.'
        )
    return f'Without the first token the ratio is not "more" {where}, so the distance controls have nothing to explain ({said}).'


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


def standout_heads(cells: list[HeadCell], n: int = N_STANDOUT) -> dict[str, list[HeadCell]]:
    """The heads that stand out: largest sink share, largest and smallest parallel coefficient."""
    sink = by_measured(cells, lambda c: c.sink_share, reverse=True)[:n]
    coef = by_measured(cells, lambda c: c.parallel_coef)
    return {"sink": sink, "more": coef[::-1][:n], "less": coef[:n]}


def head_label(c: HeadCell) -> str:
    return f"L{c.layer}H{c.head}"


def _factor(c: HeadCell) -> str:
    """A head's parallel coefficient as a factor of attention."""
    return "n/a" if c.parallel_coef is None else f"{math.exp(c.parallel_coef):.2f}x"


def standout_text(cells: list[HeadCell]) -> str:
    top = standout_heads(cells)
    if not top["sink"]:
        return "not measured"
    return (
        "sink: "
        + ", ".join(f"{head_label(c)} ({num(c.sink_share, 2)})" for c in top["sink"])
        + "; parallel keys favoured: "
        + ", ".join(f"{head_label(c)} ({_factor(c)})" for c in top["more"])
        + "; parallel keys disfavoured: "
        + ", ".join(f"{head_label(c)} ({_factor(c)})" for c in top["less"])
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


def distance_section(doc: Document, single: SingleRun, multi: MultiPrompt | None) -> None:
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
