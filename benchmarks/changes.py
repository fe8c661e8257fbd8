"""Section 9, what each speed path is worth here: an interleaved A/B of a TEMPO step with and without it.

Every variant runs the same TEMPO step (hooks on, fixed context, :mod:`benchmarks.steps`) at k = 1 (a decode)
and k = 4, starting from the stock TransformerBridge (``stock_paths``) and switching on exactly one more path
than the variant it is compared with. All variants of one k run in every round, one block each, in an order
rotated every round (:mod:`benchmarks.harness`); a ratio is the median of the per-round paired ratios, with a
bootstrap 95 % interval of that median, for wall time (what a user waits) and for the process's CPU time (all
threads; on a machine other jobs load, the work a path saves shows there when wall time is noise). The linear
kernels are forced whatever the cached plan chose, so each kernel's worth is measured on every CPU:

- ``fast norms``: norm statistics skipped while no hook observes them / stock;
- ``packed linears``: oneDNN prepacked weights from 2 rows (one row stock) / fast norms alone;
- ``one row by column``: one row on a column-major weight copy (more rows stock) / fast norms alone;
- ``one row packed``: one row on the packed copy too / packed from 2 rows;
- ``defaults``: what ``load_model`` switched on here / stock.

A path is worth keeping on this CPU where the ratio is at most 0.95 (at least 5 % off a step) and its interval
lies below 1; it is not where the interval lies above 0.95; otherwise this run cannot tell (rerun on a quiet machine).

    python -m benchmarks --only 9 [--json PATH]
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .config import BenchConfig
from .harness import Block, interleave, median_interval, table
from .machine import machine_info
from .steps import FixedContext, tempo_step_block, with_context

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

KS = (1, 4)
BLOCK = 3
PAYS_AT = 0.95
# kernel plans forced by the variants: (packed from how many rows or None, the one-row kernel)
PLANS: dict[str, tuple[int | None, str]] = {"packed": (2, "stock"), "by_column": (None, "by_column"), "packed_1": (2, "packed")}
# (path, variant with it, variant without it, the k values where the path can act)
COMPARISONS = (
    ("fast norms", "norms", "stock", KS),
    ("packed linears (2+ rows)", "packed", "norms", KS),
    ("one row by column", "by_column", "norms", KS),
    ("one row packed", "packed_1", "packed", KS),
    ("defaults (as loaded)", "defaults", "stock", KS),
)


def _forced_forwards(model: TransformerBridge) -> dict[str, list[tuple[Any, Any]]]:
    """(linear, forward) pairs per forced plan, built once; one packed copy of the weights shared by the plans."""
    from tempo_lens.backends.bridge.cpu_linears import PackedLinearForward, PrepackedLinears

    prepacked = PrepackedLinears(model)
    if not prepacked.available:
        return {}
    return {
        name: [
            (
                module,
                PackedLinearForward(module, packed if min_rows is not None or one_row == "packed" else None, min_rows, one_row),
            )  # type: ignore[arg-type]
            for module, packed in zip(prepacked.modules, prepacked.packed)
        ]
        for name, (min_rows, one_row) in PLANS.items()
    }


def _variant(model: TransformerBridge, norms: bool, forwards: list[tuple[Any, Any]] | None) -> Callable[[], Any]:
    from tempo_lens.backends.bridge.fast_norms import fast_norms
    from tempo_lens.backends.bridge.fast_paths import stock_paths

    @contextlib.contextmanager
    def on() -> Iterator[None]:
        with stock_paths(model), fast_norms(model) if norms else contextlib.nullcontext():
            for module, forward in forwards or []:
                vars(module)["forward"] = forward
            try:
                yield
            finally:
                for module, _ in forwards or []:
                    vars(module).pop("forward", None)

    return on


def _cpu_timed(block: Block, into: list[float]) -> Block:
    """``block``, also appending the process CPU time per step of each call to ``into`` (all threads; the rollback
    outside the timed steps is the same for every variant)."""

    def run(n: int) -> list[float]:
        t0 = time.process_time()
        times = block(n)
        into.append((time.process_time() - t0) / n)
        return times

    return run


def verdict(median: float, low: float, high: float) -> str:
    """``yes`` (at least 5 % off, the interval below 1), ``no`` (the interval above 0.95) or ``unclear``."""
    if median <= PAYS_AT and high < 1:
        return "yes"
    return "no" if low > PAYS_AT else "unclear"


def bench_changes(model: TransformerBridge, cfg: BenchConfig) -> dict:
    from tempo_lens.backends.bridge.fast_paths import fast_paths_on

    info = machine_info()
    print(
        f"[9] CPU: {info['cpu']}; torch {info['torch']} ({info['torch_threads']} threads); load average {info['loadavg_start']}",
        flush=True,
    )
    ctx = FixedContext(model, cfg.context, cfg.mode, cfg.seed)
    forced = _forced_forwards(model)
    contexts: dict[str, Callable[[], Any] | None] = {
        "defaults": None,
        "stock": _variant(model, False, None),
        "norms": _variant(model, True, None),
        **{name: _variant(model, True, forwards) for name, forwards in forced.items()},
    }
    variants, groups = {}, []
    cpu: dict[str, list[float]] = {}  # process CPU seconds per step, one value per block (the warm-up first)
    for k in KS:
        for name, factory in contexts.items():
            block = tempo_step_block(ctx, k)
            cpu[f"{name} k={k}"] = []
            variants[f"{name} k={k}"] = _cpu_timed(
                block if factory is None else with_context(factory, block), cpu[f"{name} k={k}"]
            )
        groups.append([f"{name} k={k}" for name in contexts])
    rounds = cfg.path_rounds
    samples = interleave(variants, groups, rounds, BLOCK)
    rows = []
    for path, with_it, without, ks in COMPARISONS:
        for k in ks:
            if with_it not in contexts or without not in contexts:
                continue
            g = next(g for g in samples if f"{with_it} k={k}" in g)
            paired = [statistics.median(a) / statistics.median(b) for a, b in zip(g[f"{with_it} k={k}"], g[f"{without} k={k}"])]
            median, low, high = median_interval(paired)
            cpu_paired = [a / b for a, b in zip(cpu[f"{with_it} k={k}"][1:], cpu[f"{without} k={k}"][1:])]
            cpu_median, cpu_low, cpu_high = median_interval(cpu_paired)
            rows.append(
                {
                    "path": path,
                    "k": k,
                    "ratio": median,
                    "ci95": [low, high],
                    "rounds": len(paired),
                    "with_ms": 1e3 * statistics.median(t for b in g[f"{with_it} k={k}"] for t in b),
                    "without_ms": 1e3 * statistics.median(t for b in g[f"{without} k={k}"] for t in b),
                    "pays": verdict(median, low, high),
                    "cpu_ratio": cpu_median,
                    "cpu_ci95": [cpu_low, cpu_high],
                    "cpu_pays": verdict(cpu_median, cpu_low, cpu_high),
                }
            )
    return {
        "context": cfg.context,
        "cpu": info["cpu"],
        "torch": info["torch"],
        "loadavg_start": info["loadavg_start"],
        "defaults": fast_paths_on(model),
        "rounds": rounds,
        "block": BLOCK,
        "rows": rows,
        "samples": samples,
    }


def format_changes(ch: dict) -> list[str]:
    out = [
        f"\n[9] what each speed path is worth on {ch.get('cpu', 'this CPU')}: TEMPO step (hooks on, context {ch['context']}) "
        f"with the path / without it, {ch.get('rounds', '?')} interleaved rounds of {ch.get('block', '?')} steps "
        f"(< 1: the path helps; '>= 5 %' is yes where the median is <= {PAYS_AT} and the interval below 1); "
        f"load average at start {ch.get('loadavg_start')}; "
        f"defaults here: {'; '.join(ch.get('defaults') or []) or 'stock'}"
    ]
    if "rows" in ch and ch["rows"] and "ci95" in ch["rows"][0]:
        out.append(
            table(
                [
                    "path",
                    "k",
                    "wall: with / without [95% CI]",
                    ">= 5 %",
                    "CPU time: with / without [95% CI]",
                    ">= 5 %",
                    "median step ms",
                ],
                [
                    [
                        r["path"],
                        r["k"],
                        f"{r['ratio']:.3f}x [{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}]",
                        r["pays"],
                        f"{r['cpu_ratio']:.3f}x [{r['cpu_ci95'][0]:.3f}-{r['cpu_ci95'][1]:.3f}]",
                        r["cpu_pays"],
                        f"{r['with_ms']:.1f} / {r['without_ms']:.1f}",
                    ]
                    for r in ch["rows"]
                ],
            )
        )
    return out
