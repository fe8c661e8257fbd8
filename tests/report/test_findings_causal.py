"""The knock-out's words in the report, from metrics whose knock-out is set by hand."""

from __future__ import annotations

from tempo_lens.analysis.metrics.causal_schema import ArmOutcome, Causal, KnockoutBlock, KnockoutMetrics
from tempo_lens.analysis.metrics.codec import clean
from tempo_lens.analysis.metrics.cross_model import entry_from_metrics
from tempo_lens.analysis.metrics.schema import Interval
from tempo_lens.report import render_findings


def _block(mode: str, block: str, ratio: Interval) -> KnockoutBlock:
    arms = [ArmOutcome(arm, Interval(0.1, 0.05, 0.2, 5), Interval(0.2, 0.0, 0.4, 5)) for arm in ("parallel", "matched", "sink")]
    return KnockoutBlock(mode, block, [0, 1], 5, 0, ratio, Interval(0.01, -0.02, 0.04, 5, 0.5, null=0.0), arms)


def _with_knockout(metrics, isolated: Interval, visible: Interval, late: Interval):
    blocks = [_block("isolated", "all", isolated), _block("visible", "all", visible), _block("isolated", "late", late)]
    metrics.multi_prompt.causal = clean(Causal(knockout=KnockoutMetrics(status="", seconds=3.5, n_forwards=40, blocks=blocks)))
    return metrics


def test_the_summary_says_which_reading_the_knockout_supports(metrics):
    more = Interval(2.0, 1.5, 2.6, 5, 0.01)
    unclear = Interval(0.97, 0.8, 1.2, 5, 0.7)
    md = render_findings(_with_knockout(metrics, more, unclear, more)).to_markdown()
    summary = md.split("## Key Findings")[0]
    assert "isolated: 2.000 [1.500, 2.600] (n = 5), p = 0.010: parallel keys matter more than matched keys" in summary
    assert "visible: 0.970 [0.800, 1.200] (n = 5), p = 0.700: parallel keys matter no differently" in summary
    assert "How the attention measures line up (isolated)" in summary
    section = md.split("## Intervention: the Knock-out")[1]
    assert "40 batched forwards, 3.5 s wall" in section
    assert "late (layers 0-1)" in section and "Blocks whose ratio is reliably away from 1: isolated late; visible none." in section


def test_a_weak_permutation_test_keeps_the_reading_at_no_difference(metrics):
    not_confirmed = Interval(1.4, 1.05, 1.9, 5, 0.2)  # the interval excludes 1, the test does not confirm it
    md = render_findings(_with_knockout(metrics, not_confirmed, not_confirmed, not_confirmed)).to_markdown()
    summary = md.split("## Key Findings")[0]
    assert "p = 0.200: no reliable difference between parallel and matched keys" in summary
    assert "leans to more, but the permutation test does not confirm it" in summary


def test_metrics_without_the_knockout_say_so(metrics):
    metrics.multi_prompt.causal = None
    md = render_findings(metrics).to_markdown()
    assert "## Intervention: the Knock-out" in md and "predate the knock-out" in md
    assert "**The knock-out**" not in md.split("## Key Findings")[0]
    metrics.multi_prompt.causal = clean(Causal(knockout=KnockoutMetrics(status="not run (no knockout.json beside the runs)")))
    md = render_findings(metrics).to_markdown()
    assert "not run (no knockout.json beside the runs)." in md.split("## Key Findings")[0]


def test_the_cross_model_table_carries_the_knockout(metrics):
    metrics = _with_knockout(metrics, Interval(0.5, 0.4, 0.6, 5, 0.01), Interval(1.0, 0.9, 1.1, 5, 0.9), Interval(1.0, 0.9, 1.1, 5))
    metrics.cross_model = [entry_from_metrics(metrics, "tiny")]
    md = render_findings(metrics).to_markdown()
    section = md.split("## Cross-model")[1]
    assert "| Knock-out KL(parallel) / KL(matched), isolated (geometric mean over prompts) | 0.500 [0.400, 0.600]" in section
    assert "tiny: parallel keys matter less than matched keys for the next token / parallel keys matter no differently" in section
    assert "**How the attention measures line up** (isolated;" in section and "tiny: less / " in section


def test_head_measures_name_standout_heads_with_intervals(metrics):
    from tempo_lens.analysis.metrics.causal_schema import HeadMeasureRow, HeadMeasures, StandoutHead

    def row(layer, head, distance, sink, entropy):
        return HeadMeasureRow(layer, head, 4, distance, distance - 1, distance + 1, sink, sink - 0.1, sink + 0.1, entropy,
                              entropy - 0.1, entropy + 0.1)

    heads = [row(0, 0, 9.0, 0.9, 0.2), row(0, 1, 1.5, 0.1, 1.0), row(1, 0, 6.0, 0.2, 2.0)]
    standout = [StandoutHead("distance", "highest", 0, 0), StandoutHead("distance", "lowest", 0, 1),
                StandoutHead("sink", "highest", 0, 0), StandoutHead("entropy", "lowest", 0, 0)]
    metrics.multi_prompt.causal = clean(Causal(knockout=KnockoutMetrics(status="not run"), head_measures=HeadMeasures("isolated", 4, heads, standout)))
    md = render_findings(metrics).to_markdown()
    part = md.split("**Heads over every step and prompt**")[1].split("**Per (layer, head) at one step**")[0]
    assert "| longest-range (highest mean logical distance) | L0H0 | 9.000 [8.000, 10.000] (n = 4) |" in part
    assert "| most local (lowest mean logical distance) | L0H1 | 1.500 [0.500, 2.500] (n = 4) |" in part
    assert "Named both longest-range and most sink-bound: L0H0." in part


def test_an_unconfirmed_knockout_lines_up_with_an_unreliable_measure(metrics):
    leans = Interval(0.3, 0.1, 0.95, 8, 0.13)  # interval below 1, test not confirming: no reliable difference
    metrics = _with_knockout(metrics, leans, leans, leans)
    iso = metrics.multi_prompt.mode("isolated")
    iso.ratio_matched = Interval(1.0, 0.8, 1.2, 8, 0.9)  # no reliable difference either
    summary = render_findings(metrics).to_markdown().split("## Key Findings")[0]
    assert "the distance-matched ratio (a ratio of arithmetic means) says no reliable difference" in summary
    assert "The knock-out agrees with the distance-matched ratio" in summary
