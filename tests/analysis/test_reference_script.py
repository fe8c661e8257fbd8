"""The reference script's ratio: hand-worked cases, a loop-by-loop oracle, and the undo chain ending at the intended ratio."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tempo_lens.analysis import mode_averages, parallel_ratio, ratio_table
from tempo_lens.analysis.reference_script import (
    INTENDED,
    REFERENCE_SCRIPT,
    UNDO_CHAIN,
    script_average,
    script_ratio,
    script_ratio_table,
    undo_chain_table,
)
from tempo_lens.capture import CapturedRun
from tempo_lens.layout import TokenLayout


def two_sibling_layout() -> TokenLayout:
    """Physical: prompt 0,1,2 | s0: 3,4 | s1: 5."""
    layout = TokenLayout.from_prompt([10, 11, 12])
    layout.append_step([20, 21], [0.5, 0.4])
    layout.append_step([22], [0.9])
    return layout


def uniform_step0(mode: str) -> np.ndarray:
    """Step 0's forward, [1 layer, 1 batch, 2 heads, 2 queries, 5 keys], uniform over the keys each row may see."""
    rows = [[1 / 4, 1 / 4, 1 / 4, 1 / 4, 0.0], [1 / 4, 1 / 4, 1 / 4, 0.0, 1 / 4]] if mode == "isolated" else \
        [[1 / 4, 1 / 4, 1 / 4, 1 / 4, 0.0], [1 / 5] * 5]
    return np.array(rows)[None, None, None].repeat(2, axis=2)


def test_the_script_counts_the_hidden_sibling_as_an_earlier_parallel_token():
    layout = two_sibling_layout()
    # Script at step 0 (its label 1): row = last sibling (key 4), parallel = {3, 4} (step 0 < label 1), other = {0, 1, 2}.
    # Isolated: the row cannot see key 3 -> weights 1/4, 1/4, 1/4, 0, 1/4 -> parallel (0 + 1/4) / 2 = 1/8, other 1/4 -> 0.5.
    assert script_ratio(uniform_step0("isolated"), layout, 0) == pytest.approx(0.5)
    # Visible: 1/5 everywhere -> 1.0. The same tokens, a gap of -0.5 that only the definition makes.
    assert script_ratio(uniform_step0("visible"), layout, 0) == pytest.approx(1.0)
    # The intended ratio has no earlier parallel set at step 0: not measured.
    assert np.isnan(script_ratio(uniform_step0("isolated"), layout, 0, INTENDED))


def test_head_zero_only():
    layout = two_sibling_layout()
    a = uniform_step0("visible")
    a[:, :, 1, -1] = [0.6, 0.1, 0.1, 0.1, 0.1]  # head 1 differs; the script reads head 0 alone
    assert script_ratio(a, layout, 0) == pytest.approx(1.0)
    # every head: weights (0.2 + [0.6, .1, .1, .1, .1]) / 2 = [.4, .15, .15, .15, .15] -> parallel .15, other (.4 + .3) / 3
    every = replace(REFERENCE_SCRIPT, head_zero=False)
    assert script_ratio(a, layout, 0, every) == pytest.approx(0.15 / (0.7 / 3))


def oracle(attention, layout, step) -> float:
    """The reference script's definition written with loops over the layout's lists."""
    last_row = attention[:, :, 0, -1, :].mean(axis=(0, 1))  # head 0, last query row -> [key]
    label = step + 1
    sizes = {s: layout.steps.count(s) for s in set(layout.steps) if s >= 0}
    parallel, other = [], []
    for k in range(attention.shape[-1]):
        if layout.pruned_at[k] != -1 and layout.pruned_at[k] < step:
            continue
        s = layout.steps[k]
        (parallel if s >= 0 and sizes[s] >= 2 and s < label else other).append(last_row[k])
    if not parallel or not other:
        return float("nan")
    return (sum(parallel) / len(parallel)) / (sum(other) / len(other))


@pytest.fixture(scope="module")
def runs(tiny_llama):
    from tempo_lens.generation import generate

    out = []
    for mode in ("isolated", "visible"):
        result = generate(tiny_llama, [1, 17, 42, 5], threshold=1e-6, max_parallel=3, max_steps=6, mode=mode, capture=True)
        out.append(CapturedRun.from_result(result, name=mode))
    return out


def test_matches_the_loop_oracle_on_generated_runs(runs):
    for run in runs:
        for step in run.step_ids:
            expected = oracle(run.attention[step], run.layout, step)
            got = script_ratio(run.attention[step], run.layout, step)
            assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected, rel=1e-6)


def test_every_choice_undone_is_the_intended_ratio(runs):
    for run in runs:
        for step in run.step_ids:
            intended = parallel_ratio(run.attention[step], run.layout, step).ratio
            got = script_ratio(run.attention[step], run.layout, step, INTENDED)
            assert (np.isnan(got) and np.isnan(intended)) or got == pytest.approx(intended, rel=1e-6)
    chain = undo_chain_table(runs)
    last = chain[chain["order"] == len(UNDO_CHAIN) - 1].set_index("mode")["ratio"]
    averages = mode_averages(ratio_table(runs)).set_index("mode")["ratio"]
    for mode in ("isolated", "visible"):
        assert last[mode] == pytest.approx(averages[mode], rel=1e-6)


def test_steps_three_to_six_are_the_script_labels(runs):
    table = script_ratio_table(runs[0])
    assert (table["label"] == table["step"] + 1).all()
    chosen = table[table["averaged"]]
    assert set(chosen["label"]) <= {3, 4, 5, 6}
    assert script_average(runs[0]) == pytest.approx(chosen["ratio"].mean())
