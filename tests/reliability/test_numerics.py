"""Numerics: masks in float16 / bfloat16 (``-inf`` written by the hooks beside the bridge's own
``finfo.min`` causal mask), ``masked_threshold``, the own-key guarantee, and the ``max_parallel`` cap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tempo_lens.generation import generate, select_siblings
from tempo_lens.hooks import (
    PatternRecorder, attention_bias_hooks, attention_block_hooks, layout_blocked_fn, masked_threshold, tempo_hooks,
)
from tempo_lens.layout import TokenLayout
from tempo_lens.pruning import AttentionPruning
from tempo_lens.replaying import replay

HALF = (torch.bfloat16, torch.float16)
PROMPT = [1, 17, 42, 5]


@pytest.fixture(scope="module")
def half_models(tiny_dirs):
    from tempo_lens import load_model

    return {dtype: load_model(str(tiny_dirs["llama"]), device="cpu", dtype=dtype) for dtype in HALF}


def _check_patterns(attention: dict[int, np.ndarray], layout: TokenLayout, mode: str) -> None:
    """No NaN, masked entries exactly 0, rows sum to 1, every query attends to its own key."""
    full = layout.blocked(mode).numpy()
    for step, array in attention.items():
        r = layout.step_range(step)
        blocked = full[r.start : r.stop, : r.stop]
        assert not np.isnan(array).any(), f"NaN in step {step}"
        assert (array[..., blocked] == 0).all(), f"attention leaks through the mask at step {step}"
        assert np.allclose(array.sum(-1), 1.0, atol=2e-2)
        own = array[..., np.arange(len(r)), np.arange(r.start, r.stop)]
        assert (own > 0).all()


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_generation_in_half_precision_keeps_masks_exact(half_models, dtype, mode):
    model = half_models[dtype]
    assert next(model.original_model.parameters()).dtype == dtype
    pruning = AttentionPruning(attention_threshold=2.0)  # prunes nearly every set: many masked keys
    result = generate(model, PROMPT, threshold=1e-6, max_parallel=3, max_steps=4, mode=mode, capture=True,
                      pruning=pruning, keep_logits=True)
    layout = result.layout
    assert any(layout.is_pruned(i) for i in range(len(layout))), "the check needs pruned keys"
    _check_patterns(result.capture.steps, layout, mode)
    assert all(torch.isfinite(rows).all() for rows in result.step_logits)
    for step, array in result.capture.steps.items():  # pruned keys get exactly zero from later steps
        for k in range(layout.step_range(step).start):
            if layout.is_pruned(k) and layout.pruned_at[k] < step:
                assert (array[..., k] == 0).all()


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_replay_in_half_precision(half_models, dtype):
    model = half_models[dtype]
    result = generate(model, PROMPT, threshold=1e-6, max_parallel=3, max_steps=4, pruning=AttentionPruning(2.0))
    for positions, mode in (("shared", "isolated"), ("unique", "visible")):
        rep = replay(model, result.layout, positions=positions, mask=mode)
        assert torch.isfinite(rep.logits).all()
        _check_patterns(rep.attention, result.layout, mode)


@pytest.mark.parametrize("dtype", (torch.float32, *HALF), ids=str)
def test_masked_threshold_semantics(dtype):
    finfo = torch.finfo(dtype)
    threshold = masked_threshold(dtype)
    assert threshold == finfo.min / 2
    assert np.isfinite(threshold) and torch.isfinite(torch.tensor(threshold, dtype=dtype))
    scores = torch.tensor([float("-inf"), finfo.min, finfo.min / 2, -1e4, -60.0, 0.0, 30.0], dtype=dtype)
    masked = scores <= threshold
    assert masked.tolist() == [True, True, True, False, False, False, False]
    # the bridge's causal mask (finfo.min) plus a large bias stays masked; a real score does not become masked
    assert bool(torch.tensor(finfo.min, dtype=dtype) + 1000 <= threshold)
    assert not bool(torch.tensor(-1e4, dtype=dtype) - 1000 <= threshold)


@pytest.mark.parametrize("dtype", (torch.float32, *HALF), ids=str)
def test_block_hook_on_finfo_min_scores(tiny_llama, dtype):
    """Scores as the bridge hands them over (causal entries at finfo.min), in each dtype."""
    layout = TokenLayout.from_prompt([1, 2, 3])
    layout.append_step([4, 5, 6], [0.5, 0.3, 0.2])
    layout.append_step([7], [0.9])
    layout.prune([4, 5], at_step=1, score=0.1)
    n = len(layout)
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    scores = torch.randn(1, 2, n, n).to(dtype).masked_fill(causal, torch.finfo(dtype).min)
    (_, hook), *_ = attention_block_hooks(tiny_llama, layout_blocked_fn(layout, "isolated"))
    out = hook(scores)
    blocked = layout.blocked("isolated")
    assert out.dtype == dtype
    assert bool(torch.isneginf(out[..., blocked & ~causal]).all()), "hooks write -inf"
    assert bool((out[..., blocked] <= masked_threshold(dtype)).all())
    assert torch.equal(out[..., ~blocked], scores[..., ~blocked])
    pattern = torch.softmax(out.float(), dim=-1)
    assert not bool(pattern.isnan().any()) and bool((pattern[..., blocked] == 0).all())
    # a cached step: the hook sees only the last q rows and K keys
    q, k = 1, n
    step_out = hook(scores[..., -q:, :k])
    assert torch.equal(torch.isneginf(step_out[0, 0]), blocked[-q:, :k] & ~causal[-q:, :k])


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_bias_hooks_never_unmask(half_models, dtype):
    model = half_models[dtype]
    result = generate(model, PROMPT, threshold=1e-6, max_parallel=3, max_steps=3, pruning=AttentionPruning(2.0))
    layout = result.layout
    recorder = PatternRecorder(range(model.cfg.n_layers))
    hooks = tempo_hooks(model, layout, "isolated") + attention_bias_hooks(model, torch.ones(len(layout), dtype=torch.bool), bias=1000.0)
    with torch.no_grad():
        model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=hooks + recorder.hooks())
    patterns = torch.stack([p.float() for p in recorder.take().values()])
    blocked = layout.blocked("isolated")
    assert not bool(patterns.isnan().any())
    assert bool((patterns[..., blocked] == 0).all())


@pytest.mark.parametrize("dtype", (torch.float32, *HALF), ids=str)
def test_a_query_always_keeps_its_own_key(tiny_llama, half_models, dtype):
    """A mask that blocks a whole row would give NaN (all -inf) or, beside the bridge's finfo.min causal
    mask, attention to future tokens; the hooks keep each query's own key instead."""
    model = tiny_llama if dtype == torch.float32 else half_models[dtype]
    no_bos = lambda q, k: torch.arange(k)[None, :].expand(q, k) == 0  # the attention_block_hooks docstring example
    recorder = PatternRecorder([0, model.cfg.n_layers - 1])
    with torch.no_grad():
        logits = model.run_with_hooks(torch.tensor([[1, 5, 7, 9]]), fwd_hooks=attention_block_hooks(model, no_bos) + recorder.hooks())
    assert bool(torch.isfinite(logits).all())
    for pattern in recorder.take().values():
        pattern = pattern.float()[0]
        assert torch.equal(pattern[:, 0, :], torch.tensor([1.0, 0, 0, 0]).expand(pattern.shape[0], 4)), "query 0: own key only"
        assert bool((pattern[:, 1:, 0] == 0).all()), "key 0 is blocked for the other queries"
        assert bool((torch.triu(pattern, 1) == 0).all()), "no attention to future tokens"
    layout = TokenLayout.from_prompt([1, 5, 7])
    layout.append_step([3, 4], [0.5, 0.4])
    mask = layout.blocked("isolated").clone()
    mask[3, :] = True  # a user mask that blocks every key of token 3, its own included
    rep = replay(model, layout, mask=mask)
    assert bool(torch.isfinite(rep.logits).all())
    row = rep.attention[0][:, 0, :, 0, :]  # token 3 is step 0's first query
    assert np.allclose(row[..., 3], 1.0) and (row[..., :3] == 0).all()


def test_threshold_selecting_every_token_is_capped_with_one_warning(tiny_llama):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = generate(tiny_llama, PROMPT, threshold=1e-9, max_steps=4, max_parallel=8)
    capped = [w for w in caught if "clear threshold" in str(w.message)]
    assert len(capped) == 1, [str(w.message) for w in caught]
    message = str(capped[0].message)
    assert "96 tokens clear threshold 1e-09" in message and "keeping the top 8" in message
    assert capped[0].category is UserWarning and capped[0].filename == __file__  # points at the caller
    assert result.layout.step_sizes() == [8] * 4
    for step in result.steps:
        assert step.probs == sorted(step.probs, reverse=True) and len(set(step.token_ids)) == 8


def test_hundreds_of_siblings_without_a_cap(tiny_llama):
    """The whole vocabulary as one step: no warning below the cap, masks and patterns stay exact."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        whole = generate(tiny_llama, PROMPT, threshold=1e-9, max_steps=2, max_parallel=500)
        held = generate(tiny_llama, PROMPT, threshold=1e-9, max_steps=2, max_parallel=500, min_steps=2, capture=True)
    assert not [w for w in caught if "clear threshold" in str(w.message)]
    # every token is selected, EOS (t2) included, so generation stops after the step
    assert whole.layout.step_sizes() == [96] and whole.stop_reason == "eos"
    assert sorted(whole.steps[0].token_ids) == list(range(96))
    # before min_steps EOS gets probability 0: the other 95 tokens, twice
    assert held.layout.step_sizes() == [95, 95] and 2 not in held.layout.token_ids
    _check_patterns(held.capture.steps, held.layout, "isolated")


def test_select_siblings_edges():
    probs = torch.full((96,), 1 / 96)
    ids, p, above = select_siblings(probs, 1e-9, 8)
    assert len(ids) == 8 and above == 96
    ids, p, above = select_siblings(probs, 0.5, 8)  # nothing clears: fall back to the top token
    assert len(ids) == 1 and above == 0
    peaked = torch.zeros(96)
    peaked[7] = 1.0
    assert select_siblings(peaked, 1.0, 8)[0] == [7]  # threshold 1 keeps a certain token
