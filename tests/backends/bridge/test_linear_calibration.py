"""The load-time linear measurement: its rule on given timings, and a real measurement's shape."""

from __future__ import annotations

import pytest
import torch

from tempo_lens.backends.bridge.cpu_linears import pack_weight
from tempo_lens.backends.bridge.linear_calibration import CALIBRATION_ROWS, LinearPlan, calibrate_linears, plan_from_timings

STOCK = {1: 10.0, 2: 20.0, 4: 22.0, 8: 30.0}


@pytest.mark.parametrize(
    ("packed", "by_column", "min_rows", "one_row"),
    [
        ({1: 11.0, 2: 11.0, 4: 12.0, 8: 15.0}, 10.0, 2, "stock"),  # several rows pay, one row does not
        ({1: 9.0, 2: 11.0, 4: 12.0, 8: 15.0}, 10.0, 2, "packed"),  # one row pays too
        ({1: 9.0, 2: 11.0, 4: 12.0, 8: 15.0}, 8.0, 2, "by_column"),  # the column-major copy is faster still
        ({1: 9.0, 2: 24.0, 4: 23.0, 8: 31.0}, 10.0, None, "stock"),  # several rows do not pay: one row is not packed either
        ({1: 9.0, 2: 24.0, 4: 23.0, 8: 31.0}, 8.0, None, "by_column"),  # a column copy can pay where packing does not
        ({1: 11.0, 2: 25.0, 4: 12.0, 8: 15.0}, 10.0, 2, "stock"),  # one noisy count does not flip the sum
        ({1: 10.0, 2: 19.5, 4: 21.5, 8: 29.5}, 9.8, None, "stock"),  # within 5 %: not worth a copy of the weights
    ],
)
def test_rule(packed, by_column, min_rows, one_row):
    plan = plan_from_timings(STOCK, packed, {1: by_column})
    assert (plan.min_rows, plan.one_row) == (min_rows, one_row)
    assert plan.copies == int(min_rows is not None or one_row == "packed") + int(one_row == "by_column")


def test_measurement_covers_every_row_count():
    layers = [torch.nn.Linear(64, 96), torch.nn.Linear(96, 64)]
    if pack_weight(layers[0].weight) is None:
        pytest.skip("oneDNN prepacked linears are not available in this torch build")
    plan = calibrate_linears(layers, rounds=3)
    assert set(plan.stock_ms) == set(plan.packed_ms) == set(CALIBRATION_ROWS) and set(plan.by_column_ms) == {1}
    assert all(t > 0 for t in [*plan.stock_ms.values(), *plan.packed_ms.values(), *plan.by_column_ms.values()])
    again = plan_from_timings(plan.stock_ms, plan.packed_ms, plan.by_column_ms)
    assert (plan.min_rows, plan.one_row) == (again.min_rows, again.one_row)
    assert "packed / stock, worst round" in plan.describe()


def test_nothing_to_pack_is_never():
    plan = calibrate_linears([])
    assert plan.min_rows is None and plan.one_row == "stock" and plan.copies == 0


@pytest.mark.parametrize("one_row", ["stock", "packed", "by_column"])
def test_each_one_row_kernel_matches_stock(one_row):
    from tempo_lens.backends.bridge.cpu_linears import PackedLinearForward

    layer = torch.nn.Linear(48, 80)
    if pack_weight(layer.weight) is None:
        pytest.skip("oneDNN prepacked linears are not available in this torch build")
    forward = PackedLinearForward(layer, pack_weight(layer.weight.detach()), 2, one_row)
    with torch.no_grad():
        for shape in ((1, 48), (1, 1, 48), (3, 48), (2, 4, 48)):
            x = torch.randn(*shape)
            out = forward(x)
            stock = torch.nn.functional.linear(x, layer.weight, layer.bias)
            assert out.shape == stock.shape and (out - stock).abs().max().item() < 1e-5
            if one_row == "stock" and x.numel() == 48:
                assert torch.equal(out, stock)  # one row on the stock kernel keeps its bits
        layer.weight.mul_(2.0)  # an edit in place remakes the copies
        x = torch.randn(1, 48)
        assert (forward(x) - torch.nn.functional.linear(x, layer.weight, layer.bias)).abs().max().item() < 1e-5


# ---- one plan per machine -----------------------------------------------------------------------


@pytest.fixture
def noisy_measurement(monkeypatch, tmp_path):
    """A measurement that chooses other kernels on every call (as on a busy machine), in a fresh cache; returns its log."""
    from tempo_lens.backends.bridge import fast_paths, linear_calibration

    monkeypatch.setenv("TEMPO_LENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TEMPO_LENS_FAST", raising=False)
    plans = [LinearPlan(min_rows=2, one_row="by_column"), LinearPlan(min_rows=None, one_row="stock")]
    calls: list[LinearPlan] = []

    def measure(linears, *args, **kwargs):
        calls.append(plans[len(calls) % 2])
        return LinearPlan(calls[-1].min_rows, calls[-1].one_row)

    monkeypatch.setattr(linear_calibration, "calibrate_linears", measure)
    monkeypatch.setattr(fast_paths, "calibrate_linears", measure, raising=False)
    return calls


def _fresh_process_load(path: str):
    """``load_model`` as in a new process: nothing measured in this one is reused."""
    from tempo_lens import load_model
    from tempo_lens.backends.bridge import fast_paths

    getattr(fast_paths, "_PLANS", {}).clear()
    return load_model(path, device="cpu")


def test_two_loads_run_the_same_kernels_and_give_bit_identical_logits(tiny_dirs, noisy_measurement):
    from tempo_lens.backends.bridge.cpu_linears import one_row_kernel, packed_min_rows
    from tempo_lens.generation import generate

    if pack_weight(torch.nn.Linear(4, 4).weight) is None:
        pytest.skip("oneDNN prepacked linears are not available in this torch build")
    results = []
    for _ in range(2):
        model = _fresh_process_load(str(tiny_dirs["llama"]))
        assert (packed_min_rows(model), one_row_kernel(model)) == (2, "by_column")  # the first measurement, kept
        results.append(generate(model, [1, 17, 42, 5, 63, 8], threshold=1e-6, max_parallel=3, max_steps=4, keep_logits=True))
    assert len(noisy_measurement) == 1
    first, second = results
    assert first.layout.token_ids == second.layout.token_ids
    assert all(torch.equal(a, b) for a, b in zip(first.step_logits, second.step_logits))


def test_the_cached_plan_is_keyed_by_machine_and_shapes(tmp_path, monkeypatch):
    from tempo_lens.backends.bridge import linear_calibration
    from tempo_lens.backends.bridge.linear_calibration import cached_plan, plan_key

    measured: list[int] = []
    monkeypatch.setattr(linear_calibration, "calibrate_linears", lambda linears: measured.append(1) or LinearPlan(min_rows=2))
    small, large = [torch.nn.Linear(8, 16)], [torch.nn.Linear(16, 8)]
    first = cached_plan(small, tmp_path)
    assert (cached_plan(small, tmp_path).key, len(measured)) == (first.key, 1)
    assert cached_plan(large, tmp_path).key != first.key and len(measured) == 2  # other shapes: measured again
    assert set(plan_key(small)) == {"cpu", "torch", "threads", "dtype", "shapes"}
    monkeypatch.setattr(linear_calibration, "cpu_name", lambda: "another CPU")
    assert cached_plan(small, tmp_path).key != first.key and len(measured) == 3
    (tmp_path / f"{first.key}.json").write_text("{not json")  # a damaged file is measured again and replaced
    monkeypatch.undo()
    monkeypatch.setattr(linear_calibration, "calibrate_linears", lambda linears: measured.append(1) or LinearPlan(min_rows=None))
    again = cached_plan(small, tmp_path)
    assert again.key == first.key and again.min_rows is None and cached_plan(small, tmp_path).min_rows is None


def test_an_unwritable_cache_measures_for_this_load_only(tmp_path, monkeypatch):
    from tempo_lens.backends.bridge import linear_calibration
    from tempo_lens.backends.bridge.linear_calibration import cached_plan

    monkeypatch.setattr(linear_calibration, "calibrate_linears", lambda linears: LinearPlan(min_rows=2))
    blocker = tmp_path / "file"
    blocker.write_text("")
    plan = cached_plan([torch.nn.Linear(8, 16)], blocker / "plans")
    assert plan.min_rows == 2 and plan.key is None


@pytest.mark.parametrize(("packed_rounds", "packs"), [([5.0] * 5, True), ([5.0, 5.0, 5.0, 12.0, 5.0], False)])
def test_a_kernel_is_chosen_only_where_it_pays_in_every_round(monkeypatch, packed_rounds, packs):
    """One noisy round (a busy machine) leaves the stock kernels, so a cached plan is not a lucky draw."""
    from tempo_lens.backends.bridge import linear_calibration as calibration

    kernels = {torch.nn.functional.linear: "stock", calibration.packed_linear: "packed", torch.matmul: "by_column"}
    scripted = {"stock": [10.0] * 5, "packed": packed_rounds, "by_column": [20.0] * 5}

    class Kernel:
        def __init__(self, product, inputs, weights):
            self.name = kernels[product]

        def __call__(self) -> None:
            pass

    monkeypatch.setattr(calibration, "_over", Kernel)
    monkeypatch.setattr(calibration, "_time_into", lambda run, rounds: rounds.append(scripted[run.name][len(rounds)]))
    layers = [torch.nn.Linear(8, 8)]
    if pack_weight(layers[0].weight) is None:
        pytest.skip("oneDNN prepacked linears are not available in this torch build")
    plan = calibration.calibrate_linears(layers, rounds=5)
    assert (plan.min_rows == 2) == packs and plan.one_row == ("packed" if packs else "stock")
