"""SAEs end to end: the latent frame's token columns, an SAE loaded from a folder, and the two latent figures."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tempo_lens import generate
from tempo_lens.tools import latent_figure, latent_table, neuronpedia_url, sae_latents, sae_lattice, top_latents

sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is installed in .venv-tl3 (make test runs these there)")

PROMPTS = [[1, 17, 42, 5, 63, 8], [1, 5, 6, 7], [1, 30, 31, 32, 33, 34, 35]]
SETTINGS = dict(threshold=0.05, max_parallel=3, max_steps=5)
HOOK = "blocks.1.hook_resid_post"


def random_sae(d_in: int, d_sae: int = 24, seed: int = 0, neuronpedia_id: str | None = None):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    metadata = SAEMetadata(hook_name=HOOK, neuronpedia_id=neuronpedia_id)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=metadata))
    with torch.no_grad():
        for param in sae.parameters():
            param.normal_(0, 0.3)
    return sae


@pytest.fixture(scope="module")
def model(tiny_hooked):
    return tiny_hooked["llama"]


@pytest.fixture(scope="module")
def runs(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = [generate(model, p, names_filter=HOOK, **SETTINGS) for p in PROMPTS]
    assert all(r.layout.parallel_steps() and len(r.layout.parallel_steps()) < r.layout.n_steps for r in out), \
        "each run needs parallel and non-parallel steps for these tests to mean anything"
    return out


def test_frame_names_each_token(model, runs):
    sae = random_sae(model.cfg.d_model)
    frame = sae_latents(model, runs[0], sae)
    layout = runs[0].layout
    assert set(frame.prompt) == {runs[0].prompt_text}
    for row in frame.drop_duplicates("physical_index").itertuples():
        i = row.physical_index
        assert i == layout.physical_index(row.step, row.sibling)
        assert (row.logical_position, row.prob, row.parallel) == (layout.logical_positions[i], layout.probs[i], layout.is_parallel(i))
    generated = [layout.is_parallel(i) for i in range(layout.n_prompt, len(layout))]
    assert frame.attrs["n_tokens"] == {"parallel": sum(generated), "other": len(generated) - sum(generated)}


def test_sae_loaded_from_a_folder_reads_the_same_latents(model, runs, tmp_path):
    from sae_lens import SAE

    sae = random_sae(model.cfg.d_model, seed=3)
    sae.save_model(tmp_path / "sae")
    loaded = SAE.load_from_disk(tmp_path / "sae", device="cpu")
    assert loaded.cfg.metadata.hook_name == HOOK and torch.equal(loaded.W_enc, sae.W_enc)
    a, b = sae_latents(model, runs[1], sae), sae_latents(model, runs[1], loaded)
    assert len(a) > 0 and a.equals(b)
    model.add_sae(loaded, use_error_term=True)
    try:
        attached = sae_latents(model, runs[1], loaded)  # read at hook_sae_acts_post of the attached SAE
    finally:
        model.reset_saes()
    assert np.abs(attached.activation.to_numpy() - a.activation.to_numpy()).max() < 1e-4


def test_latent_table_against_the_generation_cache(model, runs):
    """The per-run means, recomputed by encoding the residuals recorded during generation (no replay)."""
    sae = random_sae(model.cfg.d_model, seed=1)
    frames = [sae_latents(model, r, sae) for r in runs]
    latent = int(frames[0].groupby("latent").activation.sum().idxmax())
    table = latent_table(frames, latent)
    for k, (run, row) in enumerate(zip(runs, table.itertuples())):
        layout = run.layout
        with torch.no_grad():
            acts = sae.encode(run.cache[HOOK])[:, latent]
        generated = range(layout.n_prompt, len(layout))
        par = [acts[i].item() for i in generated if layout.is_parallel(i)]
        other = [acts[i].item() for i in generated if not layout.is_parallel(i)]
        assert row.parallel == pytest.approx(np.mean(par), abs=1e-4)
        assert table["non-parallel"].iloc[k] == pytest.approx(np.mean(other), abs=1e-4)
        assert (row.n_parallel, row.n_non_parallel) == (len(par), len(other))
    fig = latent_figure(frames, latent, sae=sae)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.x[0] for b in bars] == ["parallel", "non-parallel"]
    assert bars[0].y[0] == pytest.approx(table.parallel.mean())
    assert bars[0].error_y.array is None  # three runs: too few for a bounded studentized interval, none is drawn
    fourth = frames[0].assign(run="isolated-3", activation=frames[0].activation * 1.5)  # a distinct fourth run
    four = [t for t in latent_figure([*frames, fourth], latent, sae=sae).data if t.type == "bar"]
    assert four[0].error_y.array is not None  # four runs: an interval
    assert not fig.layout.annotations  # this SAE names no Neuronpedia id


def test_neuronpedia_address_is_shown_as_text(model, runs):
    sae = random_sae(model.cfg.d_model, neuronpedia_id="tiny-llama/1-res-test")
    assert neuronpedia_url(sae, 7) == "https://neuronpedia.org/tiny-llama/1-res-test/7"
    assert neuronpedia_url(random_sae(model.cfg.d_model), 7) is None
    frames = [sae_latents(model, r, sae) for r in runs]
    fig = latent_figure(frames, 7, sae=sae)
    assert "https://neuronpedia.org/tiny-llama/1-res-test/7" in fig.layout.annotations[0].text
    lattice = sae_lattice(runs[0], frames[0], sae=sae)
    assert "https://neuronpedia.org/tiny-llama/1-res-test/" in "".join(lattice.data[0].hovertext)


def test_lattice_shows_each_tokens_top_latents(model, runs, tmp_path):
    sae = random_sae(model.cfg.d_model, seed=2)
    run = runs[2]
    frame = sae_latents(model, run, sae)
    fig = sae_lattice(run, frame, top=2, prompt_tokens=2)
    layout = run.layout
    shown = list(range(layout.n_prompt - 2, len(layout)))
    trace = fig.data[0]
    assert len(trace.x) == len(shown)
    assert list(trace.x) == [layout.logical_positions[i] for i in shown]
    assert list(trace.y) == [-layout.rank_of(i) if layout.steps[i] >= 0 else 0 for i in shown]
    best = top_latents(frame, 2)
    for label, i in zip(trace.text, shown):
        mine = best[best.physical_index == i]
        assert len(mine) == (min(2, int((frame.physical_index == i).sum())) if i >= layout.n_prompt else 0)
        for r in mine.itertuples():  # the strongest latents, strongest first
            assert f"#{r.latent} {r.activation:.2f}" in label
            assert r.activation == frame[frame.physical_index == i].activation.nlargest(2).iloc[r.rank]
    fig.write_html(tmp_path / "lattice.html")
    assert (tmp_path / "lattice.html").stat().st_size > 1000
