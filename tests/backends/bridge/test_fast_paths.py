"""The fast paths are on by default, one switch turns them off, and they change no result beyond float noise.

The oracle is the same model on the stock TransformerBridge paths (``fast=False`` or ``stock_paths``),
itself checked against HF eager in tests/test_generation.py and tests/models/test_loading.py.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

from tempo_lens import load_model
from tempo_lens.errors import InvalidInputError
from tempo_lens.backends.bridge import fast_paths
from tempo_lens.backends.bridge.fast_paths import ENV, apply_fast_paths, fast_paths_on, remove_fast_paths, stock_paths
from tempo_lens.backends.bridge.linear_calibration import LinearPlan
from tempo_lens.generation import generate, generate_batch
from tempo_lens.pruning import AttentionPruning
from tests.generation.test_batch import PROMPTS, assert_rows_equal

NORM_HOOKS = ("ln_final.hook_scale", "blocks.1.ln1.hook_normalized", "blocks.0.ln2.hook_scale")


@pytest.fixture(scope="module")
def fast_llama(tiny_dirs):
    """The tiny Llama with every fast path on, whatever TEMPO_LENS_FAST says."""
    model = load_model(str(tiny_dirs["llama"]), device="cpu", fast=True)
    assert _kinds(model) == {"fast norms", "prepacked linears"}
    return model


def _kinds(model) -> set[str]:
    return {line.split(" (")[0] for line in fast_paths_on(model)}


@pytest.fixture
def packing_pays(monkeypatch):
    """The load-time measurement replaced by a plan that packs from 2 rows (what it finds on most CPUs)."""
    monkeypatch.setattr(fast_paths, "linear_plan", lambda model: LinearPlan(min_rows=2))


def test_on_by_default_and_one_switch_turns_them_off(tiny_dirs, monkeypatch, packing_pays):
    path = str(tiny_dirs["llama"])
    monkeypatch.delenv(ENV, raising=False)
    assert _kinds(load_model(path, device="cpu")) == {"fast norms", "prepacked linears"}
    assert fast_paths_on(load_model(path, device="cpu", fast=False)) == []
    monkeypatch.setenv(ENV, "0")
    assert fast_paths_on(load_model(path, device="cpu")) == []
    assert _kinds(load_model(path, device="cpu", fast=True)) == {"fast norms", "prepacked linears"}  # the argument wins
    monkeypatch.setenv(ENV, "maybe")
    with pytest.raises(InvalidInputError, match=ENV):
        load_model(path, device="cpu")


@pytest.mark.parametrize(("min_rows", "one_row"), [(None, "stock"), (2, "stock"), (2, "packed"), (None, "by_column")])
def test_the_measured_plan_decides_by_default(tiny_dirs, monkeypatch, min_rows, one_row):
    """The measured kernels are installed; nothing where nothing pays, unless fast=True asks for packing."""
    from tempo_lens.backends.bridge.cpu_linears import linear_modules, one_row_kernel, packed_min_rows

    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(fast_paths, "linear_plan", lambda model: LinearPlan(min_rows=min_rows, one_row=one_row))
    model = load_model(str(tiny_dirs["llama"]), device="cpu")
    assert (packed_min_rows(model), one_row_kernel(model)) == (min_rows, one_row)
    assert ("prepacked linears" in _kinds(model)) == (min_rows is not None or one_row != "stock")
    module = linear_modules(model)[0]
    x = torch.randn(1, module.in_features)
    with torch.no_grad():
        one_row_stock = torch.equal(module(x), torch.nn.functional.linear(x, module.weight, module.bias))
    assert one_row_stock or one_row != "stock"
    apply_fast_paths(model, fast=True)
    assert packed_min_rows(model) == (min_rows or 2)


def test_prepacking_is_skipped_where_its_copy_does_not_fit(tiny_dirs, monkeypatch, packing_pays):
    import tempo_lens.backends.bridge.fast_paths as fast_paths

    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(fast_paths, "available_bytes", lambda device: 1000)
    model = load_model(str(tiny_dirs["llama"]), device="cpu")
    assert _kinds(model) == {"fast norms"}
    assert apply_fast_paths(model, fast=True) == fast_paths_on(model) and _kinds(model) == {"fast norms", "prepacked linears"}
    remove_fast_paths(model)
    assert fast_paths_on(model) == []


@pytest.mark.parametrize("mode", ["isolated", "visible"])
@pytest.mark.parametrize("settings", [
    dict(threshold=1e-6, max_parallel=3),
    dict(threshold=0.02, max_parallel=8),
    dict(threshold=1e-6, max_parallel=3, pruning=AttentionPruning(1.0)),
], ids=["k3", "mixed", "attention-pruning"])
def test_batches_equal_the_stock_paths(fast_llama, mode, settings):
    """generate_batch (B = 4) with the default paths against the stock paths: tokens, logits, captures."""
    kwargs = dict(max_steps=5, mode=mode, capture=True, keep_logits=True, **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the max_parallel cap warns
        fast = generate_batch(fast_llama, PROMPTS, **kwargs)
        with stock_paths(fast_llama) as was_on:
            assert was_on and fast_paths_on(fast_llama) == []
            stock = generate_batch(fast_llama, PROMPTS, **kwargs)
    assert fast_paths_on(fast_llama) == was_on
    assert all(r.capture is not None and len(r.capture.step_ids) == r.layout.n_steps for r in fast)
    assert_rows_equal(stock, fast, logit_tol=1e-4)


def _record(names):
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def hook(x, hook):
        seen[hook.name].append(x.detach().clone())

    return seen, [(name, hook) for name in names]


def test_norm_hooks_fire_with_the_default_paths(fast_llama):
    """A user's hooks on the norms fire in every forward of a batch and see the stock values."""
    results = {}
    for label in ("fast", "stock"):
        seen, hooks = _record(NORM_HOOKS)
        paths = stock_paths(fast_llama) if label == "stock" else contextlib.nullcontext()
        with paths, fast_llama.hooks(fwd_hooks=hooks):
            out = generate_batch(fast_llama, PROMPTS, threshold=1e-6, max_parallel=3, max_steps=3, keep_logits=True)
        results[label] = (seen, out)
    (fast_seen, fast_out), (stock_seen, stock_out) = results["fast"], results["stock"]
    assert_rows_equal(stock_out, fast_out, logit_tol=1e-4)
    for name in NORM_HOOKS:
        assert len(fast_seen[name]) == 1 + 3  # the prompt's forward and one per step
        for a, b in zip(fast_seen[name], stock_seen[name]):
            assert a.shape == b.shape and (a - b).abs().max().item() < 1e-5


def test_norm_hook_edits_take_effect(fast_llama):
    def zero(x, hook):
        return torch.zeros_like(x)

    tokens = torch.tensor([PROMPTS[0]])
    with torch.no_grad():
        plain = fast_llama(tokens)
        edited = fast_llama.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_normalized", zero)])
        with stock_paths(fast_llama):
            stock_edited = fast_llama.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_normalized", zero)])
    assert not torch.allclose(plain, edited) and (edited - stock_edited).abs().max().item() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["isolated", "visible"])
def test_embedded_model_batches_equal_the_stock_paths(embedded_model, mode):
    prompts = ["The cat sat on the", "Water boils at", "The capital of France is the city of"]
    kwargs = dict(threshold=0.05, max_steps=5, mode=mode, capture=True, keep_logits=True)
    fast = generate_batch(embedded_model, prompts, **kwargs)
    with stock_paths(embedded_model):
        stock = generate_batch(embedded_model, prompts, **kwargs)
    assert any(max(r.layout.step_sizes()) >= 2 for r in fast), "the check needs a parallel step"
    # rounding differences grow through 30 layers: the embedded model's bounds are 10x the tiny models'
    assert_rows_equal(stock, fast, logit_tol=1e-3, attention_tol=1e-4)
    single = generate(embedded_model, prompts[0], **kwargs)
    assert_rows_equal([single], fast[:1], logit_tol=1e-3, attention_tol=1e-4)
