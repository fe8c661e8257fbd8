"""The load-time linear measurement: its rule on given timings, and a real measurement's shape."""

from __future__ import annotations

import pytest
import torch

from tempo_lens.backends.bridge.cpu_linears import pack_weight
from tempo_lens.backends.bridge.linear_calibration import CALIBRATION_ROWS, calibrate_linears, plan_from_timings

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
    assert "packed / stock measured at load" in plan.describe()


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
