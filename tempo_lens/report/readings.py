"""Readings more than one section states: verdicts from the controls, the distance reading, the knock-out's word.

Each takes the parts of one :class:`~.schema.Metrics` it reads; words come from :mod:`.verdicts`.
"""

from __future__ import annotations

import math

from ..analysis.metrics.causal_schema import KnockoutMetrics
from ..analysis.metrics.schema import MODES, HeadCell, Interval, MultiPrompt, Regression, ScriptChainRow, SingleRun
from ..analysis.verdicts import (
    DOES_NOT_SURVIVE,
    LESS,
    MORE,
    NO_RELIABLE,
    NOT_MEASURED,
    PARTLY_SURVIVES,
    SURVIVES,
    accounts_for,
    direction,
    distance_reading,
    interval_verdict,
    point_direction,
    position_sharing_role,
)
from .text import by_measured, difference, mean_of, num

COVERS = "This covers this model and this data only: it shows that the script's definition produces the reference's kind of gap, a sufficient explanation of the reference's number; it does not show what cogito-3B's own gap would be under the intended definition, which was never measured."


N_STANDOUT = 3


def sink_verdict(single: SingleRun, multi: MultiPrompt | None) -> tuple[str, str]:
    """("accounts for" ..., where the words came from): intervals across prompts when there are any, else the single runs."""
    iso = multi.mode("isolated") if multi else None
    if iso is not None and iso.ratio.n >= 2:
        return accounts_for(
            direction(iso.ratio), direction(iso.ratio_no_sink), iso.ratio.mean, iso.ratio_no_sink.mean
        ), "across prompts"
    with_sink = mean_of(single.mode_averages.get(m) for m in MODES)
    without = mean_of(single.no_sink_averages.get(m) for m in MODES)
    return accounts_for(point_direction(with_sink), point_direction(without), with_sink, without), "in this run"


def sharing_verdict(single: SingleRun, multi: MultiPrompt | None) -> tuple[str, str]:
    """What position sharing does to the down-weighting, from the unique-position control (intervals first)."""
    iso = multi.mode("isolated") if multi else None
    diff = multi.pair("shared_minus_unique_isolated") if multi else None
    if iso is not None and iso.ratio_unique is not None and diff is not None and diff.n >= 2:
        return position_sharing_role(direction(iso.ratio), direction(iso.ratio_unique), direction(diff)), "across prompts"
    base = single.baseline_of("isolated")
    if base is None:
        return NOT_MEASURED, "in this run"
    return (
        position_sharing_role(
            point_direction(base.shared), point_direction(base.unique), point_direction(difference(base.shared, base.unique), 0.0)
        ),
        "in this run",
    )


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


def knockout_word(ci: Interval | None) -> str:
    """Which reading the knock-out ratio supports, from its interval (weakened when the permutation test disagrees)."""
    verdict = interval_verdict(ci)
    if verdict.word == NOT_MEASURED:
        return "not measured"
    if verdict.word in (LESS, MORE) and verdict.reliable:
        return f"parallel keys matter {verdict.word} than matched keys for the next token"
    if verdict.word in (LESS, MORE):
        return (
            f"no reliable difference between parallel and matched keys for the next token (the interval leans to "
            f"{verdict.word}, but the permutation test does not confirm it)"
        )
    return "parallel keys matter no differently from matched keys for the next token (no reliable difference)"


def settled_word(ci: Interval | None) -> str:
    """The interval's word, "no reliable difference" where the permutation test does not confirm a direction."""
    verdict = interval_verdict(ci)
    return verdict.word if verdict.reliable or verdict.word not in (LESS, MORE) else NO_RELIABLE


def knockout_status(knockout: KnockoutMetrics) -> str:
    return knockout.status or "not measured (no run had a step with both a parallel and a matched arm)"


def script_gap(row: ScriptChainRow | None) -> float | None:
    return difference(row.isolated, row.visible) if row else None
