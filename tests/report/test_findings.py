"""The rendered prose: no crash and no claim when something was not measured, and no sentence that contradicts its statistics."""

from __future__ import annotations

import dataclasses
import re

from tempo_lens.report import render_findings
from tempo_lens.analysis.metrics.schema import Interval, MissingStep, NamedInterval, SharedUnique


def _paragraph_with(md: str, needle: str) -> str:
    return next(block for block in md.split("\n\n") if needle in block)


def test_a_mode_without_a_measured_step_renders_without_claims(metrics):
    """The visible run has no earlier parallel set, so every visible value is missing. (A report pairs only runs made
    with the same settings, so the case is the tiny report's metrics with the visible values taken out.)"""
    single = metrics.single_run
    gone = [MissingStep("visible", r.step, "no earlier parallel set to measure") for r in single.ratios if r.mode == "visible"]
    no_visible = {
        name: dataclasses.replace(getattr(single, name), visible=None)
        for name in ("mode_averages", "set_ratio_averages", "no_sink_averages", "generated_averages", "matched_averages")
    }
    single = dataclasses.replace(
        single,
        ratios=[r for r in single.ratios if r.mode != "visible"],
        missing_steps=[m for m in single.missing_steps if m.mode != "visible"] + gone,
        baseline=[b for b in single.baseline if b.mode != "visible"],
        baseline_averages=[b for b in single.baseline_averages if b.mode != "visible"],
        **no_visible,
    )
    assert gone and single.mode_averages.isolated is not None
    md = render_findings(dataclasses.replace(metrics, single_run=single)).to_markdown()
    assert "nan" not in md.lower().replace("nanoseconds", "")
    assert "### 2. Isolation Mode Has an Unmeasured Effect" in md
    assert "- **Visible mode:** n/a (not measured)" in md
    assert "in visible mode" in md and "attention not measured against non-parallel tokens in visible mode" in md
    assert re.search(r"cannot be compared: isolated [0-9.]+x, visible n/a", md)


def test_nothing_measured_at_all(metrics):
    empty = dataclasses.replace(
        metrics.single_run, ratios=[], missing_steps=[], baseline=[], layer_ratio=[], entropy=[], depth=[], heads=[], kv_groups=[],
        mode_averages=dataclasses.replace(metrics.single_run.mode_averages, isolated=None, visible=None),
        no_sink_averages=dataclasses.replace(metrics.single_run.no_sink_averages, isolated=None, visible=None),
        baseline_averages=[SharedUnique("isolated", None, None)], sibling_preference=Interval(None), script_chain=[],
    )
    md = render_findings(dataclasses.replace(metrics, single_run=empty, multi_prompt=None, pruning=None)).to_markdown()
    assert "could not be measured" in md and "cannot speak to parallel-token attention" in md
    assert "nan" not in md.lower()
    assert "layer entropy was not measured" in md and "head specialisation was not measured" in md


def test_an_interval_containing_one_is_no_reliable_difference(metrics):
    single = dataclasses.replace(metrics.single_run, sibling_preference=Interval(1.052, 0.982, 1.124, n=26, p=0.17))
    md = render_findings(dataclasses.replace(metrics, single_run=single)).to_markdown()
    line = next(l for l in md.splitlines() if "1.052 [0.982, 1.124]" in l)
    assert line.endswith("no reliable difference") and "more attention" not in line


def test_a_difference_under_the_tolerance_is_minimal(metrics):
    single = dataclasses.replace(metrics.single_run, baseline_averages=[SharedUnique("isolated", 0.508, 0.506), SharedUnique("visible", 0.504, 0.505)])
    md = render_findings(dataclasses.replace(metrics, single_run=single, multi_prompt=None)).to_markdown()
    assert "sharing gives more attention" not in md and "gives parallel tokens more attention" not in md
    assert "shared positions 0.508x, unique positions 0.506x (shared - unique = 0.002: minimal)" in md
    assert "position sharing does not cause the down-weighting" in md


def test_the_report_says_which_of_interval_and_test_decides(metrics):
    pair = Interval(0.039, 0.004, 0.089, n=13, p=0.065, null=0.0)
    multi = metrics.multi_prompt
    paired = [p for p in multi.paired if p.key != "shared_minus_unique_isolated"]
    multi = dataclasses.replace(multi, paired=paired + [NamedInterval("shared_minus_unique_isolated", "Shared - unique positions (isolated)", pair)])
    md = render_findings(dataclasses.replace(metrics, multi_prompt=multi)).to_markdown()
    assert "the interval decides" in md.lower() or "The interval decides" in md
    assert "0.039 [0.004, 0.089] (n = 13), p = 0.065: more, though the permutation test does not confirm it" in md


def test_pruned_siblings_are_compared_with_the_kept_top_sibling_at_the_same_step(report):
    md = report["md"]
    pruning = report["metrics"]["pruning"]
    outcomes = {o["outcome"]: o["attention"]["mean"] for o in pruning["outcomes"]}
    if "pruned" not in outcomes:
        return
    paragraph = _paragraph_with(md, "At the step that decided their set")
    assert f"{outcomes['pruned']:.3f}" in paragraph and f"{outcomes['kept (top sibling)']:.3f}" in paragraph
    assert "measured at that same step" in paragraph and "Paired per run (pruned - kept top" in paragraph
    assert "drew less attention than surviving" not in md
