"""The load-time packing measurement: its rule on given timings, and a real measurement's shape."""

from __future__ import annotations

import pytest
import torch

from tempo_lens.backends.bridge.cpu_linears import pack_weight
from tempo_lens.backends.bridge.linear_calibration import CALIBRATION_ROWS, calibrate_packing, rows_from_timings

STOCK = {1: 10.0, 2: 20.0, 4: 22.0, 8: 30.0}


@pytest.mark.parametrize(
    ("packed", "expected"),
    [
        ({1: 11.0, 2: 11.0, 4: 12.0, 8: 15.0}, 2),  # several rows pay, one row does not
        ({1: 9.0, 2: 11.0, 4: 12.0, 8: 15.0}, 1),  # one row pays too
        ({1: 9.0, 2: 24.0, 4: 23.0, 8: 31.0}, None),  # several rows do not pay: not even one row is packed
        ({1: 11.0, 2: 25.0, 4: 12.0, 8: 15.0}, 2),  # one noisy count does not flip the sum
        ({1: 10.0, 2: 19.5, 4: 21.5, 8: 29.5}, None),  # within 5 %: not worth a second copy of the weights
    ],
)
def test_rule(packed, expected):
    assert rows_from_timings(STOCK, packed) == expected


def test_measurement_covers_every_row_count():
    layers = [torch.nn.Linear(64, 96), torch.nn.Linear(96, 64)]
    if pack_weight(layers[0].weight) is None:
        pytest.skip("oneDNN prepacked linears are not available in this torch build")
    plan = calibrate_packing(layers, rounds=3)
    assert set(plan.stock_ms) == set(plan.packed_ms) == set(CALIBRATION_ROWS)
    assert all(t > 0 for t in [*plan.stock_ms.values(), *plan.packed_ms.values()])
    assert plan.min_rows == rows_from_timings(plan.stock_ms, plan.packed_ms)
    assert "packed / stock measured at load" in plan.describe()


def test_nothing_to_pack_is_never():
    assert calibrate_packing([]).min_rows is None
