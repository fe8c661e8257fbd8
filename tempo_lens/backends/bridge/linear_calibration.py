"""Which linear kernels pay on this machine, decided once per machine by a short measurement, then cached.

Which kernel is fastest for a few rows depends on the CPU: on one machine oneDNN's prepacked weights make a
k-row product cost what one row does, on another they are slower than MKL's stock kernel at two rows; for
one row (a decode) a column-major (``[in, out]``) copy of the weight can beat both. :func:`calibrate_linears`
times the kernels on the model's first linears (64 MB of weights, more than a CPU cache holds) at 1, 2, 4 and
8 rows (rounds alternate; each kernel counts by its worst round against stock's in the same round, so a
kernel is chosen only where it pays in every round, and noise on a busy machine leaves the stock kernels; about
a second on the embedded model) and :func:`plan_from_timings` turns that into a :class:`LinearPlan`: from how many rows the packed forward runs, and which kernel serves one
row (:class:`~tempo_lens.backends.bridge.cpu_linears.PackedLinearForward`). Kernels round differently, and a
measurement on a busy machine can choose differently from one call to the next, so :func:`cached_plan` measures
once per key (CPU model, torch version and threads, dtype, layer shapes) and keeps the plan in a file beside the
converted models (``$TEMPO_LENS_CACHE/kernel_plans``): every later load on this machine runs the same kernels,
so a rerun is bit-identical, and the plan's key is recorded with every experiment. Delete the file to measure
again. ``make bench`` (section 1b) measures every linear at the same row counts and reports whether the rule
gives the same plan there; section 9 measures what each kernel is worth in a TEMPO step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..base import OneRowKernel
from .cpu_linears import pack_weight, packed_linear, weight_copies

log = logging.getLogger("tempo_lens")
CALIBRATION_ROWS = (1, 2, 4, 8)
PLAN_FORMAT = 1
PAYS_BELOW = 0.95  # a kernel pays when it takes at most this share of the stock time
ROUNDS = 5

Timings = dict[int, float]  # rows -> ms per pass over the sample


@dataclass
class LinearPlan:
    """The kernels chosen, and the times they were chosen from (ms per pass over the sample, per row count; a
    kernel other than stock by its worst round, as stock's median times its worst paired ratio)."""

    min_rows: int | None  # the packed forward from this many rows (2 or more) on; None: never
    one_row: OneRowKernel = "stock"
    stock_ms: Timings = field(default_factory=dict)
    packed_ms: Timings = field(default_factory=dict)
    by_column_ms: Timings = field(default_factory=dict)
    key: str | None = None  # digest of what the measurement depends on (:func:`plan_key`); None: not cached
    measured: str | None = None  # when (UTC)

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
        cached = f" (cached plan {self.key}, measured {self.measured})" if self.key else ""
        return f"packed / stock, worst round: {ratios}{column}; packed {packed}, one row {self.one_row}{cached}"


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
            stock = statistics.median(samples["stock"])
            times["stock"][r] = stock
            for name in kernels.keys() - {"stock"}:  # its worst round against stock's in that round
                times[name][r] = stock * max(a / b for a, b in zip(samples[name], samples["stock"]))
    del columns
    return plan_from_timings(times["stock"], times["packed"], times["by_column"])


# ---- one plan per machine ---------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``: name, family, model, stepping), or what ``platform`` knows."""
    wanted = ("model name", "cpu family", "model", "stepping")
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                if name.strip() in wanted:
                    info[name.strip()] = value.strip()
    except OSError:
        pass
    return " / ".join(info[k] for k in wanted if k in info) or platform.processor() or platform.machine()


def plan_key(linears: Sequence[torch.nn.Linear]) -> dict[str, Any]:
    """What a measured plan depends on: the CPU, torch and its threads, and the sampled weights' dtype and shapes."""
    return {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": str(linears[0].weight.dtype).removeprefix("torch.") if linears else None,
        "shapes": [list(m.weight.shape) for m in linears],
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _as_json(plan: LinearPlan, key: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": PLAN_FORMAT,
        "key": key,
        "min_rows": plan.min_rows,
        "one_row": plan.one_row,
        "measured": plan.measured,
        **{name: {str(r): ms for r, ms in getattr(plan, name).items()} for name in ("stock_ms", "packed_ms", "by_column_ms")},
    }


def _from_json(data: Any, key: dict[str, Any]) -> LinearPlan | None:
    """The stored plan, or None where the file is not a plan for ``key``."""
    try:
        if data["format"] != PLAN_FORMAT or data["key"] != key or data["one_row"] not in ("stock", "packed", "by_column"):
            return None
        min_rows = data["min_rows"]
        if min_rows is not None and (not isinstance(min_rows, int) or min_rows < 2):
            return None
        times = {name: {int(r): float(ms) for r, ms in data[name].items()} for name in ("stock_ms", "packed_ms", "by_column_ms")}
        return LinearPlan(min_rows, data["one_row"], key=_digest(key), measured=data.get("measured"), **times)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _read(path: Path, key: dict[str, Any]) -> LinearPlan | None:
    try:
        return _from_json(json.loads(path.read_text(encoding="utf-8")), key)
    except (OSError, ValueError):
        return None


def _store(path: Path, plan: LinearPlan, key: dict[str, Any]) -> LinearPlan:
    """Write ``plan`` unless another process stored one first (then that one is used, so both run the same)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(_as_json(plan, key), handle, indent=1)
        try:
            os.link(tmp, path)  # created only where no plan is stored yet
        except FileExistsError:
            existing = _read(path, key)
            if existing is not None:
                return existing
            os.replace(tmp, path)  # a damaged file: replaced
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return plan


def cached_plan(linears: Sequence[torch.nn.Linear], directory: Path) -> LinearPlan:
    """The plan for ``linears`` on this machine: read from ``directory``, or measured now and stored there.

    A directory that cannot be written leaves the plan measured for this load only (logged; its ``key`` is None).
    """
    key = plan_key(linears)
    path = directory / f"{_digest(key)}.json"
    stored = _read(path, key)
    if stored is not None:
        return stored
    plan = calibrate_linears(linears)
    plan.key, plan.measured = _digest(key), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        return _store(path, plan, key)
    except OSError as exc:
        log.warning("linear kernel plan not cached (%s): later loads measure again and may choose other kernels", exc)
        plan.key = None
        return plan
