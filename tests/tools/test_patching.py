"""Activation patching across replays, against the HF eager oracle with the same patch written as a torch hook."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from tempo_lens.errors import InvalidInputError
from tempo_lens.tools import Condition, LogitDifference, activation_patching, patching_figure, siblings
from tests.helpers import hf_oracle_logits


def recorder():
    """A metric that keeps every logits tensor it reads (source, target, then each patched replay)."""
    seen = []

    def keep(logits):
        seen.append(logits.clone())
        return 0.0

    return seen, keep


def test_patching_every_position_at_the_last_layer_gives_the_source_output(tiny_llama, llama_run, llama_hf):
    last = tiny_llama.cfg.n_layers - 1
    seen, keep = recorder()
    activation_patching(tiny_llama, llama_run, "all", layers=[last], metric=keep)
    source = hf_oracle_logits(llama_hf, llama_run.layout, "isolated")
    assert (seen[-1] - source).abs().max().item() < 1e-4
    assert (seen[1] - hf_oracle_logits(llama_hf, llama_run.layout, "visible")).abs().max().item() < 1e-4
    df = activation_patching(tiny_llama, llama_run, "all", layers=[last])
    assert df["value"].iloc[0] < 1e-8 and df["target_value"].iloc[0] > 1e-3 and df["restored"].iloc[0] == pytest.approx(1.0)


def test_one_head_patch_matches_hf_with_the_same_patch_on_o_proj_input(tiny_llama, llama_run, llama_hf):
    layer, head, d_head = 1, 2, tiny_llama.cfg.d_head
    sibling = siblings(llama_run, [2])[1]
    position = sibling.index(llama_run.layout)
    o_proj = llama_hf.model.layers[layer].self_attn.o_proj
    kept = {}
    handle = o_proj.register_forward_pre_hook(lambda module, args: kept.update(z=args[0].clone()))
    hf_oracle_logits(llama_hf, llama_run.layout, "isolated")
    handle.remove()

    def patch(module, args):
        z = args[0].clone()
        cols = slice(head * d_head, (head + 1) * d_head)
        z[0, position, cols] = kept["z"][0, position, cols]
        return (z,)

    handle = o_proj.register_forward_pre_hook(patch)
    expected = hf_oracle_logits(llama_hf, llama_run.layout, "visible")
    handle.remove()
    seen, keep = recorder()
    df = activation_patching(tiny_llama, llama_run, sibling, hook="z", layers=[layer], heads=[head], metric=keep)
    assert list(df["head"]) == [head]
    assert (seen[-1] - expected).abs().max().item() < 1e-4
    assert (seen[-1] - seen[1]).abs().max().item() > 1e-4  # the patch did something


def test_patching_what_both_conditions_share_changes_nothing(tiny_llama, llama_run):
    prompt = activation_patching(tiny_llama, llama_run, -1)  # isolated vs visible: the prompt rows are identical
    np.testing.assert_allclose(prompt["value"], prompt["target_value"], atol=1e-6)
    embed = activation_patching(tiny_llama, llama_run, "all", hook="resid_pre", layers=[0],
                                source=Condition(positions="shared"), target=Condition(positions="unique"))
    assert embed["target_value"].iloc[0] > 1e-4  # positions matter, but enter after the embedding
    np.testing.assert_allclose(embed["value"], embed["target_value"], atol=1e-6)


def test_logit_difference_metric_reads_the_mixture_that_chose_the_step(tiny_llama, llama_run, llama_hf):
    layout = llama_run.layout
    a, b = siblings(llama_run, [2])[:2]
    df = activation_patching(tiny_llama, llama_run, siblings(llama_run, [1]), layers=[0], metric=LogitDifference(a, b))
    rows = list(layout.step_range(1))
    weights = torch.tensor([layout.probs[i] for i in rows])
    mixture = (weights[:, None] / weights.sum() * torch.softmax(hf_oracle_logits(llama_hf, layout, "isolated")[rows], -1)).sum(0)
    assert df["source_value"].iloc[0] == pytest.approx(math.log(mixture[a.token_id] / mixture[b.token_id]), abs=1e-4)


def test_sweep_frames_and_figures(tiny_llama, llama_run):
    n_layers, n_heads = tiny_llama.cfg.n_layers, tiny_llama.cfg.n_heads
    sibling = siblings(llama_run, [1])[2]
    resid = activation_patching(tiny_llama, llama_run, sibling, metric="kl_to_target")
    heads = activation_patching(tiny_llama, llama_run, sibling, hook="z")
    assert list(resid["layer"]) == list(range(n_layers)) and (resid["head"] == -1).all()
    assert len(heads) == n_layers * n_heads and (resid["source_value"] > 0).all()
    for df in (resid, heads):
        fig = patching_figure(df)
        assert isinstance(fig, go.Figure) and len(fig.data) >= 1
    assert np.asarray(patching_figure(heads).data[0].z).shape == (n_layers, n_heads)


def test_batched_patches_equal_one_at_a_time(tiny_llama, llama_run):
    where = siblings(llama_run, [2])
    batched = activation_patching(tiny_llama, llama_run, where, hook="z", batch_size=5)  # 12 variants: 5 + 5 + 2
    single = activation_patching(tiny_llama, llama_run, where, hook="z", batch_size=1)
    np.testing.assert_allclose(batched["value"], single["value"], rtol=1e-4, atol=1e-7)
    assert batched["value"].nunique() == len(batched)


@pytest.mark.parametrize("kwargs, message", [
    (dict(hook="resid_mid"), "unknown hook"), (dict(heads=[0]), "heads apply"), (dict(layers=[9]), "layers"),
    (dict(hook="z", heads=[7]), "heads"), (dict(metric="kl"), "unknown metric"), (dict(batch_size=0), "batch_size"),
])
def test_bad_arguments_are_refused(tiny_llama, llama_run, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        activation_patching(tiny_llama, llama_run, (1, 0), **kwargs)


def test_nothing_to_patch_or_score_is_refused(tiny_llama, llama_run):
    """An empty ``where`` or ``score_steps`` would average over nothing: a clear refusal, not a ZeroDivisionError."""
    with pytest.raises(InvalidInputError, match="score_steps is empty"):
        activation_patching(tiny_llama, llama_run, (1, 0), score_steps=[])
    with pytest.raises(InvalidInputError, match="where selects no token"):
        activation_patching(tiny_llama, llama_run, [])
