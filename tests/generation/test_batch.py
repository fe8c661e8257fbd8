"""Batched TEMPO: every row equals ``generate`` for that prompt (tokens, probabilities, logits, capture)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tempo_lens.backends import backend_for
from tempo_lens.errors import InvalidInputError
from tempo_lens.generation import batch as batch_module
from tempo_lens.generation import generate, generate_batch
from tempo_lens.generation.batch import assign_lanes
from tempo_lens.pruning import AttentionPruning, SimilarityPruning

PROMPTS = [[1, 17, 42, 5, 63, 8], [5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15], [33]]


def assert_rows_equal(singles, batched, logit_tol: float, attention_tol: float = 1e-5) -> None:
    """Same tokens, steps and pruning; probabilities, logits and captured attention within tolerance.

    A threshold tie (a probability within float noise of the threshold) could flip a selection; the
    tolerance on probabilities is far below any gap the settings here leave, so a flip would fail loudly.
    """
    assert len(singles) == len(batched)
    for single, batch in zip(singles, batched):
        a, b = single.layout, batch.layout
        assert (a.token_ids, a.steps, a.logical_positions, a.pruned_at) == (b.token_ids, b.steps, b.logical_positions, b.pruned_at)
        np.testing.assert_allclose(np.array(a.probs), np.array(b.probs), atol=1e-5, equal_nan=True)
        assert single.stop_reason == batch.stop_reason and single.text == batch.text
        for x, y in zip(single.step_logits, batch.step_logits):
            assert (x - y).abs().max().item() < logit_tol
        if single.capture is not None:
            assert single.capture.step_ids == batch.capture.step_ids
            for step in single.capture:
                np.testing.assert_allclose(single.capture.steps[step], batch.capture.steps[step], atol=attention_tol)


@pytest.mark.parametrize("mode", ["isolated", "visible"])
@pytest.mark.parametrize("settings", [
    dict(threshold=1e-6, max_parallel=3),     # 3 siblings every step
    dict(threshold=0.0105, max_parallel=8),   # up to 8, varying per row
    dict(threshold=0.02, max_parallel=8),     # 1 to several, varying per row and step
    dict(threshold=1.0),                      # 1 sibling: plain greedy
    dict(threshold=1e-6, max_parallel=3, pruning=AttentionPruning(1.0)),
    dict(threshold=1e-6, max_parallel=3, pruning=SimilarityPruning(0.5)),
], ids=["k3", "k8", "mixed", "k1", "attention-pruning", "similarity-pruning"])
def test_batch_rows_equal_one_at_a_time(tiny_llama, mode, settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the max_parallel cap warns; it is the point here
        singles = [generate(tiny_llama, p, max_steps=5, mode=mode, capture=True, keep_logits=True, **settings) for p in PROMPTS]
        batched = generate_batch(tiny_llama, PROMPTS, max_steps=5, mode=mode, capture=True, keep_logits=True, **settings)
    assert_rows_equal(singles, batched, logit_tol=1e-4)
    if "pruning" in settings:
        assert any(r.pruning_events for r in batched)


def test_batch_of_one_and_chunks(tiny_llama):
    singles = [generate(tiny_llama, p, max_steps=4, threshold=1e-6, max_parallel=3, keep_logits=True) for p in PROMPTS]
    alone = generate_batch(tiny_llama, PROMPTS[:1], max_steps=4, threshold=1e-6, max_parallel=3, keep_logits=True)
    chunked = generate_batch(tiny_llama, PROMPTS, batch_size=3, max_steps=4, threshold=1e-6, max_parallel=3, keep_logits=True)
    assert_rows_equal(singles[:1], alone, logit_tol=1e-4)
    assert_rows_equal(singles, chunked, logit_tol=1e-4)
    # each result is named by its mode and its prompt's index in the call, across chunks
    assert [r.name for r in chunked] == [f"isolated-{i}" for i in range(len(PROMPTS))]
    assert singles[0].name == "run"


def test_eos_in_one_row_only_stops_that_row(tiny_llama):
    free = [generate(tiny_llama, p, threshold=1.0, max_steps=5) for p in PROMPTS]
    eos = free[0].steps[1].token_ids[0]  # row 0's second token becomes EOS
    config = tiny_llama.original_model.generation_config
    old = config.eos_token_id
    config.eos_token_id = eos
    try:
        singles = [generate(tiny_llama, p, threshold=1.0, max_steps=5, keep_logits=True) for p in PROMPTS]
        batched = generate_batch(tiny_llama, PROMPTS, threshold=1.0, max_steps=5, keep_logits=True)
    finally:
        config.eos_token_id = old
    assert batched[0].stop_reason == "eos" and batched[0].layout.n_steps == 2
    assert any(r.layout.n_steps == 5 for r in batched[1:])  # the others went on
    assert_rows_equal(singles, batched, logit_tol=1e-4)


def test_lanes_cover_the_rows_evenly():
    assert assign_lanes([88] * 16, True, 512) == [0] * 6 + [1] * 5 + [2] * 5  # ceil(1408 / 512) = 3 lanes
    assert assign_lanes([10, 20, 30], True, 512) == [0, 0, 0]
    assert assign_lanes([10, 20, 30], False, 512) == [0, 1, 2]
    assert assign_lanes([600, 5], True, 512) == [0, 1]


@pytest.mark.parametrize("lane_keys", [1, 10**6], ids=["lane-per-row", "one-lane"])
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_every_lane_layout_equals_one_at_a_time(tiny_llama, monkeypatch, lane_keys, mode):
    """A lane per row (left padding) and all rows side by side in one lane give what generate gives."""
    monkeypatch.setattr(batch_module, "LANE_KEYS", lane_keys)
    settings = dict(threshold=0.02, max_parallel=8, max_steps=5, mode=mode, capture=True, keep_logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        singles = [generate(tiny_llama, p, **settings) for p in PROMPTS]
        batched = generate_batch(tiny_llama, PROMPTS, **settings)
    assert_rows_equal(singles, batched, logit_tol=1e-4)


def test_padding_is_never_selected_or_attended(tiny_llama):
    batched = generate_batch(tiny_llama, PROMPTS, max_steps=3, threshold=1e-6, max_parallel=3, capture=True)
    for result in batched:  # each row's capture covers exactly its own tokens, rows summing to 1
        for step in result.capture:
            array = result.capture.steps[step]
            assert array.shape[-1] == result.layout.step_range(step).stop
            np.testing.assert_allclose(array.sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_batch_equals_generate_on_the_embedded_model(embedded_model, mode):
    prompts = ["The cat sat on the", "Once upon a time, in a small village,", "Water boils at"]
    singles = [generate(embedded_model, p, threshold=0.05, max_steps=6, mode=mode, keep_logits=True, capture=[0, 29]) for p in prompts]
    batched = generate_batch(embedded_model, prompts, threshold=0.05, max_steps=6, mode=mode, keep_logits=True, capture=[0, 29])
    assert_rows_equal(singles, batched, logit_tol=1e-3)


def test_bad_batches_are_refused(tiny_llama):
    with pytest.raises(InvalidInputError, match="non-empty list"):
        generate_batch(tiny_llama, [])
    with pytest.raises(InvalidInputError, match="non-empty list"):
        generate_batch(tiny_llama, "t1 t2")
    with pytest.raises(InvalidInputError, match="batch_size"):
        generate_batch(tiny_llama, PROMPTS, batch_size=0)
    with pytest.raises(InvalidInputError, match="empty"):
        generate_batch(tiny_llama, [[1, 2], []])  # every prompt is checked before any model work


def test_memory_refusal_advises_only_what_the_estimate_counts(tiny_llama, monkeypatch):
    """The estimate ignores the threshold (every step is counted at max_parallel): raising it is no advice."""
    from tempo_lens.generation import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    with pytest.raises(InvalidInputError) as refused:
        memory.check_fits(backend_for(tiny_llama), 5, 10, 8)
    message = str(refused.value)
    assert "lower max_parallel, max_steps" in message and "raise the threshold" not in message


def test_the_prompt_forward_unembeds_only_the_read_columns_unless_a_hook_watches(tiny_llama):
    """The prompt's forward reads each row's last token: the unembedding runs on those columns alone, unless a hook
    observes it, which then sees every column as before; the generations are the same either way."""
    from tempo_lens.backends import backend_for

    prompts = [[1, 17, 42, 5, 63], [1, 9, 33], [1, 50, 60, 70]]
    widths: list[int] = []
    calls = []
    unembed = tiny_llama.unembed.original_component
    original = unembed.forward

    def counting(x, *args, **kwargs):
        calls.append(x.shape[1])
        return original(x, *args, **kwargs)

    unembed.forward = counting
    try:
        quiet = generate_batch(tiny_llama, prompts, max_steps=3, threshold=0.05, max_parallel=3, mode="isolated")
        first_quiet = calls[0]
        calls.clear()

        def note(x, hook):
            widths.append(x.shape[1])
            return x

        with tiny_llama.hooks(fwd_hooks=[("unembed.hook_in", note)]):
            watched = generate_batch(tiny_llama, prompts, max_steps=3, threshold=0.05, max_parallel=3, mode="isolated")
    finally:
        del unembed.forward
    assert backend_for(tiny_llama).name == "bridge"
    assert first_quiet < 5  # the read columns only (rows sharing a lane end in different columns)
    assert widths[0] >= 5 and calls[0] == widths[0]  # watched: every column of the prompt's forward
    for a, b in zip(quiet, watched):
        assert a.layout.token_ids == b.layout.token_ids
        assert a.layout.probs == pytest.approx(b.layout.probs, abs=1e-6, nan_ok=True)  # prompt tokens: NaN
