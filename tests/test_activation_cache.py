"""Any hook point per token during generation equals a teacher-forced replay's run_with_cache (both backends)."""

from __future__ import annotations

import warnings

import pytest
import torch

from tempo_lens.errors import InvalidInputError
from tempo_lens.generation import generate, generate_batch
from tempo_lens.pruning import AttentionPruning
from tempo_lens.siblings import siblings

PROMPTS = [[1, 17, 42, 5, 63, 8], [5, 6], [7, 8, 9, 10, 11, 12, 13, 14, 15]]
TOP3 = dict(threshold=1e-6, max_parallel=3, max_steps=4)


def names_of(model):
    """Per-token hook points of every kind: residuals, MLP, per-head (incl. rotated keys), embedding, attention."""
    wanted = ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out", "blocks.2.attn.hook_z", "blocks.1.attn.hook_pattern",
              "blocks.1.attn.hook_attn_scores", "blocks.0.attn.hook_rot_k", "blocks.0.attn.hook_rot_q",
              "blocks.1.ln2.hook_scale", "blocks.2.mlp.hook_post", "ln_final.hook_normalized"]
    names = [n for n in wanted if n in model.hook_dict]
    assert len(names) >= 8, names
    return names


def forward_end(layout, i: int) -> int:
    """One past the last physical token of the forward that fed token ``i`` (the prompt's, or its step's)."""
    step = layout.steps[i]
    return layout.n_prompt if step < 0 else layout.step_range(step).stop


def assert_cache_matches(cache, replayed, names, layout):
    for name in names:
        got, want = cache[name], replayed[name]
        assert got.shape == want.shape, name
        if name.endswith(("hook_pattern", "hook_attn_scores")):
            # keys past a token's own forward did not exist yet: NaN there, and only there
            for i in range(got.shape[0]):
                end = forward_end(layout, i)
                assert torch.isnan(got[i, :, end:]).all() and not torch.isnan(got[i, :, :end]).any(), (name, i)
            known = ~torch.isnan(got)
            finite = torch.isfinite(want[known])
            assert (got[known] - want[known])[finite].abs().max().item() < 1e-4, name
            assert torch.equal(torch.isinf(got[known]), torch.isinf(want[known])), name
        else:
            assert (got.float() - want.float()).abs().max().item() < 1e-4, name


def models(tiny_bridges, request):
    out = [tiny_bridges["llama"], tiny_bridges["gpt2"]]
    try:
        hooked = request.getfixturevalue("tiny_hooked")
    except pytest.skip.Exception:
        return out
    return out + [hooked["llama"], hooked["gpt2"]]


@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_generation_cache_equals_replay(tiny_bridges, request, mode):
    for model in models(tiny_bridges, request):
        names = names_of(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = generate(model, PROMPTS[0], mode=mode, names_filter=names, **TOP3)
        assert set(result.cache) == set(names)
        assert all(result.cache[n].shape[0] == len(result.layout) for n in names)
        assert_cache_matches(result.cache, result.run_with_cache(model, names), names, result.layout)


def test_pruned_run_cache_equals_replay(tiny_llama):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = generate(tiny_llama, PROMPTS[0], names_filter=lambda n: n.endswith("hook_resid_post"),
                          pruning=AttentionPruning(1.0), threshold=1e-6, max_parallel=3, max_steps=5)
    assert result.pruning_events, "the setting must prune for this test to mean anything"
    names = list(result.cache)
    assert names == [n for n in tiny_llama.hook_dict if n.endswith("hook_resid_post")]
    assert_cache_matches(result.cache, result.run_with_cache(tiny_llama, names), names, result.layout)


def test_batch_cache_equals_generate_and_replay(tiny_bridges, request):
    for model in models(tiny_bridges, request):
        names = names_of(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batched = generate_batch(model, PROMPTS, names_filter=names, batch_size=2, **TOP3)
            singles = [generate(model, p, names_filter=names, **TOP3) for p in PROMPTS]
        for one, row in zip(singles, batched):
            assert one.layout.token_ids == row.layout.token_ids
            assert_cache_matches(row.cache, row.run_with_cache(model, names), names, row.layout)
            for name in names:
                a, b = one.cache[name], row.cache[name]
                assert torch.equal(torch.isnan(a), torch.isnan(b)), name
                ok = ~torch.isnan(a) & torch.isfinite(a)
                assert (a[ok] - b[ok]).abs().max().item() < 1e-4, name


def test_index_by_sibling_and_tidy_view(tiny_llama):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = generate(tiny_llama, PROMPTS[0], names_filter="blocks.2.hook_resid_post", **TOP3)
    cache, layout = result.cache, result.layout
    name = "blocks.2.hook_resid_post"
    step = layout.parallel_steps()[0]
    sibs = siblings(result, [step])
    for s in sibs:
        i = layout.physical_index(s.step, s.rank)
        assert torch.equal(cache[name, s], cache[name][i])
        assert torch.equal(cache[s][name], cache[name][i])
        assert torch.equal(cache[name, (s.step, s.rank)], cache[name][i])
    assert torch.equal(cache[name, step], cache[name][list(layout.step_range(step))])
    frame = cache.to_dataframe()
    assert list(frame.columns) == ["physical_index", "step", "sibling", "token", "parallel", "logical_position", name]
    assert len(frame) == len(layout)
    row = frame.iloc[layout.physical_index(step, 1)]
    assert (row.step, row.sibling, row.logical_position, bool(row.parallel)) == (step, 1, layout.logical_positions[row.physical_index], True)
    assert torch.allclose(torch.as_tensor(row[name]), cache[name][row.physical_index])


def test_bad_names_filter_is_refused(tiny_llama):
    with pytest.raises(InvalidInputError, match="no hook point"):
        generate(tiny_llama, PROMPTS[0], names_filter=["blocks.0.hook_nope"], max_steps=1)
    with pytest.raises(InvalidInputError, match="matches no hook point"):
        generate(tiny_llama, PROMPTS[0], names_filter=lambda n: False, max_steps=1)
    result = generate(tiny_llama, PROMPTS[0], max_steps=1)
    assert result.cache is None
    with pytest.raises(KeyError, match="names_filter"):
        generate(tiny_llama, PROMPTS[0], names_filter="blocks.0.hook_resid_post", max_steps=1).cache["blocks.1.hook_resid_post"]
