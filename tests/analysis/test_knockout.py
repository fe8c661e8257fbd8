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
    assert [(r.step, r.arm) for r in early] == [(r.step, r.arm) for r in every if r.arm != "sink"]
    assert all(r.block == "early" for r in early)
    # batching does not change a number
    one_by_one = knockout_run(model, layout, "visible", 0.2, 3, block="all", batch_rows=1)
    assert [r.kl for r in one_by_one] == pytest.approx([r.kl for r in every], rel=1e-4, abs=1e-8)


def test_a_run_without_earlier_parallel_keys_has_no_knockout(tiny_bridges):
    layout = TokenLayout.from_prompt([1, 17, 42])
    for ids in ([30], [31], [32, 33]):
        layout.append_step(ids, [0.9] if len(ids) == 1 else [0.5, 0.4])
    assert knockout_run(tiny_bridges["llama"], layout, "isolated", 0.2, 3) == []


# ---- the cached replay against independent recomputations, on every backend and past a sliding window ----------


def _random_layout(prompt_length: int, seed: int = 0) -> TokenLayout:
    """A prompt of ``prompt_length`` and steps mixing single tokens and parallel sets of 2 and 3."""
    rng = np.random.default_rng(seed)
    layout = TokenLayout.from_prompt([1] + [int(t) for t in rng.integers(3, 96, prompt_length - 1)])
    for size in (2, 1, 1, 3, 1, 2, 1):
        ids = [int(t) for t in rng.integers(3, 96, size)]
        layout.append_step(ids, [0.8 / size] * size)
    return layout


@pytest.fixture(params=["bridge", "hooked"])
def knockout_models(request):
    """The tiny models of one backend (the hooked ones skip outside TransformerLens 3)."""
    return request.getfixturevalue("tiny_bridges" if request.param == "bridge" else "tiny_hooked")


@pytest.mark.parametrize(("family", "prompt_length"), [("llama", 6), ("gemma3", 70)])
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_every_arm_equals_the_hf_oracle(knockout_models, tiny_dirs, family, prompt_length, mode):
    """Gemma 3's window is 64: with a prompt of 70, the knocked steps' queries sit past it on its sliding layers."""
    from tests.helpers import oracle_mask

    model = knockout_models[family]
    layout = _random_layout(prompt_length)
    records = knockout_run(model, layout, mode, 0.2, 3, batch_rows=5)
    assert {r.arm for r in records} == {"parallel", "matched", "sink"}
    hf = hf_eager(tiny_dirs[family])
    ids = torch.tensor([layout.token_ids])
    pos = torch.tensor(layout.logical_positions)[None]
    masks = oracle_mask(hf, layout, mode)

    def logits(mask) -> torch.Tensor:
        with torch.no_grad():
            return hf(input_ids=ids, position_ids=pos, attention_mask=mask).logits[0]

    base = logits(masks)
    rng = np.random.default_rng(0)
    matched = {s: matched_keys(layout, s, rng) for s in knockout_steps(layout)}  # drawn in step order, as the run does
    for record in records:
        rows = layout.step_range(record.step)
        keys = {"parallel": parallel_keys(layout, record.step), "sink": [0], "matched": (matched[record.step] or [[]])[0]}
        knocked_masks = {}
        for kind, m in (masks.items() if isinstance(masks, dict) else [(None, masks)]):
            m = m.clone()
            m[..., rows.start : rows.stop, keys[record.arm]] = float("-inf")
            knocked_masks[kind] = m
        knocked = logits(knocked_masks if isinstance(masks, dict) else knocked_masks[None])
        probs = [layout.probs[i] for i in rows]
        p = next_distribution(base[rows.start : rows.stop], probs, "mixture")
        q = next_distribution(knocked[rows.start : rows.stop], probs, "mixture")
        assert record.kl == pytest.approx(kl_divergence(p, q), rel=2e-3, abs=1e-6), (record.step, record.arm)


def test_a_block_knockout_equals_a_full_replay_on_its_layers(tiny_bridges):
    """Each block's rows against a replay of the whole sequence, with no cache, knocking out on that block's layers."""
    from tempo_lens.analysis.knockout import knockout_blocks
    from tempo_lens.hooks import attention_block_hooks, tempo_hooks

    model = tiny_bridges["llama"]
    layout = _random_layout(6, seed=3)
    records = knockout_blocks(model, layout, "visible", 0.2, 3, blocks=("all", "early", "middle", "late"), batch_rows=7)
    blocks = layer_blocks(int(model.cfg.n_layers))
    tokens = torch.tensor([layout.token_ids])

    def replay(knock_rows=None, keys=(), layers=()):
        hooks = tempo_hooks(model, layout, "visible")
        if knock_rows is not None:
            knock = torch.zeros(len(layout), len(layout), dtype=torch.bool)
            knock[knock_rows.start : knock_rows.stop, list(keys)] = True
            hooks += attention_block_hooks(model, lambda q, k: knock[k - q : k, :k], layers)
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            return model(tokens)[0]

    base = replay()
    rng = np.random.default_rng(0)
    matched = {s: matched_keys(layout, s, rng) for s in knockout_steps(layout)}
    assert {r.block for r in records} == {"all", "early", "middle", "late"}
    assert {r.block for r in records if r.arm == "sink"} == {"all"}  # the sink scales the others on every layer only
    for record in records:
        rows = layout.step_range(record.step)
        keys = {"parallel": parallel_keys(layout, record.step), "sink": [0], "matched": (matched[record.step] or [[]])[0]}
        knocked = replay(rows, keys[record.arm], blocks[record.block])
        probs = [layout.probs[i] for i in rows]
        p = next_distribution(base[rows.start : rows.stop], probs, "mixture")
        q = next_distribution(knocked[rows.start : rows.stop], probs, "mixture")
        assert record.kl == pytest.approx(kl_divergence(p, q), rel=2e-3, abs=1e-6), (record.step, record.arm, record.block)


def test_an_experiment_counts_the_forwards_it_makes(tiny_bridges):
    """One baseline forward and one per batch of rows for a run with a controlled step; none for a run without one."""
    from tempo_lens.analysis import knockout as knockout_module
    from tempo_lens.analysis.knockout_store import knockout_experiment
    from tempo_lens.capture import CapturedRun
    from tempo_lens.experiment import Experiment

    model = tiny_bridges["llama"]
    controlled = TokenLayout.from_prompt([1, 17, 42, 5, 63, 8])
    for ids in ([30, 31], [32], [33], [34, 35], [36], [37, 38]):
        controlled.append_step(ids, [0.6, 0.3][: len(ids)] if len(ids) == 2 else [0.9])
    uncontrolled = TokenLayout.from_prompt([1, 17, 42])
    for ids in ([30, 31], [32, 33]):  # parallel keys but no single-token key to match them with
        uncontrolled.append_step(ids, [0.6, 0.3])
    runs = [CapturedRun(name=f"r{i}", prompt="p", mode="isolated", layout=layout, token_strings=[], layers=[], attention={},
                        meta={"prompt_index": i}) for i, layout in enumerate((controlled, uncontrolled))]
    experiment = Experiment(config={"name": "hand-built", "threshold": 0.2, "max_parallel": 3}, runs=runs, model={})
    blocks = ("all", "early")
    rows = len(knockout_module.knockout_blocks(model, controlled, "isolated", 0.2, 3, blocks=blocks))
    assert rows > 0 and not knockout_module.knockout_blocks(model, uncontrolled, "isolated", 0.2, 3, blocks=blocks)
    record = knockout_experiment(model, experiment, "0" * 64, blocks=blocks)
    assert record.n_forwards == 1 + math.ceil(rows / knockout_module.BATCH_ROWS)
    assert sum(len(r) for r in record.runs[1].blocks.values()) == 0
