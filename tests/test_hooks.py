"""Hook factories on their own: positions, masks, bias and recording, against HF eager where one exists."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tempo_lens.errors import InvalidInputError
from tempo_lens.hooks import (
    PatternRecorder, attention_block_hooks, attention_bias_hooks, isolation_mask_hooks, learned_position_hooks, pruned_keys_mask_hooks,
    rope_position_hooks, tempo_hooks, tempo_position_hooks,
)
from tempo_lens.layout import TokenLayout
from tests.helpers import TINY_ARCHITECTURES, hf_eager, hf_oracle_logits


def _layout() -> TokenLayout:
    layout = TokenLayout.from_prompt([1, 17, 42, 5])
    layout.append_step([30, 31, 32], [0.5, 0.3, 0.1])
    layout.append_step([40], [0.9])
    layout.append_step([50, 51], [0.6, 0.3])
    return layout


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_run_with_hooks_matches_hf_full_forward(tiny_bridges, tiny_dirs, arch, mode):
    layout = _layout()
    layout.prune([5, 6], at_step=1, score=0.1)  # hidden from step 2's queries
    model = tiny_bridges[arch]
    with torch.no_grad():
        ours = model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=tempo_hooks(model, layout, mode))[0]
    assert (ours - hf_oracle_logits(hf_eager(tiny_dirs[arch]), layout, mode)).abs().max().item() < 1e-4


def test_separate_factories_compose_like_tempo_hooks(tiny_llama):
    layout = _layout()
    layout.prune([5, 6], at_step=1, score=0.1)
    tokens = torch.tensor([layout.token_ids])
    with torch.no_grad():
        combined = tiny_llama.run_with_hooks(tokens, fwd_hooks=tempo_hooks(tiny_llama, layout, "isolated"))
        separate = tiny_llama.run_with_hooks(tokens, fwd_hooks=rope_position_hooks(tiny_llama, layout)
                                             + isolation_mask_hooks(tiny_llama, layout) + pruned_keys_mask_hooks(tiny_llama, layout))
    assert torch.allclose(combined, separate, atol=1e-6)


def test_rope_hooks_take_a_plain_position_tensor(tiny_llama, tiny_dirs):
    positions = torch.tensor([0.0, 1.0, 2.0, 2.0, 3.0])
    tokens = torch.tensor([[1, 17, 42, 43, 5]])
    with torch.no_grad():
        ours = tiny_llama.run_with_hooks(tokens, fwd_hooks=rope_position_hooks(tiny_llama, positions))[0]
        hf = hf_eager(tiny_dirs["llama"])(tokens, position_ids=positions.long()[None],
                                           attention_mask=torch.zeros(1, 1, 5, 5).masked_fill(torch.ones(5, 5).triu(1).bool(), float("-inf"))).logits[0]
    assert (ours - hf).abs().max().item() < 1e-4


def test_learned_positions_refuse_fractional(tiny_bridges):
    gpt2 = tiny_bridges["gpt2"]
    hooks = learned_position_hooks(gpt2, torch.tensor([0.0, 1.0, 1.5]))
    with pytest.raises(InvalidInputError, match="integer positions"):
        gpt2.run_with_hooks(torch.tensor([[1, 2, 3]]), fwd_hooks=hooks)
    with pytest.raises(InvalidInputError, match="rotary"):
        rope_position_hooks(gpt2, torch.tensor([0.0]))


def test_model_without_position_hooks_is_refused(tiny_bridges, monkeypatch):
    fake = SimpleNamespace(hook_dict={}, cfg=SimpleNamespace(model_name="fake-model"))
    with pytest.raises(InvalidInputError, match="TransformerBridge or HookedTransformer"):
        tempo_position_hooks(fake, torch.tensor([0.0]))
    from tempo_lens.backends.bridge import BridgeBackend

    monkeypatch.setattr(BridgeBackend, "position_kind", lambda self: None)
    with pytest.raises(InvalidInputError, match="exposes neither rotary position hooks nor hook_pos_embed"):
        tempo_position_hooks(tiny_bridges["llama"], torch.tensor([0.0]))


def test_mask_hooks_share_one_prepared_mask_per_forward():
    fake = SimpleNamespace(cfg=SimpleNamespace(n_layers=3))
    calls = []
    masks = {"own keys only": torch.eye(3, dtype=torch.bool), "nothing": torch.zeros(3, 3, dtype=torch.bool),
             "key 0": torch.arange(3)[None, :].expand(3, 3) == 0}
    for name, mask in masks.items():
        hooks = attention_block_hooks(fake, lambda q, k, mask=mask: calls.append((q, k)) or mask)
        scores = torch.randn(1, 2, 3, 3)
        outs = [hook(scores) for _, hook in hooks]  # one forward: every layer sees the same scores
        expected = scores.masked_fill((mask & ~torch.eye(3, dtype=torch.bool)), float("-inf"))
        for out in outs:
            assert torch.equal(out, expected), name
        if name == "nothing":
            assert all(out is scores for out in outs)  # nothing blocked: the scores pass through untouched
    assert calls == [(3, 3)] * 9  # blocked(q, K) is asked at every layer with the forward's (q, K)


def test_attention_bias_shifts_scores_of_chosen_keys_only(tiny_llama):
    layout = _layout()
    parallel = layout.parallel_tensor()
    seen = {}

    def grab(scores, hook):
        seen[hook.name] = scores.detach().clone()

    tokens = torch.tensor([layout.token_ids])
    tiny_llama.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_attn_scores", grab)])
    plain = seen.pop("blocks.1.attn.hook_attn_scores")
    bias = attention_bias_hooks(tiny_llama, parallel, bias=2.0, layers=[1], heads=[0])
    tiny_llama.run_with_hooks(tokens, fwd_hooks=bias + [("blocks.1.attn.hook_attn_scores", grab)])
    biased = seen["blocks.1.attn.hook_attn_scores"]
    causal = torch.ones(len(layout), len(layout)).tril().bool()
    diff = (biased - plain)[0]
    assert torch.allclose(diff[0][:, parallel][causal[:, parallel]], torch.tensor(2.0))
    assert torch.allclose(diff[0][:, ~parallel][causal[:, ~parallel]], torch.tensor(0.0))
    assert torch.allclose(diff[1:], torch.tensor(0.0))
    assert (biased[0][:, ~causal] == plain[0][:, ~causal]).all()  # masked entries stay masked


def test_an_infinite_bias_reaches_the_chosen_keys_only(tiny_llama):
    """bias=-inf hides key 1 like a mask hook does (rows after it agree); the other keys get 0, not 0 * inf = NaN."""
    tokens = torch.tensor([[1, 10, 11, 12, 13]])
    key_1 = torch.arange(5) == 1
    hidden = tiny_llama.run_with_hooks(tokens, fwd_hooks=attention_block_hooks(tiny_llama, lambda q, k: key_1[None, :k].expand(q, k)))
    biased = tiny_llama.run_with_hooks(tokens, fwd_hooks=attention_bias_hooks(tiny_llama, key_1, bias=float("-inf")))
    assert torch.isfinite(biased).all()
    assert torch.allclose(biased[0, 2:], hidden[0, 2:], atol=1e-5)


def test_pattern_recorder_keeps_chosen_layers(tiny_llama):
    recorder = PatternRecorder([0, 2])
    tiny_llama.run_with_hooks(torch.tensor([[1, 2, 3, 4]]), fwd_hooks=recorder.hooks())
    patterns = recorder.take()
    assert sorted(patterns) == [0, 2] and patterns[0].shape == (1, 4, 4, 4)
    assert torch.allclose(patterns[2].sum(-1), torch.ones(1, 4, 4))
    assert recorder.take() == {}


def _fresh_rope_logits(model, tokens, positions):
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=rope_position_hooks(model, positions.clone()))


def test_position_tensor_edited_in_place_is_seen(tiny_llama):
    """The memo must not serve the cos/sin of a tensor's old values after an in-place edit."""
    tokens = torch.tensor([[1, 17, 42, 43, 5]])
    positions = torch.tensor([0.0, 1.0, 2.0, 2.0, 3.0])
    hooks = rope_position_hooks(tiny_llama, positions)
    with torch.no_grad():
        tiny_llama.run_with_hooks(tokens, fwd_hooks=hooks)
        positions[3:] += 1.0  # unique positions now
        edited = tiny_llama.run_with_hooks(tokens, fwd_hooks=hooks)
    assert torch.equal(edited, _fresh_rope_logits(tiny_llama, tokens, positions))


@pytest.mark.parametrize("returns", ["a fresh tensor", "one buffer updated in place"])
def test_position_callable_is_never_stale(tiny_llama, returns):
    """A callable's positions are re-read at every call, whether it returns new tensors (whose ids CPython
    reuses) or the same tensor object with new values."""
    values = torch.tensor([[0.0, 1.0, 2.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 1.0, 1.0, 9.0]]).repeat(3, 1)
    buffer = values[0].clone()
    current = {"i": 0}

    def source():
        if returns == "a fresh tensor":
            return values[current["i"]].clone()
        return buffer.copy_(values[current["i"]])

    (_, hook_cos), _ = rope_position_hooks(tiny_llama, source)
    reference = torch.zeros(1, 5, tiny_llama.cfg.d_head)
    rotary = tiny_llama.rotary_emb.original_component
    expected = [rotary(reference, v[None])[0] for v in values]
    got = []
    for i in range(len(values)):
        current["i"] = i
        got.append(hook_cos(reference))
    stale = [i for i in range(len(values)) if not torch.equal(got[i], expected[i])]
    assert not stale, f"stale cos/sin at calls {stale}"


def test_each_rotary_call_gets_its_own_arguments(tiny_bridges):
    """Gemma 3 calls its rotary embedding once per attention type; each call's table keeps its own base."""
    model = tiny_bridges["gemma3"]
    rotary = model.rotary_emb.original_component
    positions = torch.tensor([0.0, 1.0, 2.0, 2.0, 3.0])
    seen = []

    def grab(cos, hook):
        seen.append(cos.detach().clone())

    with torch.no_grad():
        model.run_with_hooks(torch.tensor([[1, 17, 42, 43, 5]]), fwd_hooks=rope_position_hooks(model, positions) + [("rotary_emb.hook_cos", grab)])
    expected = {layer_type: rotary(seen[0], positions[None], layer_type)[0] for layer_type in ("full_attention", "sliding_attention")}
    assert len(seen) == 2
    assert not torch.allclose(expected["full_attention"], expected["sliding_attention"])
    for table in seen:  # each call got exactly one of the two bases' tables at the wanted positions
        assert sum(torch.equal(table, e) for e in expected.values()) == 1
    assert not torch.equal(seen[0], seen[1])


def test_position_hooks_install_nothing_outside_their_hook_points(tiny_bridges):
    """Gemma 3's two rotary calls are told apart by value, so the rotary module keeps no hook and no attribute."""
    model = tiny_bridges["gemma3"]
    rotary = model.rotary_emb
    before = (dict(rotary._forward_pre_hooks), dict(rotary._forward_hooks), set(vars(rotary)))
    layout = TokenLayout.from_prompt([1, 10, 11])
    layout.append_step([12, 13], [0.6, 0.3])
    model.run_with_hooks(torch.tensor([layout.token_ids]), fwd_hooks=tempo_hooks(model, layout))
    assert (dict(rotary._forward_pre_hooks), dict(rotary._forward_hooks), set(vars(rotary))) == before
