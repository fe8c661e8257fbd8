"""Which linear kernels pay on this machine, decided by a short measurement when the model loads.

Which kernel is fastest for a few rows depends on the CPU: on one machine oneDNN's prepacked weights make a
k-row product cost what one row does, on another they are slower than MKL's stock kernel at two rows; for
one row (a decode) a column-major (``[in, out]``) copy of the weight can beat both. :func:`calibrate_linears`
times the kernels on the model's first linears (64 MB of weights, more than a CPU cache holds) at 1, 2, 4 and
8 rows (rounds alternate, medians compared; about a second on the embedded model, once per process and layer
shapes) and :func:`plan_from_timings` turns that into a :class:`LinearPlan`: from how many rows the packed
forward runs, and which kernel serves one row
(:class:`~tempo_lens.backends.bridge.cpu_linears.PackedLinearForward`). ``make bench`` (section 1b) measures
every linear at the same row counts and reports whether the rule gives the same plan there.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .cpu_linears import OneRowKernel, pack_weight, packed_linear, weight_copies

CALIBRATION_ROWS = (1, 2, 4, 8)
PAYS_BELOW = 0.95  # a kernel pays when it takes at most this share of the stock time
ROUNDS = 5

Timings = dict[int, float]  # rows -> ms per pass over the sample


@dataclass
class LinearPlan:
    """The kernels chosen, and the times they were chosen from (ms per pass over the sample, per row count)."""

    min_rows: int | None  # the packed forward from this many rows (2 or more) on; None: never
    one_row: OneRowKernel = "stock"
    stock_ms: Timings = field(default_factory=dict)
    packed_ms: Timings = field(default_factory=dict)
    by_column_ms: Timings = field(default_factory=dict)

    @property
    def copies(self) -> int:
        """How many extra copies of the linear weights the plan keeps (packed, column-major)."""
        return weight_copies(self.min_rows, self.one_row)

    def describe(self) -> str:
        ratios = ", ".join(f"{r} row{'s' if r > 1 else ''} {self.packed_ms[r] / self.stock_ms[r]:.2f}x" for r in self.stock_ms)
        column = (
            f"; column-major / stock at 1 row {self.by_column_ms[1] / self.stock_ms[1]:.2f}x" if 1 in self.by_column_ms else ""
        )
        packed = "never" if self.min_rows is None else f"from {self.min_rows} row{'s' if self.min_rows > 1 else ''}"
        return f"packed / stock measured at load: {ratios}{column}; packed {packed}, one row {self.one_row}"


def plan_from_timings(
    stock_ms: Timings, packed_ms: Timings, by_column_ms: Timings | None = None, pays_below: float = PAYS_BELOW
) -> LinearPlan:
    """The rule: packed from 2 rows when packing pays over the several-row counts together (summed, so one
    noisy count cannot flip it); one row by the fastest kernel that pays against stock (packed only where
    packing also pays for several rows)."""
    several = [r for r in stock_ms if r > 1]
    packs = bool(several) and sum(packed_ms[r] for r in several) <= pays_below * sum(stock_ms[r] for r in several)
    plan = LinearPlan(min_rows=2 if packs else None, stock_ms=stock_ms, packed_ms=packed_ms, by_column_ms=by_column_ms or {})
    if 1 in stock_ms:
        one: dict[OneRowKernel, float] = {"stock": stock_ms[1] * pays_below}
        if packs:
            one["packed"] = packed_ms[1]
        if by_column_ms and 1 in by_column_ms:
            one["by_column"] = by_column_ms[1]
        plan.one_row = min(one, key=lambda kernel: one[kernel])
    return plan


def _over(product: Callable[[Tensor, Tensor], Tensor], inputs: list[Tensor], weights: list[Tensor]) -> Callable[[], None]:
    """One pass of ``product`` over every (input, weight) pair."""

    def run() -> None:
        for x, w in zip(inputs, weights):
            product(x, w)

    return run


def _time_into(run: Callable[[], object], rounds: list[float]) -> None:
    t0 = time.perf_counter()
    run()
    rounds.append(1e3 * (time.perf_counter() - t0))


def calibrate_linears(
    linears: Sequence[torch.nn.Linear], rows: Sequence[int] = CALIBRATION_ROWS, rounds: int = ROUNDS
) -> LinearPlan:
    """Time the stock, prepacked and (at one row) column-major products over ``linears`` (fp32 on CPU)."""
    weights = [m.weight.detach() for m in linears]
    maybe_packed = [pack_weight(w) for w in weights]
    packed = [p for p in maybe_packed if p is not None]
    if not weights or len(packed) < len(weights):
        return LinearPlan(min_rows=None)
    columns = [w.t().contiguous() for w in weights]
    times: dict[str, Timings] = {"stock": {}, "packed": {}, "by_column": {}}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for r in rows:
            inputs = [torch.randn(r, w.shape[1], generator=generator) for w in weights]
            kernels = {
                "stock": _over(torch.nn.functional.linear, inputs, weights),
                "packed": _over(packed_linear, inputs, packed),
            }
            if r == 1:
                kernels["by_column"] = _over(torch.matmul, inputs, columns)
            for run in kernels.values():
                run()  # warm each kernel
            samples: dict[str, list[float]] = {name: [] for name in kernels}
            for i in range(rounds):
                names = list(kernels)
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    _time_into(kernels[name], samples[name])
            for name, values in samples.items():
                times[name][r] = statistics.median(values)
    del columns
    return plan_from_timings(times["stock"], times["packed"], times["by_column"])
