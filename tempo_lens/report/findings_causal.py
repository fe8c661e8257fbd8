"""The causal part of the findings report: the knock-out, how the attention measures line up with it, head measures.

Words come from :mod:`.verdicts` (the interval rule); definitions are in ``docs/definitions.md``.
"""

from __future__ import annotations

from ..analysis.metrics.causal_schema import Causal, KnockoutBlock, KnockoutMetrics, read_causal
from ..analysis.metrics.schema import MODES, Interval, Metrics, MultiPrompt
from ..analysis.verdicts import LESS, MORE, NO_RELIABLE, NOT_MEASURED, interval_verdict
from ..figures import causal as plots
from .document import Document
from .findings_distance import coefficient_interval
from .text import ci_text, ci_with_verdict, layer_list, num, p_clause, times

ARMS = ("parallel", "matched", "sink")
HEAD_WORDS = {
    ("distance", "highest"): "longest-range (highest mean logical distance)",
    ("distance", "lowest"): "most local (lowest mean logical distance)",
    ("sink", "highest"): "most sink-bound (highest first-token share)",
    ("entropy", "lowest"): "most focused (lowest entropy, nats)",
}


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


def _status(knockout: KnockoutMetrics) -> str:
    return knockout.status or "not measured (no run had a step with both a parallel and a matched arm)"


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
        return lead + _status(knockout) + "."
    readings = "; ".join(f"{b.mode}: {ci_text(b.ratio)}, {p_clause(b.ratio.p)}: {knockout_word(b.ratio)}" for b in blocks)
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
    wanted = settled_word(block.ratio if block else None)
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


def _block_label(b: KnockoutBlock) -> str:
    return f"{b.block} (layers {layer_list(b.layers)})"


def _arm_cells(b: KnockoutBlock, field: str) -> str:
    return " / ".join(ci_text(getattr(arm, field)) if (arm := b.arm(name)) else "n/a" for name in ARMS)


def knockout_section(doc: Document, metrics: Metrics) -> None:
    multi = metrics.multi_prompt
    causal = read_causal(multi)
    doc.h(2, "Intervention: the Knock-out")
    if multi is None or causal is None:
        doc.p("Not measured: the multi-prompt experiment did not run, or these metrics predate the knock-out.")
        return
    knockout = causal.knockout
    doc.p(
        "Attention weights alone cannot say which keys the model uses. For every step of the multi-prompt runs whose queries "
        "see earlier parallel keys, the run is replayed with the attention of that step's queries to those keys removed "
        "(scores set to -inf, renormalised) on the layers of one block; the **matched** arm removes as many non-parallel "
        "generated keys, each the nearest in logical distance to one parallel key (ties drawn with a fixed seed), and the "
        "**sink** arm removes the first token alone, to scale the other two. Each arm is measured by the KL divergence (nats) "
        "of the step's next-token distribution from the unablated replay's, and by whether the kept set changes. Per run: "
        "the mean over its steps; across prompts: one value per run, 95 % bootstrap interval; the ratio is the geometric mean "
        "of the per-run ratios, its interval and sign-flip p on the log ratios (`docs/definitions.md`)."
    )
    if not knockout.blocks:
        doc.p(f"The knock-out: {_status(knockout)}.")
        return
    doc.p(
        f"Cost: one replay per batch of (step, arm) pairs and layer block, {knockout.n_forwards} batched forwards, "
        f"{num(knockout.seconds, 1)} s wall ({num(knockout.cpu_seconds, 1)} s of CPU) during `analyze` (seed {knockout.seed})."
    )
    every = [b for b in knockout.blocks if b.block == "all"]
    doc.table(
        [
            "Mode",
            "Runs",
            "KL(parallel) / KL(matched), geometric mean [95 % CI]; p; word",
            "KL(parallel) - KL(matched) [95 % CI]",
            "Mean KL: parallel / matched / sink",
            "Kept set changed (share of steps): parallel / matched / sink",
        ],
        [
            [
                b.mode,
                b.n_runs,
                ci_with_verdict(b.ratio),
                ci_with_verdict(b.difference),
                _arm_cells(b, "kl"),
                _arm_cells(b, "kept_changed"),
            ]
            for b in every
        ],
    )
    doc.bullets([f"**{b.mode.capitalize()}:** {knockout_word(b.ratio)}." for b in every])
    unmeasurable = sum(b.n_ratio_unmeasurable for b in every)
    if unmeasurable:
        doc.p(
            f"Runs without a ratio (the matched arm's KL below the floor of 1e-9 nats): {unmeasurable}; their differences count."
        )
    doc.p("**Per layer block** (the knock-out on the early, middle or late third of the layers only: where the use happens):")
    doc.table(
        [
            "Mode",
            "Block",
            "KL ratio, geometric mean [95 % CI]; p; word",
            "KL difference [95 % CI]",
            "Kept set changed: parallel / matched / sink",
        ],
        [
            [b.mode, _block_label(b), ci_with_verdict(b.ratio), ci_text(b.difference), _arm_cells(b, "kept_changed")]
            for b in knockout.blocks
            if b.block != "all"
        ],
    )
    where = {
        mode: [b.block for b in knockout.blocks if b.mode == mode and b.block != "all" and interval_verdict(b.ratio).reliable]
        for mode in MODES
    }
    doc.p(
        "Blocks whose ratio is reliably away from 1: "
        + "; ".join(f"{mode} {', '.join(blocks) or 'none'}" for mode, blocks in where.items())
        + "."
    )
    if causal.key_attention:
        doc.figure(
            "key-attention",
            plots.key_attention_plot(causal.key_attention),
            "Per-key attention, parallel keys against their distance-matched non-parallel keys, on a log scale (every measured "
            "step of every run; one mode shown, the other in the legend); dashed: arithmetic means, dotted: geometric means",
        )


def head_measures_part(doc: Document, metrics: Metrics) -> None:
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
        plots.head_measures_plot(measures),
        "Every (layer, head) over every step and prompt: mean logical distance against first-token share, coloured by entropy",
    )
