"""TEMPO on the nnsight backend against the HF eager oracle (position_ids + 4D float mask), per tiny family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempo_lens.backends import backend_for
from tempo_lens.generation import generate, generate_batch
from tempo_lens.pruning import AttentionPruning
from tests.helpers import TINY_ARCHITECTURES, TINY_PROMPT, TOP3, hf_eager, hf_oracle_logits, max_step_delta, reference_mask

FAMILIES = TINY_ARCHITECTURES


def oracle_attention(hf, layout, mode: str, window_masks: dict | None = None) -> tuple:
    """HF eager over the whole sequence: attention weights per layer ``[heads, n, n]`` (full forward, one mask)."""
    ids = torch.tensor([layout.token_ids])
    pos = torch.tensor(layout.logical_positions)[None]
    mask = reference_mask(layout, mode)[None, None] if window_masks is None else window_masks
    with torch.no_grad():
        out = hf(input_ids=ids, position_ids=pos, attention_mask=mask, output_attentions=True)
    return out.logits[0], [a[0] for a in out.attentions]


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_every_step_matches_hf_oracle(tiny_nnsight, tiny_dirs, arch, mode):
    model = tiny_nnsight[arch]
    result = generate(model, TINY_PROMPT, max_steps=5, mode=mode, keep_logits=True, capture=True, **TOP3)
    assert result.layout.step_sizes() == [3] * 5
    logits, attentions = oracle_attention(hf_eager(tiny_dirs[arch]), result.layout, mode)
    assert max_step_delta(result, logits) < 1e-4
    for step in range(result.layout.n_steps):  # the captured queries are the step's siblings, keys up to its last
        r = result.layout.step_range(step)
        captured = torch.as_tensor(result.capture[step].__array__())
        expected = torch.stack([a[:, r.start : r.stop, : r.stop] for a in attentions])[:, None]
        assert (captured - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_batch_rows_match_hf_oracle(tiny_nnsight, tiny_dirs, arch):
    prompts = [TINY_PROMPT, TINY_PROMPT[:3], [1, 5]]
    results = generate_batch(tiny_nnsight[arch], prompts, max_steps=4, mode="isolated", keep_logits=True, capture=True, **TOP3)
    hf = hf_eager(tiny_dirs[arch])
    for result in results:
        assert max_step_delta(result, hf_oracle_logits(hf, result.layout, "isolated")) < 1e-4
    alone = generate(tiny_nnsight[arch], prompts[1], max_steps=4, mode="isolated", capture=True, **TOP3)
    assert alone.layout.token_ids == results[1].layout.token_ids
    for step in alone.capture.step_ids:  # a row's captures are cut back to its own queries and keys, as a lone generation records them
        ours, theirs = np.asarray(results[1].capture[step]), np.asarray(alone.capture[step])
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-5


def test_pruned_keys_are_hidden_like_the_oracle(tiny_nnsight, tiny_bridges, tiny_dirs):
    """A pruning threshold above every score prunes each earlier set; the oracle's mask hides pruned keys too."""
    pruning = AttentionPruning(attention_threshold=50.0)
    result = generate(tiny_nnsight["llama"], TINY_PROMPT, max_steps=5, keep_logits=True, pruning=pruning, **TOP3)
    assert result.pruning_events, "the check needs pruning to happen"
    assert max_step_delta(result, hf_oracle_logits(hf_eager(tiny_dirs["llama"]), result.layout, "isolated")) < 1e-4
    bridge = generate(tiny_bridges["llama"], TINY_PROMPT, max_steps=5, pruning=pruning, **TOP3)
    assert bridge.layout.token_ids == result.layout.token_ids
    assert bridge.pruning_events == result.pruning_events or [
        (e.set_step, e.at_step, e.kept, e.pruned) for e in bridge.pruning_events
    ] == [(e.set_step, e.at_step, e.kept, e.pruned) for e in result.pruning_events]


def window_oracle_masks(layout, mode: str, window: int) -> dict:
    """Per attention type: the reference mask, and on sliding layers also keys ``window`` or more tokens back (physical)."""
    full = reference_mask(layout, mode)
    n = full.shape[0]
    far = torch.arange(n)[:, None] - torch.arange(n)[None, :] >= window
    return {"full_attention": full[None, None], "sliding_attention": full.masked_fill(far, float("-inf"))[None, None]}


def test_gemma3_past_its_sliding_window(tiny_nnsight, tiny_dirs):
    """A 70-token prompt on a window of 64: sliding layers hide keys by physical distance, full layers do not."""
    model = tiny_nnsight["gemma3"]
    window = backend_for(model).structure.sliding_window
    assert window == 64
    prompt = [1] + [(7 * i) % 90 + 3 for i in range(69)]
    result = generate(model, prompt, max_steps=4, keep_logits=True, capture=True, **TOP3)
    assert len(result.layout) > window
    hf = hf_eager(tiny_dirs["gemma3"])
    logits, attentions = oracle_attention(hf, result.layout, "isolated", window_oracle_masks(result.layout, "isolated", window))
    assert max_step_delta(result, logits) < 1e-4
    assert max_step_delta(result, hf_oracle_logits(hf, result.layout, "isolated")) < 1e-4  # the shared oracle agrees
    unwindowed, _ = oracle_attention(hf, result.layout, "isolated")  # one mask for every layer
    assert max_step_delta(result, unwindowed) > 1e-3, "the window must matter for this check to mean anything"
    last = result.layout.n_steps - 1
    r = result.layout.step_range(last)
    captured = torch.as_tensor(result.capture[last].__array__())
    expected = torch.stack([a[:, r.start : r.stop, : r.stop] for a in attentions])[:, None]
    assert (captured - expected).abs().max().item() < 1e-5
    assert captured[0, 0, :, :, : r.start - window + 1].abs().max() == 0  # layer 0 slides: far keys get nothing


def test_gemma3_past_its_window_agrees_with_the_bridge(tiny_nnsight, tiny_bridges):
    prompt = [1] + [(5 * i) % 90 + 3 for i in range(69)]
    ours = generate(tiny_nnsight["gemma3"], prompt, max_steps=4, keep_logits=True, capture=True, **TOP3)
    theirs = generate(tiny_bridges["gemma3"], prompt, max_steps=4, keep_logits=True, capture=True, **TOP3)
    assert ours.layout.token_ids == theirs.layout.token_ids
    assert max((a - b).abs().max().item() for a, b in zip(ours.step_logits, theirs.step_logits)) < 1e-4
    for step in theirs.capture.step_ids:
        assert np.abs(np.asarray(ours.capture[step]) - np.asarray(theirs.capture[step])).max() < 1e-5


def test_user_built_language_model_is_recognised(tiny_dirs):
    from nnsight import LanguageModel

    model = LanguageModel(str(tiny_dirs["qwen2"]), attn_implementation="eager", dtype=torch.float32, dispatch=True)
    backend = backend_for(model)
    assert backend.name == "nnsight" and model.cfg.n_layers == 3 and model.cfg.d_vocab == 96
    result = generate(model, TINY_PROMPT, max_steps=3, keep_logits=True, **TOP3)
    assert max_step_delta(result, hf_oracle_logits(hf_eager(tiny_dirs["qwen2"]), result.layout, "isolated")) < 1e-4


def test_sdpa_model_is_refused_at_load(tiny_dirs):
    from nnsight import LanguageModel

    model = LanguageModel(str(tiny_dirs["llama"]), attn_implementation="sdpa", dtype=torch.float32, dispatch=True)
    assert "attn_implementation='eager'" in backend_for(model).model_problem()
    from tempo_lens.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="attn_implementation='eager'"):
        generate(model, TINY_PROMPT, max_steps=1)


def test_explicit_device_map_runs_on_cpu(tiny_dirs):
    from tempo_lens import load_model

    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", "model.layers.2": "cpu",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model = load_model(str(tiny_dirs["llama"]), backend="nnsight", device_map=device_map)
    result = generate(model, TINY_PROMPT, max_steps=3, keep_logits=True, **TOP3)
    assert max_step_delta(result, hf_oracle_logits(hf_eager(tiny_dirs["llama"]), result.layout, "isolated")) < 1e-4


def test_hook_backends_refuse_nnsight_options(tiny_llama):
    from tempo_lens.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="nnsight model"):
        generate(tiny_llama, TINY_PROMPT, max_steps=1, remote=True)
    with pytest.raises(InvalidInputError, match="nnsight model"):
        generate_batch(tiny_llama, [TINY_PROMPT], max_steps=1, intervene=lambda model, siblings: None)


def test_names_filter_is_refused_on_nnsight(tiny_nnsight):
    from tempo_lens.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="intervene"):
        generate(tiny_nnsight["llama"], TINY_PROMPT, max_steps=1, names_filter="blocks.0.hook_resid_post")
    with pytest.raises(InvalidInputError, match="intervene"):
        generate_batch(tiny_nnsight["llama"], [TINY_PROMPT], max_steps=1, names_filter="blocks.0.hook_resid_post")


def test_similarity_pruning_alone_in_its_lane_reads_every_fed_row(tiny_nnsight, tiny_bridges):
    """The harness's minimal case: one generate (each row ends its lane), similarity pruning. The prompt's forward
    must hand the residual reader every row it fed (it once got the last row only: states were shifted, then a
    KeyError). The pruning decisions and similarity scores equal the bridge's."""
    from tempo_lens import generate
    from tempo_lens.pruning import SimilarityPruning

    settings = dict(mode="isolated", threshold=1e-6, max_parallel=2, max_steps=3, progress=False)
    for prompt in ([1, 5, 6, 7], [1], [1, 17, 42, 5, 63, 8]):
        ours = generate(tiny_nnsight["llama"], prompt, pruning=SimilarityPruning(0.0), **settings)
        bridge = generate(tiny_bridges["llama"], prompt, pruning=SimilarityPruning(0.0), **settings)
        assert ours.layout.token_ids == bridge.layout.token_ids
        assert ours.layout.pruned_at == bridge.layout.pruned_at
        assert ours.layout.prune_scores == pytest.approx(bridge.layout.prune_scores, abs=1e-5, nan_ok=True)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_unobserved_steps_skip_the_trace_and_match_it_to_the_bit(tiny_nnsight, tiny_dirs, arch, monkeypatch):
    """No capture, reads or user code: HF's forward runs without a trace, with the trace's logits exactly."""
    model = tiny_nnsight[arch]
    backend = backend_for(model)
    traces = []
    real_trace = type(backend)._trace
    monkeypatch.setattr(type(backend), "_trace", lambda self, *a, **k: traces.append(1) or real_trace(self, *a, **k))
    direct = generate(model, TINY_PROMPT, max_steps=4, mode="isolated", keep_logits=True, **TOP3)
    assert not traces, "nothing observed these forwards, so none needed a trace"
    assert max_step_delta(direct, hf_oracle_logits(hf_eager(tiny_dirs[arch]), direct.layout, "isolated")) < 1e-4
    monkeypatch.setattr(type(backend), "_unobserved", lambda self, step, intervene: False)
    traced = generate(model, TINY_PROMPT, max_steps=4, mode="isolated", keep_logits=True, **TOP3)
    assert traces and traced.layout.token_ids == direct.layout.token_ids
    assert all(torch.equal(a, b) for a, b in zip(direct.step_logits, traced.step_logits, strict=True))


def test_stored_edits_keep_the_trace(tiny_nnsight):
    """An edit stored on the model (``model.edit(inplace=True)``) runs in every trace, so no forward skips it."""
    model = tiny_nnsight["llama"]
    plain = generate(model, TINY_PROMPT, max_steps=3, keep_logits=True, **TOP3)
    with model.edit(inplace=True):
        model.lm_head.output[:] = model.lm_head.output * 0.5
    try:
        edited = generate(model, TINY_PROMPT, max_steps=3, keep_logits=True, **TOP3)
    finally:
        model.clear_edits()
    assert torch.allclose(edited.step_logits[0], plain.step_logits[0] * 0.5)


def test_the_forward_after_the_last_step_is_left_out_when_unread(tiny_nnsight, monkeypatch):
    """Nothing reads the forward after the last step (no capture, pruning or kept logits): it is not run, and the
    generation is the same as with it (tokens, probabilities, stop reason)."""
    model = tiny_nnsight["llama"]
    backend = backend_for(model)
    calls = []
    real = type(backend).tempo_forward
    monkeypatch.setattr(type(backend), "tempo_forward", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    lean = generate(model, TINY_PROMPT, max_steps=4, mode="isolated", **TOP3)
    assert len(calls) == 4  # the prompt's and those of steps 0-2
    calls.clear()
    full = generate(model, TINY_PROMPT, max_steps=4, mode="isolated", keep_logits=True, **TOP3)
    assert len(calls) == 5 and len(full.step_logits) == 4
    assert lean.layout.token_ids == full.layout.token_ids
    np.testing.assert_array_equal(lean.layout.probs, full.layout.probs)  # the prompt's are NaN on both
    assert lean.stop_reason == full.stop_reason == "max_steps"
    captured = generate(model, TINY_PROMPT, max_steps=4, mode="isolated", capture=True, **TOP3)
    assert captured.capture.step_ids == [0, 1, 2, 3]  # the last step's capture still comes from its forward
