"""Intervention: the Knock-out, per mode and per layer block, with the per-key attention figure."""

from __future__ import annotations

from ...analysis.metrics.causal_schema import KnockoutBlock, read_causal
from ...analysis.metrics.schema import MODES, Metrics
from ...analysis.verdicts import interval_verdict
from ...figures import causal as causal_plots
from ..document import Document
from ..readings import knockout_status, knockout_word
from ..text import ci_text, ci_with_verdict, layer_list, num

ARMS = ("parallel", "matched", "sink")


def render(doc: Document, metrics: Metrics) -> None:
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
        "**sink** arm removes the first token alone (on every layer), to scale the other two. Each arm is measured by the KL divergence (nats) "
        "of the step's next-token distribution from the unablated replay's, and by whether the kept set changes. Per run: "
        "the mean over its steps; across prompts: one value per run, 95 % bootstrap interval; the ratio is the geometric mean "
        "of the per-run ratios, its interval and sign-flip p on the log ratios (`docs/definitions.md`)."
    )
    if not knockout.blocks:
        doc.p(f"The knock-out: {knockout_status(knockout)}.")
        return
    sample = (
        ""
        if knockout.sampled_prompts is None
        else f" It replayed the runs of {knockout.sampled_prompts} prompts spread evenly over the prompt set (a setting of the "
        "study, for its time), so its intervals are over those prompts."
    )
    doc.p(
        f"Cost: one unablated forward per run fills a KV cache, then each (step, arm, layer block) is one batch row feeding only "
        f"that step's tokens after it: {knockout.n_forwards} batched forwards, {num(knockout.seconds, 1)} s wall "
        f"({num(knockout.cpu_seconds, 1)} s of CPU) (seed {knockout.seed}).{sample}"
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
            "Kept set changed: parallel / matched",
        ],
        [
            [b.mode, _block_label(b), ci_with_verdict(b.ratio), ci_text(b.difference), _arm_cells(b, "kept_changed", ARMS[:2])]
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
            causal_plots.key_attention_plot(causal.key_attention),
            "Per-key attention, parallel keys against their distance-matched non-parallel keys, on a log scale (every measured "
            "step of every run; one mode shown, the other in the legend); dashed: arithmetic means, dotted: geometric means",
        )


def _block_label(b: KnockoutBlock) -> str:
    return f"{b.block} (layers {layer_list(b.layers)})"


def _arm_cells(b: KnockoutBlock, field: str, arms: tuple[str, ...] = ARMS) -> str:
    return " / ".join(ci_text(getattr(arm, field)) if (arm := b.arm(name)) else "n/a" for name in arms)
