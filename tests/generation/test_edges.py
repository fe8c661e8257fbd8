"""TEMPO at the edges, against the HF eager oracle: past a sliding window, at a physical limit, on non-finite logits.

Every test runs on the bridge and on the HookedTransformer backend (the latter in ``.venv-tl3``). The
window rule (``docs/definitions.md``): a sliding layer's query at physical index i sees keys j with
``i - j < window``; the oracle passes HF one 4D float mask per layer type (``tests/helpers.py``).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tempo_lens.errors import InvalidInputError, NonFiniteLogitsError
from tempo_lens.generation import generate, generate_batch
from tempo_lens.hooks import attention_bias_hooks
from tempo_lens.layout import TokenLayout
from tempo_lens.replaying import replay
from tests.helpers import TOP3, hf_eager, hf_oracle_logits, max_step_delta, reference_mask, sliding_window_of

BACKENDS = ("bridge", "hooked")
WINDOW = 64  # tests/helpers.py's tiny Gemma 3


def _prompt(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [1] + [rng.randrange(3, 96) for _ in range(n - 1)]


@pytest.fixture(params=BACKENDS)
def tiny_models(request):
    """The tiny models of one backend (``tiny_bridges`` or ``tiny_hooked``; the latter skips outside TransformerLens 3)."""
    return request.getfixturevalue("tiny_bridges" if request.param == "bridge" else "tiny_hooked")


@pytest.fixture(scope="module")
def gemma_hf(tiny_dirs):
    return hf_eager(tiny_dirs["gemma3"])


def _assert_isolated_and_windowed(result, model) -> None:
    """Isolated siblings pay exactly 0 to each other on every captured layer; sliding layers 0 past the window."""
    from tempo_lens.backends import backend_for

    windows = backend_for(model).attention_windows()
    layout = result.layout
    for step in result.capture.step_ids:
        attention = result.capture[step]
        r = layout.step_range(step)
        assert attention.shape[-1] == r.stop, "the key axis is the whole physical sequence on every layer"
        for layer in attention.layers:
            a = attention[layer][0]  # [head, query, key]
            if result.config.mode == "isolated":
                siblings = a[:, :, r.start : r.stop]
                off_diagonal = ~np.eye(len(r), dtype=bool)
                assert (siblings[:, off_diagonal] == 0).all(), f"step {step}, layer {layer}: siblings see each other"
            if windows[layer] is not None:
                for row, query in enumerate(r):
                    assert (a[:, row, : max(0, query - windows[layer] + 1)] == 0).all()


# ---- the oracle itself -------------------------------------------------------------------------------


def test_the_oracle_windows_by_physical_distance(gemma_hf):
    """On a plain prompt (no TEMPO), the oracle's per-layer-type masks reproduce HF's own sliding forward."""
    assert sliding_window_of(gemma_hf) == WINDOW
    layout = TokenLayout.from_prompt(_prompt(90))
    with torch.no_grad():
        own = gemma_hf(torch.tensor([layout.token_ids])).logits[0]
        unwindowed = gemma_hf(torch.tensor([layout.token_ids]), attention_mask=reference_mask(layout, "visible")[None, None])
    assert (hf_oracle_logits(gemma_hf, layout, "visible") - own).abs().max().item() < 1e-5
    assert (unwindowed.logits[0] - own).abs().max().item() > 1e-2, "past the window the sliding mask must matter"


# ---- sliding windows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_generate_past_the_window_matches_the_oracle(tiny_models, gemma_hf, mode):
    model = tiny_models["gemma3"]
    result = generate(model, _prompt(90), max_steps=5, mode=mode, keep_logits=True, capture=True, **TOP3)
    assert result.layout.step_sizes() == [3] * 5
    oracle = hf_oracle_logits(gemma_hf, result.layout, mode)
    assert max_step_delta(result, oracle) < 1e-4
    _assert_isolated_and_windowed(result, model)
    assert (replay(model, result.layout, mask=mode).logits - oracle).abs().max().item() < 1e-4  # one full forward too


@pytest.mark.parametrize("lengths", [(90, 30, 70), (40, 35)], ids=["mixed", "one-lane"])
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_generate_batch_past_the_window_matches_the_oracle(tiny_models, gemma_hf, mode, lengths):
    """Mixed lengths, and two prompts that share a lane, where columns of the batch are farther apart than the row's tokens."""
    model = tiny_models["gemma3"]
    prompts = [_prompt(n, seed=i) for i, n in enumerate(lengths)]
    results = generate_batch(model, prompts, max_steps=5, mode=mode, keep_logits=True, capture=True, **TOP3)
    for result in results:
        assert max_step_delta(result, hf_oracle_logits(gemma_hf, result.layout, mode)) < 1e-4
        _assert_isolated_and_windowed(result, model)


def test_the_model_keeps_its_own_windows_afterwards(tiny_models, gemma_hf):
    """A TEMPO step switches the model's window masks off for itself only: afterwards a plain forward is bit-identical."""
    model = tiny_models["gemma3"]
    tokens = torch.tensor([_prompt(90)])
    with torch.no_grad():
        before = model(tokens)
        generate_batch(model, [_prompt(90), _prompt(40)], max_steps=2, **TOP3)
        after = model(tokens)
        own = gemma_hf(tokens).logits
    assert torch.equal(before, after)
    assert (after[0] - own[0]).abs().max().item() < 1e-4  # and it is the model's own sliding forward
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


def test_pruning_past_the_window_matches_the_oracle(tiny_models, gemma_hf):
    """Pruned siblings stay hidden from later steps on sliding and full layers alike (the oracle reads pruned_at)."""
    from tempo_lens.pruning import AttentionPruning

    result = generate(tiny_models["gemma3"], _prompt(80), max_steps=6, keep_logits=True, capture=True,
                      pruning=AttentionPruning(attention_threshold=2.0), **TOP3)
    assert any(p != -1 for p in result.layout.pruned_at), "the check needs a pruned token"
    assert max_step_delta(result, hf_oracle_logits(gemma_hf, result.layout, "isolated")) < 1e-4
    _assert_isolated_and_windowed(result, tiny_models["gemma3"])


# ---- physical limits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_48(tmp_path_factory):
    """A tiny GPT-2 with 48 learned positions."""
    from transformers import AutoModelForCausalLM

    from tests.helpers import _tokenizer, tiny_config

    directory = tmp_path_factory.mktemp("gpt2_48")
    torch.manual_seed(0)
    config = tiny_config("gpt2")
    config.n_positions = 48
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    _tokenizer().save_pretrained(directory)
    return directory


def _load(directory, backend: str):
    from tempo_lens import load_model

    if backend == "hooked":
        from tests.conftest import hooked_available

        if not hooked_available():
            pytest.skip("HookedTransformer needs TransformerLens 3.x; make test runs these tests in .venv-tl3")
    return load_model(str(directory), backend=backend, device="cpu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_learned_positions_refuse_a_physical_length_past_the_table(gpt2_48, backend):
    """20 tokens + 10 steps is within the 48 logical positions; 20 + 10 x 8 siblings is not."""
    model = _load(gpt2_48, backend)
    with pytest.raises(InvalidInputError, match=r"20 tokens.*= 100 tokens in the worst case.*limit of 48"):
        generate(model, _prompt(20), threshold=1e-5)
    with pytest.raises(InvalidInputError, match="limit of 48"):
        generate_batch(model, [_prompt(20), _prompt(5)], threshold=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_that_fit_alone_run_in_lanes_of_their_own(gpt2_48, backend):
    """Two 20-token prompts, 4 steps of 3: 32 tokens each fit 48 positions; one shared lane (64 columns) would not."""
    model = _load(gpt2_48, backend)
    hf = hf_eager(gpt2_48)
    prompts = [_prompt(20, seed=1), _prompt(20, seed=2)]
    for mode in ("isolated", "visible"):
        for result in generate_batch(model, prompts, max_steps=4, mode=mode, keep_logits=True, **TOP3):
            assert len(result.layout) == 32
            assert max_step_delta(result, hf_oracle_logits(hf, result.layout, mode)) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_worst_case_keeps_at_most_one_over_threshold_siblings(gpt2_48, backend):
    """Probabilities sum to 1, so a step keeps at most 1/threshold siblings: 40 + 8 greedy steps fit 48 positions."""
    model = _load(gpt2_48, backend)
    assert len(generate(model, _prompt(40), threshold=1.0, max_steps=8).layout) == 48
    with pytest.raises(InvalidInputError, match=r"up to 24 siblings in 8 steps.*= 64 tokens.*limit of 48"):
        generate(model, _prompt(40), threshold=0.3, max_steps=8)


def test_a_hooked_rotary_table_is_a_physical_limit(tiny_hooked):
    """TransformerLens grows a rotary table up to n_ctx (128) rows: 100 + 10 steps fit logically, 100 + 10 x 8 do not."""
    with pytest.raises(InvalidInputError, match=r"= 180 tokens in the worst case.*limit of 128"):
        generate(tiny_hooked["llama"], _prompt(100), threshold=1e-5)


def test_a_run_at_the_limit_still_runs(gpt2_48):
    model = _load(gpt2_48, "bridge")
    result = generate(model, _prompt(20), max_steps=4, threshold=1e-9, max_parallel=7, keep_logits=True)
    assert len(result.layout) == 48
    assert max_step_delta(result, hf_oracle_logits(hf_eager(gpt2_48), result.layout, "isolated")) < 1e-4


# ---- non-finite logits -------------------------------------------------------------------------------


def test_a_nan_bias_is_refused_before_any_forward(tiny_bridges):
    """The issue's example: ``attention_bias_hooks(..., bias=nan)`` gave NaN probabilities and a text of EOS tokens.

    It is refused where it is made (a hook that writes NaN could only be caught afterwards, and a HookedTransformer
    sets NaN attention weights to 0 itself); a forward that still turns non-finite stops generation (below).
    """
    model = tiny_bridges["llama"]
    for bias in (float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match="bias must be a finite number, or -inf"):
            attention_bias_hooks(model, lambda k: torch.arange(k) >= 6, bias=bias)


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_logits_name_their_step(tiny_models, value):
    """The residual poisoned from the third forward on (the prompt's, step 0's, then step 1's): the error names step 1."""
    model = tiny_models["llama"]
    forwards = []

    def poison(resid, hook=None):
        forwards.append(1)
        return resid + value if len(forwards) > 2 else resid

    with model.hooks(fwd_hooks=[(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", poison)]):
        with pytest.raises(NonFiniteLogitsError, match="step 1's forward gave non-finite logits"):
            generate(model, _prompt(6), max_steps=3, **TOP3)
        forwards.clear()
        with pytest.raises(NonFiniteLogitsError, match="step 1's forward"):
            generate_batch(model, [_prompt(6), _prompt(9, seed=1)], max_steps=3, **TOP3)
    assert generate(model, _prompt(6), max_steps=3, **TOP3).layout.n_steps == 3  # nothing left behind
