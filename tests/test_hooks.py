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
from tests.helpers import hf_eager, hf_oracle_logits


def _layout() -> TokenLayout:
    layout = TokenLayout.from_prompt([1, 17, 42, 5])
    layout.append_step([30, 31, 32], [0.5, 0.3, 0.1])
    layout.append_step([40], [0.9])
    layout.append_step([50, 51], [0.6, 0.3])
    return layout


@pytest.mark.parametrize("arch", ["llama", "llama3_scaling", "qwen2", "gpt2"])
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


def test_model_without_position_hooks_is_refused():
    fake = SimpleNamespace(hook_dict={}, cfg=SimpleNamespace(model_name="fake-model"))
    with pytest.raises(InvalidInputError, match="neither rotary_emb.hook_cos nor hook_pos_embed"):
        tempo_position_hooks(fake, torch.tensor([0.0]))


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


def test_pattern_recorder_keeps_chosen_layers(tiny_llama):
    recorder = PatternRecorder([0, 2])
    tiny_llama.run_with_hooks(torch.tensor([[1, 2, 3, 4]]), fwd_hooks=recorder.hooks())
    patterns = recorder.take()
    assert sorted(patterns) == [0, 2] and patterns[0].shape == (1, 4, 4, 4)
    assert torch.allclose(patterns[2].sum(-1), torch.ones(1, 4, 4))
    assert recorder.take() == {}
