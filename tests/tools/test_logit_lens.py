"""Logit lens per sibling: the last layer is the model's output (HF eager oracle) and the generation's choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempo_lens.capture import CapturedRun
from tempo_lens.replaying import replay
from tempo_lens.tools import logit_lens, lens_logits
from tests.helpers import hf_eager, hf_oracle_logits
from tests.tools.conftest import tiny_run


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lens_at_last_layer_equals_model_logits(tiny_bridges, tiny_dirs, arch):
    model = tiny_bridges[arch]
    run = tiny_run(model)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    rep = replay(model, run.layout, run_with_cache=True, names_filter=lambda n: n == last)
    oracle = hf_oracle_logits(hf_eager(tiny_dirs[arch]), run.layout, "isolated")
    assert (lens_logits(model, rep.cache[last][0]) - oracle).abs().max().item() < 1e-4


def test_own_reading_at_last_layer_is_the_generation_choice(tiny_llama, llama_run):
    df = logit_lens(tiny_llama, llama_run)
    last = df[(df["layer"] == tiny_llama.cfg.n_layers - 1) & (df["relation"] == "own")]
    layout = llama_run.layout
    expected = [layout.probs[layout.physical_index(s, r)] for s, r in zip(last["step"], last["rank"])]
    np.testing.assert_allclose(last["prob"], expected, atol=1e-5)  # probabilities recorded by generation (KV cache)
    assert list(last["token_rank"]) == list(last["rank"])  # siblings were the top-k, in order
    assert (last["kl_to_final"] == 0).all()
    assert (df[df["layer"] == 0]["kl_to_final"] > 1e-4).all()
    assert set(df["layer"]) == set(range(tiny_llama.cfg.n_layers))


def test_next_reading_is_each_sibling_rows_softmax(tiny_llama, llama_run, llama_hf):
    oracle = torch.softmax(hf_oracle_logits(llama_hf, llama_run.layout, "isolated"), -1)
    df = logit_lens(tiny_llama, llama_run, steps=[1], layers=[tiny_llama.cfg.n_layers - 1])
    nxt = df[df["relation"] == "next"]
    layout = llama_run.layout
    assert len(nxt) == len(layout.step_range(1)) * len(layout.step_range(2))
    for row in nxt.itertuples():
        reader = layout.physical_index(row.reader_step, row.reader_rank)
        assert row.step == 2 and abs(row.prob - oracle[reader, row.token_id].item()) < 1e-5


def test_same_frame_from_result_saved_run_and_bare_layout(tiny_llama, llama_run):
    captured = tiny_run(tiny_llama, capture=True)
    a = logit_lens(tiny_llama, llama_run, steps=[2])
    b = logit_lens(tiny_llama, CapturedRun.from_result(captured), steps=[2])
    c = logit_lens(tiny_llama, llama_run.layout, steps=[2])
    np.testing.assert_allclose(a["prob"], b["prob"], atol=1e-6)
    np.testing.assert_allclose(a["prob"], c["prob"], atol=1e-6)
    assert list(a["token"]) == list(c["token"])


def test_visible_condition_changes_only_rows_that_see_a_sibling(tiny_llama, llama_run):
    from tempo_lens.tools import Condition

    iso = logit_lens(tiny_llama, llama_run, steps=[0])
    vis = logit_lens(tiny_llama, llama_run, steps=[0], condition=Condition("visible"))
    same = (iso["relation"] == "own") | (iso["reader_rank"] == 0)  # the prompt row and step 0's first sibling see no sibling
    np.testing.assert_allclose(iso[same]["prob"], vis[same]["prob"], atol=1e-6)
    assert (iso[~same]["prob"] - vis[~same]["prob"]).abs().max() > 1e-4
