"""SAELens on TEMPO: a HookedSAETransformer with SAEs attached (random weights built here; nothing downloaded)."""

from __future__ import annotations

import pytest
import torch

from tempo_lens import generate
from tempo_lens.tools import compare_sae_latents, sae_latents

sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is installed in .venv-tl3 (make test runs these there)")

TINY_PROMPT = [1, 17, 42, 5, 63, 8]
TOP3 = dict(threshold=1e-6, max_parallel=3)
HOOK = "blocks.1.hook_resid_post"


def _random_sae(d_in: int, d_sae: int = 32, seed: int = 0):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=HOOK)))
    with torch.no_grad():
        for param in sae.parameters():
            param.normal_(0, 0.3)
    return sae


@pytest.fixture
def sae_model(tiny_hooked):
    from sae_lens import HookedSAETransformer

    model = tiny_hooked["llama"]
    assert isinstance(model, HookedSAETransformer)
    yield model
    model.reset_saes()


def test_error_term_keeps_tempo_logits_and_records_every_sibling(sae_model):
    plain = generate(sae_model, TINY_PROMPT, max_steps=4, keep_logits=True, **TOP3)
    sae = _random_sae(sae_model.cfg.d_model)
    sae_model.add_sae(sae, use_error_term=True)
    recorded = []
    record = (f"{HOOK}.hook_sae_acts_post", lambda acts, hook: recorded.append(acts.detach().clone()))
    with sae_model.hooks(fwd_hooks=[record]):
        with_sae = generate(sae_model, TINY_PROMPT, max_steps=4, keep_logits=True, **TOP3)
    assert with_sae.layout.token_ids == plain.layout.token_ids
    for a, b in zip(with_sae.step_logits, plain.step_logits):
        assert (a - b).abs().max().item() < 1e-5
    # the prompt forward, then one forward per step holding every sibling of the step
    assert [r.shape[1] for r in recorded] == [len(TINY_PROMPT)] + plain.layout.step_sizes()
    assert all(r.shape[-1] == sae.cfg.d_sae for r in recorded)


def test_without_error_term_the_sae_changes_the_run(sae_model):
    plain = generate(sae_model, TINY_PROMPT, max_steps=2, keep_logits=True, **TOP3)
    sae_model.add_sae(_random_sae(sae_model.cfg.d_model), use_error_term=False)
    spliced = generate(sae_model, TINY_PROMPT, max_steps=2, keep_logits=True, **TOP3)
    assert (spliced.step_logits[0] - plain.step_logits[0]).abs().max().item() > 1e-3


def test_sae_latents_match_encoding_the_replayed_activations(sae_model):
    result = generate(sae_model, TINY_PROMPT, max_steps=4, **TOP3)
    sae = _random_sae(sae_model.cfg.d_model)
    detached = sae_latents(sae_model, result, sae)
    sae_model.add_sae(sae, use_error_term=True)
    attached = sae_latents(sae_model, result, sae)
    assert list(detached.columns) == ["run", "prompt", "step", "sibling", "physical_index", "logical_position", "token", "prob",
                                      "parallel", "latent", "activation"]
    assert len(detached) == len(attached) > 0
    assert (detached.activation.to_numpy() - attached.activation.to_numpy()).__abs__().max() < 1e-4
    # every generated token appears with its own step and rank, and parallel follows the layout
    tokens = detached.drop_duplicates(["step", "sibling"])
    layout = result.layout
    for row in tokens.itertuples():
        index = layout.physical_index(row.step, row.sibling)
        assert row.parallel == bool(layout.parallel_tensor()[index])
    # the activations are the SAE's encoding of the replayed residual stream at its hook point
    _, cache = sae_model.run_with_cache(torch.tensor([layout.token_ids]), names_filter=[f"{HOOK}.hook_sae_input"],
                                        attention_mask=torch.ones(1, len(layout), dtype=torch.long))
    assert cache is not None


def test_compare_sae_latents_ranks_a_planted_difference():
    import pandas as pd

    rows = []
    for run in range(4):
        for step, parallel in ((0, True), (0, True), (1, False), (2, False)):
            rows.append((f"r{run}", step, len(rows) % 2, "t", parallel, 7, 2.0 if parallel else 0.1))
            rows.append((f"r{run}", step, len(rows) % 2, "t", parallel, 3, 0.5))
    frame = pd.DataFrame(rows, columns=["run", "step", "sibling", "token", "parallel", "latent", "activation"])
    top = compare_sae_latents(frame, top=2)
    assert top.latent.iloc[0] == 7 and top.difference.iloc[0] > 1.5
    assert top.ci_low.iloc[0] <= top.difference.iloc[0] <= top.ci_high.iloc[0]
