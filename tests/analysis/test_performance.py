"""Every metric over 100 synthetic steps shaped like the reference model must stay far below 1 s."""

from __future__ import annotations

import time

import numpy as np

from tempo_lens.analysis import (
    head_specialisation, intra_step_attention, layer_entropy_table, parallel_ratio, ratio_by_head, ratio_by_layer,
)
from tempo_lens.layout import TokenLayout


def synthetic_run(n_steps: int = 100, n_prompt: int = 8, seed: int = 0):
    """[28, 1, 24, q, k] per step, sizes cycling 1, 2, 1, 3 (k reaches ~180), one set pruned every 8 steps."""
    layout = TokenLayout.from_prompt(list(range(n_prompt)))
    rng = np.random.default_rng(seed)
    steps = {}
    for step in range(n_steps):
        size = (1, 2, 1, 3)[step % 4]
        sib = layout.append_step(list(range(size)), [0.5] * size)
        if step % 8 == 7:
            earlier = layout.step_range(step - 2)  # a 3-sibling step
            layout.prune(list(earlier)[1:], at_step=step, score=0.1)
        a = rng.random((28, 1, 24, size, sib.stop), dtype=np.float32)
        steps[step] = a / a.sum(-1, keepdims=True)
    return layout, steps


def test_hundred_steps_under_a_second():
    layout, steps = synthetic_run()
    start = time.perf_counter()
    for step, a in steps.items():
        parallel_ratio(a, layout, step)
        parallel_ratio(a, layout, step, exclude_first=True)
        ratio_by_layer(a, layout, step)
        ratio_by_head(a, layout, step)
        intra_step_attention(a, layout, step)
        layer_entropy_table(a)
        head_specialisation(a, layout, step, "isolated", n_kv_heads=8)
    elapsed = time.perf_counter() - start
    print(f"100 steps, all metrics: {elapsed:.3f} s")
    assert elapsed < 2.0  # target < 1 s; slack for a loaded CI machine
