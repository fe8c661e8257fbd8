"""TEMPO on HookedTransformer against the HF eager oracle (position_ids + 4D float mask), and against the bridge."""

from __future__ import annotations

import pytest
import torch

from tempo_lens import generate, generate_batch, replay
from tempo_lens.errors import InvalidInputError
from tempo_lens.hooks import tempo_hooks
from tempo_lens.layout import TokenLayout
from tests.helpers import (
    TINY_ARCHITECTURES, TINY_PROMPT, TOP3, hf_eager, hf_oracle_logits, max_step_delta, tiny_oracle_delta,
)

_max_step_delta = max_step_delta


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_every_step_matches_hf_oracle_tiny(tiny_hooked, tiny_dirs, arch, mode):
    assert tiny_oracle_delta(tiny_hooked[arch], tiny_dirs[arch], mode) < 1e-4


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_backends_agree(tiny_hooked, tiny_bridges, arch):
    hooked = generate(tiny_hooked[arch], TINY_PROMPT, max_steps=4, mode="isolated", keep_logits=True, capture=True, **TOP3)
    bridge = generate(tiny_bridges[arch], TINY_PROMPT, max_steps=4, mode="isolated", keep_logits=True, capture=True, **TOP3)
    assert hooked.layout.token_ids == bridge.layout.token_ids
    for a, b in zip(hooked.step_logits, bridge.step_logits):
        assert (a - b).abs().max().item() < 1e-4
    for step in range(hooked.layout.n_steps):
        assert abs(hooked.capture[step].array - bridge.capture[step].array).max() < 1e-5


@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_every_step_matches_hf_oracle_embedded(embedded_hooked, embedded_hf, mode):
    result = generate(embedded_hooked, "The cat sat on the", threshold=0.05, max_steps=8, mode=mode, keep_logits=True)
    assert max(result.layout.step_sizes()) >= 2, "the check needs at least one parallel step"
    assert _max_step_delta(result, hf_oracle_logits(embedded_hf, result.layout, mode)) < 1e-3


def test_batch_equals_single(tiny_hooked):
    model = tiny_hooked["llama"]
    prompts = [TINY_PROMPT, [1, 30, 31], [1, 50, 51, 52, 53, 54, 55, 56]]
    batched = generate_batch(model, prompts, max_steps=4, keep_logits=True, **TOP3)
    for prompt, got in zip(prompts, batched):
        alone = generate(model, prompt, max_steps=4, keep_logits=True, **TOP3)
        assert got.layout.token_ids == alone.layout.token_ids
        for a, b in zip(got.step_logits, alone.step_logits):
            assert (a - b).abs().max().item() < 1e-4


def test_replay_unique_positions_matches_plain_forward(tiny_hooked, tiny_dirs):
    result = generate(tiny_hooked["qwen2"], TINY_PROMPT, max_steps=3, **TOP3)
    layout = result.layout
    got = replay(tiny_hooked["qwen2"], layout, positions="unique", mask="visible").logits
    unique = TokenLayout.from_prompt(layout.token_ids)  # every token at its physical index, causal mask
    oracle = hf_oracle_logits(hf_eager(tiny_dirs["qwen2"]), unique, "visible")
    assert (got - oracle).abs().max().item() < 1e-4


def test_fractional_positions_match_hf(tiny_hooked, tiny_dirs):
    """Fractional RoPE positions (siblings 1e-2 apart) against HF eager fed the same float position_ids."""
    from tempo_lens.hooks import fractional_positions
    from tests.helpers import reference_mask

    layout = generate(tiny_hooked["llama"], TINY_PROMPT, max_steps=3, **TOP3).layout
    positions = fractional_positions(layout, spacing=1e-2)
    got = replay(tiny_hooked["llama"], layout, positions=positions, mask="isolated").logits
    hf = hf_eager(tiny_dirs["llama"])
    with torch.no_grad():
        oracle = hf(input_ids=torch.tensor([layout.token_ids]), position_ids=positions[None],
                    attention_mask=reference_mask(layout, "isolated")[None, None]).logits[0]
    assert (got - oracle).abs().max().item() < 1e-4


def test_hooks_leave_the_model_unchanged(tiny_hooked):
    model = tiny_hooked["gemma3"]
    tokens = torch.tensor([TINY_PROMPT])
    with torch.no_grad():
        before = model(tokens)
        generate(model, TINY_PROMPT, max_steps=3, **TOP3)
        after = model(tokens)
    assert torch.equal(before, after)
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_forward_that_skips_the_start_is_refused(tiny_hooked):
    model = tiny_hooked["llama"]
    layout = TokenLayout.from_prompt(TINY_PROMPT)
    layout.append_step([20, 21], [0.5, 0.4])
    with pytest.raises(InvalidInputError, match="first token"):
        model.run_with_hooks(torch.tensor([layout.token_ids[2:]]), fwd_hooks=tempo_hooks(model, layout))


def test_processed_weights_keep_every_choice(tiny_hooked, tiny_dirs):
    """LayerNorm folding and centring shift logits by a constant per row: log-probabilities and choices stay."""
    from tempo_lens import load_model

    plain = load_model(str(tiny_dirs["llama"]), backend="hooked")
    processed = load_model(str(tiny_dirs["llama"]), backend="hooked")
    processed.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    a = generate(plain, TINY_PROMPT, max_steps=4, keep_logits=True, **TOP3)
    b = generate(processed, TINY_PROMPT, max_steps=4, keep_logits=True, **TOP3)
    assert a.layout.token_ids == b.layout.token_ids
    for x, y in zip(a.step_logits, b.step_logits):
        assert (x.log_softmax(-1) - y.log_softmax(-1)).abs().max().item() < 1e-4
