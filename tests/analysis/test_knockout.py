"""The attention knock-out: key choice on hand-built layouts, and the KL against an HF eager recomputation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tempo_lens.analysis.knockout import (
    StepKnockout,
    kl_divergence,
    knockout_run,
    knockout_steps,
    layer_blocks,
    matched_keys,
    parallel_keys,
    summarise_run,
)
from tempo_lens.generation.steps import next_distribution
from tempo_lens.layout import TokenLayout
from tests.helpers import hf_eager, reference_mask


def _layout() -> TokenLayout:
    """Prompt of 3; steps: [a], [b1 b2], [c], [d], [e1 e2], [f] -> physical 3 | 4 5 | 6 | 7 | 8 9 | 10."""
    layout = TokenLayout.from_prompt([1, 10, 11])
    for ids in ([20], [21, 22], [23], [24], [25, 26], [27]):
        layout.append_step(ids, [0.9 / len(ids)] * len(ids))
    return layout


def test_layer_blocks_split_the_layers_into_thirds():
    blocks = layer_blocks(10)
    assert blocks["all"] == list(range(10))
    assert blocks["early"] + blocks["middle"] + blocks["late"] == list(range(10))
    assert len(blocks["early"]) == len(blocks["late"]) == 3


def test_parallel_keys_are_the_visible_siblings_of_earlier_parallel_steps():
    layout = _layout()
    assert knockout_steps(layout) == [2, 3, 4, 5]  # step 1's own siblings are not earlier keys
    assert parallel_keys(layout, 2) == [4, 5]
    assert parallel_keys(layout, 5) == [4, 5, 8, 9]
    layout.prune([5], at_step=2, score=0.1)  # hidden from step 3 on
    assert parallel_keys(layout, 3) == [4]


def test_matched_keys_are_non_parallel_generated_keys_nearest_in_distance():
    layout = _layout()
    keys, gap = matched_keys(layout, 4, np.random.default_rng(0))
    # step 4's query is at logical 7; parallel keys 4, 5 at logical 4 (distance 3); candidates 3 (d 4), 6 (d 2), 7 (d 1)
    assert keys == [3, 6]  # 3 and 6 tie at gap 1 for the first parallel key; the other one serves the second
    assert gap == pytest.approx(1.0)
    # step 2 sees only one non-parallel generated key (3) for two parallel keys: no control
    assert matched_keys(layout, 2, np.random.default_rng(0)) is None


def test_matched_keys_are_reproducible_with_a_seed():
    layout = _layout()
    layout.append_step([28], [0.9])  # step 6 sees parallel keys 4 5 8 9 and non-parallel 3 6 7 10
    draws = {tuple(matched_keys(layout, 6, np.random.default_rng(7))[0]) for _ in range(5)}
    assert draws == {(3, 6, 7, 10)}
    assert matched_keys(layout, 5, np.random.default_rng(7)) is None  # four parallel keys, three candidates


def test_kl_divergence_known_values():
    p = torch.tensor([0.5, 0.5])
    q = torch.tensor([0.25, 0.75])
    assert kl_divergence(p, p) == 0.0
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75))


def test_summary_ratio_difference_and_floor():
    records = [
        StepKnockout(2, "parallel", "all", 2, 0.4, True),
        StepKnockout(2, "matched", "all", 2, 0.1, False),
        StepKnockout(3, "parallel", "all", 2, 0.2, False),
        StepKnockout(3, "matched", "all", 2, 0.3, False),
        StepKnockout(4, "parallel", "all", 2, 9.9, True),  # no matched arm: left out
    ]
    summary = summarise_run(records)
    assert summary.n_steps == 2
    assert summary.kl_ratio == pytest.approx(0.3 / 0.2)
    assert summary.kl_difference == pytest.approx(0.1)
    assert summary.kept_changed_share["parallel"] == 0.5
    flat = [StepKnockout(2, "parallel", "all", 2, 0.4, True), StepKnockout(2, "matched", "all", 2, 0.0, False)]
    assert summarise_run(flat).kl_ratio is None
    assert summarise_run(records[4:]) is None


def _tiny_layout(model) -> TokenLayout:
    from tempo_lens.generation import generate

    result = generate(model, [1, 17, 42, 5, 63, 8], max_steps=6, threshold=1e-6, max_parallel=3, mode="isolated")
    sizes = result.layout.step_sizes()
    assert sizes.count(3) == len(sizes)
    return result.layout


@pytest.mark.parametrize("arm", ["parallel", "sink"])
def test_knockout_kl_equals_an_hf_eager_recomputation(tiny_bridges, tiny_dirs, arm):
    model = tiny_bridges["llama"]
    # a layout with single-token steps between parallel ones, so the matched arm exists too
    layout = TokenLayout.from_prompt([1, 17, 42, 5, 63, 8])
    for ids in ([30, 31], [32], [33], [34, 35], [36], [37, 38]):
        layout.append_step(ids, [0.6, 0.3][: len(ids)] if len(ids) == 2 else [0.9])
    records = [r for r in knockout_run(model, layout, "isolated", 0.2, 3) if r.arm == arm]
    assert records and {r.arm for r in records} == {arm}
    hf = hf_eager(tiny_dirs["llama"])
    ids = torch.tensor([layout.token_ids])
    pos = torch.tensor(layout.logical_positions)[None]
    base_mask = reference_mask(layout, "isolated")
    with torch.no_grad():
        base = hf(input_ids=ids, position_ids=pos, attention_mask=base_mask[None, None]).logits[0]
    for record in records:
        rows = layout.step_range(record.step)
        keys = parallel_keys(layout, record.step) if arm == "parallel" else [0]
        mask = base_mask.clone()
        mask[rows.start : rows.stop, keys] = float("-inf")
        with torch.no_grad():
            knocked = hf(input_ids=ids, position_ids=pos, attention_mask=mask[None, None]).logits[0]
        probs = [layout.probs[i] for i in rows]
        p = next_distribution(base[rows.start : rows.stop], probs, "mixture")
        q = next_distribution(knocked[rows.start : rows.stop], probs, "mixture")
        expected = kl_divergence(p, q)
        assert expected > 1e-6
        assert record.kl == pytest.approx(expected, rel=1e-3, abs=1e-7)
        assert record.n_keys == len(keys)


def test_knockout_of_a_layer_block_touches_only_its_layers(tiny_bridges):
    model = tiny_bridges["llama"]
    layout = TokenLayout.from_prompt([1, 17, 42, 5])
    for ids in ([30, 31], [32], [33], [34]):
        layout.append_step(ids, [0.6, 0.3][: len(ids)] if len(ids) == 2 else [0.9])
    n_layers = int(model.cfg.n_layers)
    blocks = layer_blocks(n_layers)
    assert blocks["early"] and blocks["late"]
    early = knockout_run(model, layout, "visible", 0.2, 3, block="early")
    every = knockout_run(model, layout, "visible", 0.2, 3, block="all")
    assert [r.step for r in early] == [r.step for r in every]
    assert all(r.block == "early" for r in early)
    # batching does not change a number
    one_by_one = knockout_run(model, layout, "visible", 0.2, 3, block="all", batch_rows=1)
    assert [r.kl for r in one_by_one] == pytest.approx([r.kl for r in every], rel=1e-4, abs=1e-8)


def test_a_run_without_earlier_parallel_keys_has_no_knockout(tiny_bridges):
    layout = TokenLayout.from_prompt([1, 17, 42])
    for ids in ([30], [31], [32, 33]):
        layout.append_step(ids, [0.9] if len(ids) == 1 else [0.5, 0.4])
    assert knockout_run(tiny_bridges["llama"], layout, "isolated", 0.2, 3) == []
