"""Direct logit attribution: terms sum to the HF oracle's logit (frozen final-norm scale), contrasts to differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempo_lens.tools import direct_logit_attribution, sibling_contrast, siblings
from tests.helpers import hf_eager, hf_oracle_logits
from tests.tools.conftest import tiny_run


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # RMSNorm without biases; LayerNorm with b_O and learned positions
def test_attributions_sum_to_the_logit(tiny_bridges, tiny_dirs, arch):
    model = tiny_bridges[arch]
    run = tiny_run(model)
    oracle = hf_oracle_logits(hf_eager(tiny_dirs[arch]), run.layout, "isolated")
    df = direct_logit_attribution(model, run)
    layout = run.layout
    sums = df.groupby(["step", "rank", "reader_step", "reader_rank"])["attribution"].sum()
    assert len(sums) == sum(len(layout.step_range(s)) * len(layout.step_range(s - 1)) if s else len(layout.step_range(0))
                            for s in range(layout.n_steps))
    for (step, rank, reader_step, reader_rank), total in sums.items():
        reader = layout.n_prompt - 1 if reader_step == -1 else layout.physical_index(reader_step, reader_rank)
        expected = oracle[reader, layout.token_ids[layout.physical_index(step, rank)]].item()
        assert total == pytest.approx(expected, abs=1e-3)
    heads = df[df["component"] == "head"]
    assert set(zip(heads["layer"], heads["head"])) == {(l, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)}
    assert ("attn_bias" in set(df["component"])) == (arch == "gpt2")


def test_weights_follow_the_mixture(tiny_llama, llama_run):
    df = direct_logit_attribution(tiny_llama, llama_run, steps=[2])
    layout = llama_run.layout
    weights = df.groupby("reader_rank")["weight"].first()
    probs = np.array([layout.probs[i] for i in layout.step_range(1)])
    np.testing.assert_allclose(weights.to_numpy(), probs / probs.sum(), rtol=1e-6)
    top = direct_logit_attribution(tiny_llama, llama_run, steps=[2], next_token_source="top")
    assert set(top["reader_rank"]) == {0} and (top["weight"] == 1).all()


def test_contrast_sums_to_the_logit_difference(tiny_llama, llama_run, llama_hf):
    layout = llama_run.layout
    a, b = siblings(llama_run, [3])[0], siblings(llama_run, [3])[2]
    contrast = sibling_contrast(direct_logit_attribution(tiny_llama, llama_run, steps=[3]), a, b)
    rows = list(layout.step_range(2))
    weights = torch.tensor([layout.probs[i] for i in rows])
    oracle = hf_oracle_logits(llama_hf, layout, "isolated")[rows]
    expected = float((weights / weights.sum() * (oracle[:, a.token_id] - oracle[:, b.token_id])).sum())
    assert contrast["difference"].sum() == pytest.approx(expected, abs=1e-3)
    assert contrast["difference"].abs().is_monotonic_decreasing
    with pytest.raises(ValueError, match="different steps"):
        sibling_contrast(contrast, a, siblings(llama_run, [2])[0])
