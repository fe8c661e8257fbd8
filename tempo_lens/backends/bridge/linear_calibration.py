"""Whether prepacked linears pay on this machine, decided by a short measurement when the model loads.

Which kernel is faster for a few rows depends on the CPU: on one machine oneDNN's prepacked weights make
a k-row product cost what one row does, on another they are slower than MKL's stock kernel at two rows.
:func:`calibrate_packing` times the stock ``F.linear`` and the prepacked product on the model's first
linears (64 MB of weights, more than a CPU cache holds) at 1, 2, 4 and 8 rows (rounds alternate, medians
compared; about a second on the embedded model, once per process and layer shapes) and
:func:`rows_from_timings` turns that into the row count from which the packed forward runs
(:class:`~tempo_lens.backends.bridge.cpu_linears.PackedLinearForward`): 2 where packing pays for several rows,
1 where it also pays for one, nowhere where it does not pay for several. ``make bench`` (section 1b) measures every linear at the same row
counts and reports whether it agrees.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .cpu_linears import pack_weight, packed_linear

CALIBRATION_ROWS = (1, 2, 4, 8)
PAYS_BELOW = 0.95  # packing pays at a row count when it takes at most this share of the stock time
ROUNDS = 5


@dataclass
class PackingPlan:
    """The measured stock and packed times (ms per pass over the sample) per row count, and the choice."""

    min_rows: int | None  # packed forward from this many rows on; None: never
    stock_ms: dict[int, float] = field(default_factory=dict)
    packed_ms: dict[int, float] = field(default_factory=dict)

    def describe(self) -> str:
        ratios = ", ".join(f"{r} row{'s' if r > 1 else ''} {self.packed_ms[r] / self.stock_ms[r]:.2f}x" for r in self.stock_ms)
        choice = "never" if self.min_rows is None else f"from {self.min_rows} row{'s' if self.min_rows > 1 else ''}"
        return f"packed / stock measured at load: {ratios}; packed {choice}"


def rows_from_timings(stock_ms: dict[int, float], packed_ms: dict[int, float], pays_below: float = PAYS_BELOW) -> int | None:
    """From how many rows to run packed: 2 when packing pays over the several-row counts together, 1 when it
    also pays at one row, None when it does not pay over several rows.

    Summing the several-row counts (a TEMPO step's 2-8 siblings) before comparing keeps one noisy
    measurement from flipping the choice.
    """
    several = [r for r in stock_ms if r > 1]
    if not several or sum(packed_ms[r] for r in several) > pays_below * sum(stock_ms[r] for r in several):
        return None
    return 1 if 1 in stock_ms and packed_ms[1] <= pays_below * stock_ms[1] else 2


def _time_into(run: Callable[[], object], rounds: list[float]) -> None:
    t0 = time.perf_counter()
    run()
    rounds.append(1e3 * (time.perf_counter() - t0))


def calibrate_packing(
    linears: Sequence[torch.nn.Linear], rows: Sequence[int] = CALIBRATION_ROWS, rounds: int = ROUNDS
) -> PackingPlan:
    """Time stock and prepacked products over ``linears`` (weights fp32 on CPU) at each row count."""
    weights = [m.weight.detach() for m in linears]
    maybe_packed = [pack_weight(w) for w in weights]
    packed = [p for p in maybe_packed if p is not None]
    if not weights or len(packed) < len(weights):
        return PackingPlan(min_rows=None)
    stock_ms: dict[int, float] = {}
    packed_ms: dict[int, float] = {}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for r in rows:
            inputs = [torch.randn(r, w.shape[1], generator=generator) for w in weights]

            def stock(inputs: list[Tensor] = inputs) -> None:
                for x, w in zip(inputs, weights):
                    torch.nn.functional.linear(x, w)

            def prepacked(inputs: list[Tensor] = inputs) -> None:
                for x, p in zip(inputs, packed):
                    packed_linear(x, p)

            stock()  # warm both kernels
            prepacked()
            times: dict[str, list[float]] = {"stock": [], "packed": []}
            for i in range(rounds):
                order = (("stock", stock), ("packed", prepacked)) if i % 2 == 0 else (("packed", prepacked), ("stock", stock))
                for name, run in order:
                    _time_into(run, times[name])
            stock_ms[r], packed_ms[r] = statistics.median(times["stock"]), statistics.median(times["packed"])
    return PackingPlan(min_rows=rows_from_timings(stock_ms, packed_ms), stock_ms=stock_ms, packed_ms=packed_ms)
