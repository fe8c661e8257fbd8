"""The report's control sections: the reference's hypotheses tested, the measured baseline, and the new analyses."""

from __future__ import annotations

from ..analysis.metrics.schema import MODES, Interval, MultiPrompt, Pruning, SingleRun
from ..analysis.verdicts import (
    MINIMAL,
    NO_DOWN_WEIGHTING,
    NOT_MEASURED,
    TOLERANCE,
    accounts_for,
    direction,
    has_interval,
    interval_verdict,
    point_direction,
    position_sharing_role,
)
from ..figures import report as plots
from .document import Document
from .findings_distance import distance_section
from .ordering import by_measured
from .text import ci_text, ci_with_verdict, compared, difference, explains, mean_of, num, p_text, times

MULTI_MEASURES = (
    ("Ratio", "ratio"),
    ("Ratio, reference script's definition", "script_ratio"),
    ("Ratio without first token", "ratio_no_sink"),
    ("Set mass / token mean", "set_ratio"),
    ("Ratio at unique positions", "ratio_unique"),
)
"""The across-prompt table's measures: (label, :class:`~.schema.ModeIntervals` field)."""


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


def sink_reading(single: SingleRun, multi: MultiPrompt | None) -> str:
    sink = single.no_sink_averages
    verdict, where = sink_verdict(single, multi)
    return (
        f"leaving out the first token (the attention sink) gives isolated {times(sink.isolated)} and visible {times(sink.visible)} "
        f"(parallel tokens get {compared(point_direction(mean_of([sink.isolated, sink.visible])), 'an average non-sink token')}); "
        f"{where}, {explains('the first token', verdict)}."
    )


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


def hypotheses_section(doc: Document, single: SingleRun, multi: MultiPrompt | None) -> None:
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
    _implications(doc, single, multi)


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


def _implications(doc: Document, single: SingleRun, multi: MultiPrompt | None) -> None:
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


def baseline_section(doc: Document, single: SingleRun) -> None:
    doc.h(2, "Comparison to Baseline")
    doc.p(
        "The reference report assumed what standard generation would show. Here the baseline is measured: the same token sequence is "
        "replayed teacher-forced with every token at its own position (RoPE sharing ablated through the same hooks, mask unchanged)."
    )
    rows = sorted(single.baseline, key=lambda r: (r.step, r.mode))
    doc.table(
        ["Step", "Mode", "Shared positions (TEMPO)", "Unique positions (baseline)", "Shared - unique"],
        [[r.step, r.mode.upper(), times(r.ratio), times(r.ratio_unique), num(difference(r.ratio, r.ratio_unique))] for r in rows],
    )
    doc.bullets(
        [
            f"**{b.mode.capitalize()} average:** shared {times(b.shared)}, unique {times(b.unique)} "
            f"(difference {num(difference(b.shared, b.unique))}: {point_direction(difference(b.shared, b.unique), 0.0)})"
            for b in single.baseline_averages
        ]
    )
    base = single.baseline_of("isolated")
    if base is None:
        return
    unique_word = point_direction(base.unique)
    role = position_sharing_role(
        point_direction(base.shared), unique_word, point_direction(difference(base.shared, base.unique), 0.0)
    )
    doc.p(
        f"**Conclusion (this run, point estimates):** with unique positions parallel tokens receive {compared(unique_word)} "
        f"({times(base.unique)}), and {explains('position sharing', role)}"
        + ("; the down-weighting is present with ordinary positions too." if unique_word == "less" else ".")
    )


def _interval_row(label: str, ci: Interval | None) -> list[str]:
    return [label, ci_text(ci), p_text(ci.p if ci else None), interval_verdict(ci).phrase()]


def beyond_section(doc: Document, single: SingleRun, multi: MultiPrompt | None, pruning: Pruning | None) -> None:
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
    distance_section(doc, single, multi)
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
