"""Attribution patching: its gradient against finite differences, and its estimates against activation patching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempo_lens.backends import backend_for
from tempo_lens.errors import InvalidInputError
from tempo_lens.siblings import reader_rows
from tempo_lens.tools import Condition, LogitDifference, activation_patching, siblings
from tempo_lens.tools.attribution_patching import attribution_patching, attribution_totals
from tempo_lens.tools.common import batched_logits, cached_replay
from tempo_lens.tools.patching import step_log_probs
from tests.tools.conftest import tiny_run


def models(tiny_llama, request):
    out = [tiny_llama]
    try:
        out.append(request.getfixturevalue("tiny_hooked")["llama"])
    except pytest.skip.Exception:
        pass
    return out


def test_estimates_follow_activation_patching(tiny_llama, request):
    """Small case: the step-2 siblings patched isolated -> visible, read by the logit difference of two step-3 siblings."""
    for model in models(tiny_llama, request):
        run = tiny_run(model)
        metric = LogitDifference(*siblings(run, [3])[:2])
        where = siblings(run, [2])
        patched = activation_patching(model, run, where, metric=metric)
        estimate = attribution_totals(attribution_patching(model, run, where, metric=metric))
        actual = (patched.value - patched.target_value).to_numpy()
        assert np.abs(actual).max() > 0.05  # a case with an effect to estimate
        np.testing.assert_allclose(estimate.total.to_numpy(), actual, rtol=0.15, atol=3e-3)
        heads = activation_patching(model, run, where[1], hook="z", layers=[1], metric=metric)
        per_head = attribution_patching(model, run, where[1], hook="z", layers=[1], metric=metric)
        assert list(per_head["head"]) == list(range(model.cfg.n_heads))
        np.testing.assert_allclose(per_head.attribution.to_numpy(), (heads.value - heads.target_value).to_numpy(), rtol=0.15, atol=5e-4)


def test_gradient_matches_finite_differences(tiny_llama, llama_run):
    """Each row is delta . dM/da: nudging the target by eps * delta at that sibling changes M by eps times the row."""
    run, layer = llama_run, 2
    sibling = siblings(run, [2])[1]
    later = siblings(run, [3])[:2]
    metric = LogitDifference(*later)
    rows = attribution_patching(tiny_llama, run, sibling, layers=[layer], metric=metric)
    name = f"blocks.{layer}.hook_resid_post"
    source, target = Condition("isolated"), Condition("visible")
    layout = run.layout
    delta = cached_replay(backend_for(tiny_llama), layout, source, [name]).cache[name] - cached_replay(backend_for(tiny_llama), layout, target, [name]).cache[name]
    p = sibling.index(layout)
    eps = 0.05

    def nudge(activation, hook=None):
        out = activation.clone()
        out[0, p] += eps * delta[p].to(out.device, out.dtype)
        out[1, p] -= eps * delta[p].to(out.device, out.dtype)
        return out

    logits = batched_logits(backend_for(tiny_llama), layout, target, 2, [(name, nudge)])
    r, w = reader_rows(layout, 3, run.next_token_source)
    ids = [layout.token_ids[s.index(layout)] for s in later]
    values = [float(step_log_probs(l, r, w)[ids[0]] - step_log_probs(l, r, w)[ids[1]]) for l in logits]
    central = (values[0] - values[1]) / (2 * eps)
    assert abs(central) > 1e-3
    assert rows.attribution.iloc[0] == pytest.approx(central, rel=2e-2, abs=2e-5)


def test_refusals(tiny_llama, llama_run):
    where = siblings(llama_run, [2])
    with pytest.raises(InvalidInputError, match="gradient there is zero"):
        attribution_patching(tiny_llama, llama_run, where, metric="kl_to_target")
    with pytest.raises(InvalidInputError, match="tensor"):
        attribution_patching(tiny_llama, llama_run, where, metric=lambda logits: 0.0)
    with pytest.raises(InvalidInputError, match="unknown hook"):
        attribution_patching(tiny_llama, llama_run, where, hook="nope")
    kl = attribution_patching(tiny_llama, llama_run, where, layers=[0, 2])
    assert set(kl["layer"]) == {0, 2} and len(kl) == 2 * len(where) and (kl["metric"] == "kl_to_source").all()
    assert torch.isfinite(torch.tensor(kl.attribution.to_numpy())).all()
