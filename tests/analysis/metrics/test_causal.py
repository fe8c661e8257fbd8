"""The causal part of the multi-prompt metrics, on saved knock-outs and hand-built runs whose answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tempo_lens.analysis.knockout_store import (
    FORMAT_VERSION,
    KIND,
    KnockoutFile,
    KnockoutStepRecord,
    RunKnockoutRecord,
    read_knockout,
    save_knockout,
)
from tempo_lens.analysis.metrics.causal import head_measures, key_attention, knockout_block, knockout_from_file, log_ratio_interval
from tempo_lens.capture import CapturedRun
from tempo_lens.layout import TokenLayout


def _step(step: int, arm: str, kl: float | None, changed: bool = False) -> KnockoutStepRecord:
    return KnockoutStepRecord(step=step, arm=arm, n_keys=2, kl=kl, kept_changed=changed)


def _run(name: str, mode: str, steps: list[KnockoutStepRecord]) -> RunKnockoutRecord:
    return RunKnockoutRecord(run=name, mode=mode, prompt_index=0, blocks={"all": steps})


def test_log_ratio_interval_is_a_geometric_mean_on_log_ratios():
    cancel = log_ratio_interval([4.0, 0.25])
    assert cancel.mean == pytest.approx(1.0) and cancel.null == 1.0 and cancel.n == 2
    assert cancel.p == pytest.approx(1.0)  # the two log ratios are +-log 4: every sign pattern is as far from 0
    same = log_ratio_interval([2.0, 2.0, 2.0])
    assert (same.mean, same.lo, same.hi) == pytest.approx((2.0, 2.0, 2.0))
    assert log_ratio_interval([2.0, 0.0, float("nan")]).n == 1  # non-positive and undefined ratios are left out


def test_knockout_block_takes_one_value_per_run():
    runs = [
        # ratio (0.4 + 0.2) / 2 / ((0.1 + 0.05) / 2) = 4, difference 0.225; parallel changed the kept set at 1 of 2 steps
        _run("a", "isolated", [_step(1, "parallel", 0.4, True), _step(1, "matched", 0.1), _step(1, "sink", 2.0, True),
                               _step(2, "parallel", 0.2), _step(2, "matched", 0.05), _step(2, "sink", 1.0)]),
        # ratio 0.1 / 0.4 = 1/4, difference -0.3
        _run("b", "isolated", [_step(1, "parallel", 0.1), _step(1, "matched", 0.4, True)]),
        # matched KL 0: no ratio, but its difference counts
        _run("c", "isolated", [_step(1, "parallel", 0.3), _step(1, "matched", 0.0)]),
        # a step with no matched arm is not measured: no value for this run
        _run("d", "isolated", [_step(1, "parallel", 9.0), _step(1, "sink", 9.0)]),
    ]
    block = knockout_block("isolated", "all", [0, 1], runs)
    assert block.n_runs == 3 and block.n_ratio_unmeasurable == 1
    assert block.ratio.mean == pytest.approx(1.0) and block.ratio.n == 2
    assert block.difference.mean == pytest.approx((0.225 - 0.3 + 0.3) / 3) and block.difference.null == 0.0
    parallel, matched, sink = block.arm("parallel"), block.arm("matched"), block.arm("sink")
    assert parallel.kept_changed.mean == pytest.approx((0.5 + 0 + 0) / 3)
    assert matched.kept_changed.mean == pytest.approx((0 + 1 + 0) / 3)
    assert sink.kl.mean == pytest.approx(1.5) and sink.kl.n == 1 and sink.kept_changed.mean == pytest.approx(0.5)
    assert parallel.kl.mean == pytest.approx((0.3 + 0.1 + 0.3) / 3)


def _file(runs: list[RunKnockoutRecord], digest: str = "abc") -> KnockoutFile:
    layers = {"all": [0, 1, 2], "early": [0], "middle": [1], "late": [2]}
    for r in runs:
        r.blocks = {b: r.blocks["all"] for b in layers}
    return KnockoutFile(KIND, FORMAT_VERSION, digest, 0, layers, 1.5, 12, runs)


def test_saved_knockout_reads_back_and_refuses_edits_and_other_runs(tmp_path):
    record = _file([_run("a", "isolated", [_step(1, "parallel", 0.5), _step(1, "matched", 0.25)])])
    path = save_knockout(tmp_path, record)
    back, reason = read_knockout(tmp_path, "abc")
    assert reason == "" and back is not None and back.runs[0].blocks["all"][0].kl == 0.5
    metrics = knockout_from_file(back)
    assert [b.block for b in metrics.blocks] == ["all", "early", "middle", "late"]
    assert metrics.block("isolated", "late").ratio.mean == pytest.approx(2.0) and metrics.block("visible") is None
    assert read_knockout(tmp_path, "other")[1].startswith("not used:") and "other runs" in read_knockout(tmp_path, "other")[1]
    data = json.loads(path.read_text())
    data["runs"][0]["blocks"]["all"][0]["kl"] = 0.9
    path.write_text(json.dumps(data))
    assert "checksum" in read_knockout(tmp_path, "abc")[1]
    path.write_text("{not json")
    assert read_knockout(tmp_path)[0] is None
    path.unlink()
    assert read_knockout(tmp_path)[1].startswith("not run")


def _captured(attention_of_step) -> CapturedRun:
    layout = TokenLayout.from_prompt([1, 10, 11])  # physical 0-2, logical 0-2
    layout.append_step([20, 21], [0.5, 0.4])  # 3 4 at logical 3: a parallel set
    layout.append_step([22], [0.9])  # 5 at logical 4
    layout.append_step([23], [0.9])  # 6 at logical 5
    layout.append_step([24], [0.9])  # 7 at logical 6
    attention = {s: attention_of_step(layout, s) for s in range(layout.n_steps)}
    return CapturedRun("r", "p", "isolated", layout, [str(t) for t in layout.token_ids], [0], attention)


def test_key_attention_separates_arithmetic_and_geometric_means():
    def weights(layout, step):
        r = layout.step_range(step)
        a = np.full((1, 1, 1, len(r), r.stop), 1e-3)
        if step == 3:  # queries at logical 6: parallel 3 (heavy) and 4 (light) at distance 3; matched: 2 (distance 4), 5 (2)
            a[..., 3], a[..., 4], a[..., 5] = 0.5, 1e-4, 1e-2
        return a

    (parallel, matched) = key_attention("isolated", [_captured(weights)])
    # step 1 (logical 4): parallel 3 4, matched 2; step 2 (logical 5): parallel 3 4, matched 2 5; step 3 as above
    assert (parallel.n_keys, matched.n_keys) == (6, 5)
    assert parallel.arithmetic_mean == pytest.approx((4e-3 + 0.5 + 1e-4) / 6)
    assert matched.arithmetic_mean == pytest.approx((4e-3 + 1e-2) / 5)
    assert parallel.geometric_mean == pytest.approx(math.exp((4 * math.log(1e-3) + math.log(0.5) + math.log(1e-4)) / 6))
    assert parallel.kind == "parallel" and matched.kind == "matched"
    assert parallel.arithmetic_mean > matched.arithmetic_mean  # one heavy parallel key
    assert parallel.geometric_mean < parallel.arithmetic_mean / 10  # the bulk is light
    assert sum(parallel.counts) == parallel.n_keys and sum(matched.counts) == matched.n_keys
    assert len(parallel.log10_edges) == len(parallel.counts) + 1
    lo, hi = parallel.log10_edges[0], parallel.log10_edges[-1]
    assert lo == pytest.approx(math.log10(1e-4)) and hi == pytest.approx(math.log10(0.5))


def test_head_measures_name_the_sink_head_with_an_interval():
    def weights(layout, step):
        r = layout.step_range(step)
        a = np.zeros((1, 1, 2, len(r), r.stop))
        a[:, :, 0, :, 0] = 1.0  # head 0: all on the sink
        visible = ~layout.blocked("isolated", n_queries=len(r), n_keys=r.stop).numpy()
        a[:, :, 1] = visible / visible.sum(-1, keepdims=True)  # head 1: uniform over what it sees
        return a

    measures = head_measures([_captured(weights), _captured(weights)])
    assert measures is not None and measures.n_runs == 2
    sink = [s for s in measures.standout if s.measure == "sink" and s.direction == "highest"]
    assert (sink[0].layer, sink[0].head) == (0, 0)
    focused = [s for s in measures.standout if s.measure == "entropy" and s.direction == "lowest"]
    assert (focused[0].layer, focused[0].head) == (0, 0)
    row = measures.head(0, 0)
    assert row.sink == pytest.approx(1.0) and row.entropy == pytest.approx(0.0, abs=1e-6)
    assert head_measures([]) is None
