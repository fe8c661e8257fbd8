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
        for step, sibling, parallel in ((0, 0, True), (0, 1, True), (1, 0, False), (2, 0, False)):
            rows.append((f"r{run}", step, sibling, "t", parallel, 7, 2.0 if parallel else 0.1))
            rows.append((f"r{run}", step, sibling, "t", parallel, 3, 0.5))
    frame = pd.DataFrame(rows, columns=["run", "step", "sibling", "token", "parallel", "latent", "activation"])
    top = compare_sae_latents(frame, top=2)
    assert top.latent.iloc[0] == 7 and top.difference.iloc[0] > 1.5
    assert top.ci_low.iloc[0] <= top.difference.iloc[0] <= top.ci_high.iloc[0]


README_PROMPTS = [[1, 17, 42, 5, 63, 8], [1, 9, 33, 2], [1, 50, 4, 6, 7]]


def test_the_readme_shape_keeps_each_prompt_its_own_run(sae_model):
    """generate_batch -> sae_latents per result -> compare_sae_latents: one run per prompt, never merged."""
    import warnings

    from tempo_lens import generate_batch

    sae = _random_sae(sae_model.cfg.d_model)
    sae_model.add_sae(sae, use_error_term=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = generate_batch(sae_model, README_PROMPTS, threshold=0.05, max_steps=8, max_parallel=3)
    frames = [sae_latents(sae_model, run, sae) for run in runs]
    # every run has both parallel and non-parallel generated tokens at this threshold, so each contributes a value
    assert all(f.drop_duplicates(["step", "sibling"]).parallel.nunique() == 2 for f in frames)
    top = compare_sae_latents(frames, top=5)
    assert (top.n_runs == len(README_PROMPTS)).all()
    # three runs are too few for a bounded studentized interval: none is given (merged as one run, it had zero width)
    assert top.ci_low.isna().all() and top.ci_high.isna().all()
    fourth = frames[0].assign(run="isolated-3", activation=frames[0].activation * 1.5)  # a distinct fourth run
    four = compare_sae_latents([*frames, fourth], top=5)
    assert (four.n_runs == 4).all() and (four.ci_high > four.ci_low).all()  # four runs: intervals with width
    assert [set(f.run) for f in frames] == [{"isolated-0"}, {"isolated-1"}, {"isolated-2"}]
    assert [r.name for r in runs] == ["isolated-0", "isolated-1", "isolated-2"]


def test_compare_sae_latents_refuses_two_runs_of_one_name():
    import pandas as pd

    from tempo_lens.errors import InvalidInputError

    def frame(run, shift):
        rows = [(run, step, 0, "t", step == 0, 7, 1.0 + shift + step) for step in range(3)]
        return pd.DataFrame(rows, columns=["run", "step", "sibling", "token", "parallel", "latent", "activation"])

    with pytest.raises(InvalidInputError, match="both hold a run named 'run'"):
        compare_sae_latents([frame("run", 0.0), frame("run", 1.0)])
    with pytest.raises(InvalidInputError, match="two runs share that name"):
        compare_sae_latents(pd.concat([frame("run", 0.0), frame("run", 1.0)]))
    one = compare_sae_latents([frame("a", 0.0)])  # one run: a value, no interval
    assert one.n_runs.iloc[0] == 1 and one.ci_low.isna().all() and one.ci_high.isna().all()
    two = compare_sae_latents([frame("a", 0.0), frame("b", 1.0)])
    assert two.n_runs.iloc[0] == 2


# ---- issue 32, class 6: sae_latents checks its inputs (no raw traceback) ------------------------------------------

def _sae_at(hook: str, d_in: int):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    return StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=16, metadata=SAEMetadata(hook_name=hook)))


@pytest.mark.parametrize("hook, d_in", [(HOOK, 63), (HOOK, 128), ("blocks.1.attn.hook_z", 63), ("blocks.9.hook_resid_post", 64)])
def test_an_sae_of_another_width_or_hook_point_is_refused(sae_model, hook, d_in):
    from tempo_lens.errors import InvalidInputError

    result = generate(sae_model, TINY_PROMPT, max_steps=2, **TOP3)
    with pytest.raises(InvalidInputError, match="SAE|hook point"):
        sae_latents(sae_model, result, _sae_at(hook, d_in))


def test_an_sae_at_a_per_head_hook_point_reads_the_heads_side_by_side(sae_model):
    """attn.hook_z is [pos, head, d_head]: the SAE encodes heads x d_head values per token, as SAELens does."""
    result = generate(sae_model, TINY_PROMPT, max_steps=2, **TOP3)
    width = sae_model.cfg.n_heads * sae_model.cfg.d_head
    frame = sae_latents(sae_model, result, _sae_at("blocks.1.attn.hook_z", width), min_activation=-1e9)
    assert set(frame.latent) <= set(range(16)) and len(frame) == 16 * (len(result.layout) - result.layout.n_prompt)


@pytest.mark.parametrize("value", ["x", float("nan"), float("inf"), None, True, [0.1]])
def test_min_activation_must_be_a_finite_number(sae_model, value):
    from tempo_lens.errors import InvalidInputError

    result = generate(sae_model, TINY_PROMPT, max_steps=1, **TOP3)
    with pytest.raises(InvalidInputError, match="min_activation"):
        sae_latents(sae_model, result, _random_sae(sae_model.cfg.d_model), min_activation=value)
