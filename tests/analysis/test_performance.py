"""Every metric over 100 synthetic steps shaped like the reference model (their speed: `make bench`, not a test)."""

from __future__ import annotations

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


def test_every_metric_runs_on_reference_shaped_steps():
    layout, steps = synthetic_run()
    for step, a in steps.items():
        result = parallel_ratio(a, layout, step)
        # uniform-ish random attention: a measured ratio is near 1; a step before any parallel set says why it has none
        assert (0.5 < result.ratio < 2.0) if result.missing_reason is None else np.isnan(result.ratio)
        parallel_ratio(a, layout, step, exclude_first=True)
        assert len(ratio_by_layer(a, layout, step)) == 28
        ratio_by_head(a, layout, step)
        intra_step_attention(a, layout, step)
        assert len(layer_entropy_table(a)) == 28
        head_specialisation(a, layout, step, "isolated", n_kv_heads=8)
