"""A user's hook can ask which step and which siblings the current forward holds (tempo_lens.current_step)."""

from __future__ import annotations

import warnings

import pytest
import torch

import tempo_lens
from tempo_lens.generation import generate, generate_batch
from tempo_lens.siblings import siblings

PROMPTS = [[1, 17, 42, 5, 63, 8], [5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15]]
TOP3 = dict(threshold=1e-6, max_parallel=3, max_steps=4)


def recording_hook(seen: list):
    def note(resid, hook):
        seen.append((tempo_lens.current_step(), resid.shape[1]))
        return resid

    return note


def test_each_forward_knows_its_step_and_siblings(tiny_llama):
    seen: list = []
    with tiny_llama.hooks(fwd_hooks=[("blocks.0.hook_resid_post", recording_hook(seen))]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = generate(tiny_llama, PROMPTS[0], **TOP3)
    layout = result.layout
    assert [ctx.step for ctx, _ in seen] == [-1] + list(range(layout.n_steps))
    prompt_ctx, n_fed = seen[0]
    assert prompt_ctx.physical_range == (0, layout.n_prompt) == (0, n_fed) and prompt_ctx.siblings == ((),)
    for step, (ctx, n_fed) in enumerate(seen[1:]):
        r = layout.step_range(step)
        assert ctx.physical_range == (r.start, r.stop) and n_fed == len(r)
        assert ctx.siblings == (tuple(siblings(result, [step])),)
        row = ctx.rows[0]
        assert (row.row, row.lane, row.queries, row.key_columns) == (0, 0, (0, len(r)), tuple(range(r.stop)))
    assert tempo_lens.current_step() is None  # nothing outlives the generation


def test_outside_generation_there_is_no_step(tiny_llama):
    seen: list = []
    tiny_llama.run_with_hooks(torch.tensor([PROMPTS[0]]), fwd_hooks=[("blocks.0.hook_resid_post", recording_hook(seen))])
    assert seen == [(None, len(PROMPTS[0]))]


def test_batched_forwards_name_each_row(tiny_llama):
    seen: list = []
    with tiny_llama.hooks(fwd_hooks=[("blocks.0.hook_resid_post", recording_hook(seen))]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = generate_batch(tiny_llama, PROMPTS, batch_size=2, **TOP3)
    first, second = seen[: 1 + 4], seen[1 + 4 :]  # two chunks: prompts 0-1, then prompt 2
    assert [ctx.step for ctx, _ in seen] == ([-1] + list(range(4))) * 2
    assert [[r.row for r in ctx.rows] for ctx, _ in first] == [[0, 1]] * 5
    assert [[r.row for r in ctx.rows] for ctx, _ in second] == [[2]] * 5
    for ctx, width in seen:
        for row in ctx.rows:
            result = results[row.row]
            start, stop = row.physical_range
            assert row.queries[1] - row.queries[0] == stop - start and row.queries[1] <= width
            assert len(row.key_columns) == stop  # the row's keys so far, its new tokens last
            if ctx.step >= 0:
                assert row.siblings == tuple(siblings(result, [ctx.step]))
                assert (start, stop) == (result.layout.step_range(ctx.step).start, result.layout.step_range(ctx.step).stop)
    with pytest.raises(tempo_lens.errors.InvalidInputError, match="rows"):
        _ = first[0][0].physical_range  # two rows: ask each row


def test_public_names():
    for name in ("current_step", "StepContext", "TokenCache"):
        assert name in tempo_lens.__all__ and getattr(tempo_lens, name) is not None
    assert tempo_lens.current_step is __import__("tempo_lens.hook_context", fromlist=["x"]).current_step
