"""Replay: teacher-forced forward with any positions / mask, against generation and the HF oracle."""

from __future__ import annotations

import numpy as np
import torch

from tempo_lens.generation import generate
from tempo_lens.pruning import AttentionPruning
from tempo_lens.replaying import replay
from tests.helpers import hf_eager, hf_oracle_logits

TINY_PROMPT = [1, 17, 42, 5, 63, 8]
TOP3 = dict(threshold=1e-6, max_parallel=3)


def test_replay_reproduces_generation_logits_and_attention(tiny_llama):
    result = generate(tiny_llama, TINY_PROMPT, max_steps=4, keep_logits=True, capture=True, pruning=AttentionPruning(1.0), **TOP3)
    rep = replay(tiny_llama, result.layout, positions="shared", mask="isolated")
    for step, rows in enumerate(result.step_logits):
        r = result.layout.step_range(step)
        assert (rep.logits[r.start : r.stop] - rows).abs().max().item() < 1e-4
        np.testing.assert_allclose(rep.attention[step], result.capture[step], atol=1e-5)


def test_unique_positions_control_matches_hf(tiny_llama, tiny_dirs):
    result = generate(tiny_llama, TINY_PROMPT, max_steps=3, **TOP3)
    rep = replay(tiny_llama, result.layout, positions="unique", mask="isolated")
    oracle = hf_oracle_logits(hf_eager(tiny_dirs["llama"]), result.layout, "isolated", positions=torch.arange(len(result.layout)))
    assert (rep.logits - oracle).abs().max().item() < 1e-4
    shared = replay(tiny_llama, result.layout, positions="shared", mask="isolated")
    assert (rep.logits - shared.logits).abs().max().item() > 1e-3


def test_toggled_mask_changes_only_later_siblings(tiny_llama):
    result = generate(tiny_llama, TINY_PROMPT, max_steps=1, **TOP3)
    iso = replay(tiny_llama, result.layout, mask="isolated")
    vis = replay(tiny_llama, result.layout, mask="visible")
    P = len(TINY_PROMPT)
    assert torch.allclose(iso.logits[: P + 1], vis.logits[: P + 1], atol=1e-5)
    assert (iso.logits[P + 1 :] - vis.logits[P + 1 :]).abs().max().item() > 1e-3


def test_replay_with_explicit_tensors_and_cache(tiny_llama):
    result = generate(tiny_llama, TINY_PROMPT, max_steps=2, **TOP3)
    n = len(result.layout)
    blocked = result.layout.blocked("isolated")
    rep = replay(tiny_llama, result.layout, positions=result.layout.positions("shared"), mask=blocked, run_with_cache=True,
                 names_filter=lambda name: name.endswith("hook_pattern"))
    assert rep.cache["blocks.0.attn.hook_pattern"].shape[-2:] == (n, n)
    named = replay(tiny_llama, result.layout)
    assert torch.allclose(rep.logits, named.logits)
