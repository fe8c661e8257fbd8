"""Mechanistic Explanations: the reference report's hypotheses, each with what this run's controls say."""

from __future__ import annotations

from ...analysis.metrics.schema import MODES, Interval, Metrics, MultiPrompt, SingleRun
from ...analysis.verdicts import MINIMAL, NOT_MEASURED, direction, has_interval, point_direction
from ..document import Document
from ..readings import sharing_verdict
from ..text import ci_text, ci_with_verdict, compared, difference, explains, mean_of, num, times


def render(doc: Document, metrics: Metrics) -> None:
    single, multi = metrics.single_run, metrics.multi_prompt
    doc.h(2, "Mechanistic Explanations (hypotheses from the reference report, tested)")
    doc.p(
        "The reference report offered these explanations without controls. Each is stated as a hypothesis, followed by what this run's controls say."
    )
    overall = point_direction(mean_of(r.ratio for r in single.ratios))
    doc.h(
        3,
        "Why Do Parallel Tokens Receive "
        + {"less": "Less", "more": "More", MINIMAL: "About as Much"}.get(overall, "Less or More")
        + " Attention?",
    )
    doc.h(4, "Hypothesis 1: RoPE Position Confusion")
    doc.p("*Hypothesis:* tokens with identical positional encodings are treated as less informative and down-weighted.")
    evidence = []
    for b in single.baseline_averages:
        diff = difference(b.shared, b.unique)
        evidence.append(
            f"Single run, {b.mode}: shared positions {times(b.shared)}, unique positions {times(b.unique)} "
            f"(shared - unique = {num(diff)}: {point_direction(diff, 0.0)})"
        )
    for mode in MODES:
        pair = multi.pair(f"shared_minus_unique_{mode}") if multi else None
        if pair:
            evidence.append(f"{multi.n_prompts} prompts, {mode}: shared - unique = {ci_with_verdict(pair)}")
    role, where = sharing_verdict(single, multi)
    doc.p("*What the controls say:*")
    doc.bullets(
        evidence + ([f"Reading ({where}): {explains('position sharing', role)}."] if role != NOT_MEASURED else [])
        or ["no unique-position control was run"]
    )
    doc.h(4, "Hypothesis 2: Uncertainty Penalty")
    doc.p("*Hypothesis:* parallel tokens are lower-probability alternatives, and the model down-weights less likely tokens.")
    pref = single.sibling_preference
    evidence = [
        "Within earlier parallel sets, attention to the less likely siblings / attention to the most likely sibling "
        "(single runs, mean over their steps and sets): "
        + (
            ci_with_verdict(pref)
            if has_interval(pref)
            else f"{ci_text(pref)}: {direction(pref)} (a point estimate: steps and sets of one run are not independent samples)"
        )
    ]
    if multi:
        evidence.append(
            f"{multi.n_prompts} prompts (one value per prompt: each run's mean, averaged over its modes): "
            f"{ci_with_verdict(multi.sibling_preference)}"
        )
    evidence.append(_preference_reading(pref, multi))
    doc.p("*What the controls say:*")
    doc.bullets(evidence)
    doc.h(4, "Hypothesis 3: Information Redundancy")
    doc.p(
        "*Hypothesis:* siblings split attention between them, so each gets less, while a whole set gets about as much as one ordinary token."
    )
    evidence = [
        f"Single run, {m}: mass of a whole parallel set / mean weight of one non-parallel token = {times(single.set_ratio_averages.get(m))} "
        f"({point_direction(single.set_ratio_averages.get(m))})"
        for m in MODES
    ]
    for m in multi.modes if multi else []:
        evidence.append(f"{multi.n_prompts} prompts, {m.mode}: a set against one token: {ci_with_verdict(m.set_ratio)}")
    evidence.append(_redundancy_reading(single, multi))
    doc.p("*What the controls say:*")
    doc.bullets(evidence)
    _isolation_hypothesis(doc, single, multi)


def _preference_reading(pref: Interval, multi: MultiPrompt | None) -> str:
    """Hypothesis 2's reading: across prompts when measured, else the single runs' steps and sets."""
    ci, where = (
        (multi.sibling_preference, f"across {multi.n_prompts} prompts")
        if multi and multi.sibling_preference.n >= 2
        else (pref, "in the single runs")
    )
    word = direction(ci)
    if word == "less":
        text = (
            "less likely siblings get less attention than the most likely sibling of their set, as an uncertainty penalty "
            "would predict, within a set"
        )
    elif word == "more":
        text = "less likely siblings get more attention than the most likely one, against an uncertainty penalty"
    elif word == NOT_MEASURED:
        return "Reading: not measured (no earlier set with two or more visible siblings)."
    else:
        text = "no reliable difference between less likely siblings and the most likely one: no sign of an uncertainty penalty"
    return (
        f"Reading ({where}): {text}. This compares siblings with each other; whether parallel tokens as a whole get less "
        "attention than other tokens is the question of *2b* (distance and token kind)."
    )


def _redundancy_reading(single: SingleRun, multi: MultiPrompt | None) -> str:
    """Hypothesis 3's reading: reconciles the single run's point estimate with the interval across prompts."""
    single_value = single.set_ratio_averages.get("isolated")
    single_word = point_direction(single_value)
    iso = multi.mode("isolated") if multi else None
    if iso is None or iso.set_ratio.n < 2:
        return (
            f"Reading (single run, isolated, point estimate): a whole set gets {compared(single_word, 'one ordinary token')}"
            f" ({times(single_value)})."
        )
    word = direction(iso.set_ratio)
    conclusion = {
        "more": "a whole set draws more than one ordinary token, so siblings do not simply split one token's share",
        "less": "a whole set draws less than one ordinary token",
    }.get(word, "a whole set draws about what one ordinary token does, as the hypothesis says")
    return (
        f"Reading: the single run is one prompt and says {single_word} ({times(single_value)}, a point estimate with no "
        f"interval); the {multi.n_prompts} prompts say {word} ({ci_text(iso.set_ratio)}; n = runs with a measured step). "
        "They do not contradict each other: one prompt is one draw, and single prompts spread more widely than the interval "
        f"of their mean. The prompts decide: {conclusion}."
    )


def _isolation_hypothesis(doc: Document, single: SingleRun, multi: MultiPrompt | None) -> None:
    a = single.mode_averages
    word = point_direction(difference(a.isolated, a.visible), 0.0)
    doc.h(
        3,
        "Why Does Isolation Have Little Effect on Attention to Earlier Parallel Tokens?"
        if word == MINIMAL
        else "How Does Isolation Change Attention to Earlier Parallel Tokens?",
    )
    iso, vis = single.intra("isolated"), single.intra("visible")
    same = multi.pair("same_tokens") if multi else None
    doc.p(
        "Isolation removes a sibling's view of its own step's other siblings; measured here, the later siblings' attention to them is "
        f"{num(vis.to_siblings_later if vis else None)} in visible mode and {num(iso.to_siblings_later if iso else None)} in isolated mode. "
        "Cross-step attention to earlier sets is not masked in either mode; the single-run averages differ by "
        f"{num(difference(a.isolated, a.visible))} ({word})"
        + (
            f"; on the same tokens with the mask toggled, across {multi.n_prompts} prompts, isolated - visible = {ci_with_verdict(same)}."
            if same
            else "."
        )
    )
