"""Retroactive pruning: scoring by hand, masking through hooks, and the HF oracle."""

from __future__ import annotations

import math

import pytest
import torch

from tempo_lens.errors import InvalidInputError
from tempo_lens.generation import generate
from tempo_lens.layout import TokenLayout
from tempo_lens.pruning import (
    AttentionPruning,
    AttentionPruningSession,
    SimilarityPruning,
    default_layer_weights,
    distance_prior,
    key_attention,
    set_scores,
)
from tests.helpers import hf_eager, hf_oracle_logits

TINY_PROMPT = [1, 17, 42, 5, 63, 8]
TOP3 = dict(threshold=1e-6, max_parallel=3)


def _layout() -> TokenLayout:
    # prompt 0..2, step 0 = {3, 4} (parallel), step 1 = {5}, step 2 = {6, 7} (newest)
    layout = TokenLayout.from_prompt([10, 11, 12])
    layout.append_step([20, 21], [0.6, 0.3])
    layout.append_step([22], [0.9])
    layout.append_step([23, 24], [0.5, 0.4])
    return layout


def test_default_layer_weights():
    w = default_layer_weights(3)  # 0.2, 0.6, 1.0 over 1.8
    assert torch.allclose(w, torch.tensor([0.2, 0.6, 1.0]) / 1.8)


def test_key_attention_weights_layers_and_averages_the_rest():
    attention = torch.zeros(2, 1, 2, 1, 3)
    attention[0, 0, :, 0] = torch.tensor([1.0, 0.0, 0.0])
    attention[1, 0, 0, 0] = torch.tensor([0.0, 1.0, 0.0])
    attention[1, 0, 1, 0] = torch.tensor([0.0, 0.0, 1.0])
    # layer 0 per key: [1, 0, 0]; layer 1 (mean of heads): [0, .5, .5]; weights 0.25 / 0.75
    a = key_attention(attention, torch.tensor([0.25, 0.75]))
    assert torch.allclose(a, torch.tensor([0.25, 0.375, 0.375]))


def test_set_score_by_hand():
    layout = _layout()
    a = torch.tensor([0.50, 0.10, 0.10, 0.02, 0.04, 0.20, 0.02, 0.02])
    # earlier keys except 0: keys 1..5 -> (0.1 + 0.1 + 0.02 + 0.04 + 0.2) / 5 = 0.092
    # set of step 0 (keys 3, 4): mean 0.03 -> 0.03 / 0.092
    assert set_scores(a, layout, step=2) == {0: pytest.approx(0.03 / 0.092)}


def test_denominator_skips_pruned_keys_and_collapsed_sets():
    layout = _layout()
    layout.append_step([25], [0.9])  # step 3
    layout.prune([7], at_step=3, score=0.1)  # set of step 2 collapsed
    a = torch.tensor([0.5, 0.1, 0.1, 0.02, 0.04, 0.2, 0.02, 0.3, 0.0])
    # keys 1..7 except pruned 7: (0.1 + 0.1 + 0.02 + 0.04 + 0.2 + 0.02) / 6 = 0.08; step 2 is not rescored
    assert set_scores(a, layout, step=3) == {0: pytest.approx(0.03 / 0.08)}


def test_distance_prior_by_hand():
    layout = _layout()
    prior = distance_prior(layout, step=2)
    # newest logical position 5; earlier keys' positions 0,1,2,3,3,4 -> d = 5,4,3,2,2,1; n = 6
    raw = torch.exp(-torch.tensor([5.0, 4, 3, 2, 2, 1]) / 3)
    assert torch.allclose(prior, raw / raw.mean())
    assert prior.mean().item() == pytest.approx(1.0)


def test_strategy_collapses_low_sets_to_the_most_likely_sibling():
    layout = _layout()
    attention = torch.zeros(1, 1, 1, 2, 8)
    attention[..., :] = torch.tensor([0.5, 0.1, 0.1, 0.02, 0.04, 0.2, 0.02, 0.02])
    session = AttentionPruningSession(AttentionPruning(attention_threshold=0.5), layout, layers=[0])
    events = session.after_step({0: attention[0]}, step=2)
    assert len(events) == 1 and events[0].kept == 3 and events[0].pruned == (4,)
    assert layout.pruned_at[4] == 2 and layout.prune_scores[4] == pytest.approx(0.03 / 0.092)
    assert not layout.is_pruned(3)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "x"])
def test_bad_prune_threshold(bad):
    with pytest.raises(InvalidInputError, match="prune threshold"):
        AttentionPruning(attention_threshold=bad)


def test_threshold_zero_prunes_nothing(tiny_llama):
    plain = generate(tiny_llama, TINY_PROMPT, max_steps=5, keep_logits=True, **TOP3)
    zero = generate(tiny_llama, TINY_PROMPT, max_steps=5, keep_logits=True, pruning=AttentionPruning(0.0), **TOP3)
    assert zero.layout.to_dict() == plain.layout.to_dict()
    assert all(torch.equal(a, b) for a, b in zip(zero.step_logits, plain.step_logits))


def test_huge_threshold_collapses_every_set_after_the_next_step(tiny_llama):
    result = generate(tiny_llama, TINY_PROMPT, max_steps=5, pruning=AttentionPruning(1e9), **TOP3)
    layout = result.layout
    for step in range(4):  # the newest set (step 4) is never scored
        r = layout.step_range(step)
        assert not layout.is_pruned(r.start)
        assert [layout.pruned_at[i] for i in r][1:] == [step + 1] * (len(r) - 1)
    assert not any(layout.is_pruned(i) for i in layout.step_range(4))
    assert "~~" in result.text


@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_pruned_keys_get_zero_attention_and_logits_match_hf(tiny_llama, tiny_dirs, mode):
    result = generate(
        tiny_llama, TINY_PROMPT, max_steps=6, mode=mode, keep_logits=True, capture=True,
        pruning=AttentionPruning(1.0), **TOP3,
    )
    layout = result.layout
    pruned = [i for i in range(len(layout)) if layout.is_pruned(i)]
    assert pruned, "the check needs at least one pruned token"
    for step, attention in result.capture.steps.items():
        for key in pruned:
            if layout.pruned_at[key] < step:
                assert (attention[..., key] == 0).all()
    oracle = hf_oracle_logits(hf_eager(tiny_dirs["llama"]), layout, mode)
    for step, rows in enumerate(result.step_logits):
        r = layout.step_range(step)
        assert (oracle[r.start : r.stop] - rows).abs().max().item() < 1e-4


def test_json_pruned_flags(tiny_llama):
    result = generate(tiny_llama, TINY_PROMPT, max_steps=4, pruning=AttentionPruning(1e9), **TOP3)
    steps = result.to_json_dict()["steps"]
    assert steps[0]["pruned"] == [False, True, True]
    assert steps[0]["pruned_at_step"] == [None, 1, 1]
    assert not math.isnan(steps[0]["prune_score"][1])


# ---- the second strategy: diversity by hidden-state similarity -----------------------------------

def test_similarity_strategy_by_hand():
    from tempo_lens.pruning import SimilarityPruning, SimilarityPruningSession

    layout = _layout()  # step 0 = {3, 4}, step 1 = {5}, step 2 = {6, 7}
    session = SimilarityPruningSession(SimilarityPruning(similarity_threshold=0.9), layout, layer=0)
    session.states = {3: torch.tensor([1.0, 0.0]), 4: torch.tensor([0.8, 0.6]), 6: torch.tensor([1.0, 0.0]), 7: torch.tensor([0.99, 0.1])}
    assert session.after_step({}, step=1) == []  # step 0's set: cos = 0.8 < 0.9
    assert session.after_step({}, step=2) == []  # step 1 has one sibling
    layout.append_step([60], [0.9])  # step 3 judges step 2: cos = 0.99 / |(0.99, 0.1)| = 0.99496...
    events = session.after_step({}, step=3)
    assert events[0].pruned == (7,) and events[0].kept == 6
    assert layout.pruned_at[7] == 3 and layout.prune_scores[7] == pytest.approx(0.99 / (0.99**2 + 0.01) ** 0.5)
    assert not layout.is_pruned(4)


@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_similarity_pruning_masks_and_matches_hf(tiny_llama, tiny_dirs, mode):
    from tempo_lens.pruning import SimilarityPruning

    plain = generate(tiny_llama, TINY_PROMPT, max_steps=4, mode=mode, keep_logits=True, **TOP3)
    never = generate(tiny_llama, TINY_PROMPT, max_steps=4, mode=mode, keep_logits=True, pruning=SimilarityPruning(1.01), **TOP3)
    assert never.layout.to_dict() == plain.layout.to_dict()
    result = generate(tiny_llama, TINY_PROMPT, max_steps=4, mode=mode, keep_logits=True, capture=True,
                      pruning=SimilarityPruning(-1.0), **TOP3)
    layout = result.layout
    for step in range(3):  # every set but the newest keeps only its top sibling, pruned after the next step
        r = layout.step_range(step)
        assert [layout.pruned_at[i] for i in r] == [-1] + [step + 1] * (len(r) - 1)
    for step, attention in result.capture.steps.items():
        for key in range(len(layout)):
            if layout.is_pruned(key) and layout.pruned_at[key] < step:
                assert (attention[..., key] == 0).all()
    oracle = hf_oracle_logits(hf_eager(tiny_dirs["llama"]), layout, mode)
    for step, rows in enumerate(result.step_logits):
        r = layout.step_range(step)
        assert (oracle[r.start : r.stop] - rows).abs().max().item() < 1e-4
    assert result.to_json_dict()["pruning"]["strategy"] == "similarity"


def test_similarity_states_are_each_tokens_residual_stream(tiny_llama):
    from tempo_lens.pruning import SimilarityPruning
    from tempo_lens.replaying import replay

    result = generate(tiny_llama, TINY_PROMPT, max_steps=3, **TOP3)
    session = SimilarityPruning(1.01, layer=1).start(tiny_llama, result.layout)
    name = "blocks.1.hook_resid_post"
    full = replay(tiny_llama, result.layout, run_with_cache=True, names_filter=name, extra_hooks=session.hooks).cache[name][0]
    assert sorted(session.states) == list(range(len(result.layout)))  # every token, as fed
    for index, state in session.states.items():
        assert state.shape == full[index].shape and (state - full[index]).abs().max().item() < 1e-4


@pytest.mark.parametrize("strategy", [AttentionPruning(1e9), "similarity"])
def test_a_strategy_keeps_no_state_between_generations(tiny_llama, strategy):
    from tempo_lens.pruning import SimilarityPruning

    strategy = SimilarityPruning(-1.0) if strategy == "similarity" else strategy
    first = generate(tiny_llama, TINY_PROMPT, max_steps=4, pruning=strategy, **TOP3)
    second = generate(tiny_llama, TINY_PROMPT, max_steps=4, pruning=strategy, **TOP3)
    assert first.pruning_events and second.pruning_events == first.pruning_events  # not accumulated
    assert not any(vars(strategy).get(name) for name in ("events", "states"))


@pytest.mark.parametrize("strategy", [AttentionPruning(), AttentionPruning(0.2, layers=[0, -1], layer_weights=[1.0, 2.0], use_distance_prior=True),
                                      SimilarityPruning(), SimilarityPruning(0.5, layer=1)])
def test_a_config_table_round_trips(strategy):
    """describe() and the config table reader share one key list; a table's missing keys keep the strategy's defaults."""
    from tempo_lens.generation.config import pruning_from_mapping

    assert pruning_from_mapping(strategy.describe()) == strategy
    assert pruning_from_mapping({"strategy": strategy.describe()["strategy"]}) == type(strategy)()
