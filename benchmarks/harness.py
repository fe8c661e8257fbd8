"""The timing harness: variants measured side by side, paired ratios, and plain-text tables.

Every number the benchmark prints is a ratio of two variants measured in the same run: each variant
runs a short block of steps, the variants take turns (their order rotated every round, so neither
always runs first on a machine other jobs share), and the ratio is taken between medians of per-step
times. Nothing here is a timed assertion.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

PERF = time.perf_counter

Block = Callable[[int], list[float]]   # runs n timed steps, returns their durations in seconds
Samples = dict[str, list[list[float]]]  # variant -> one block of step times per round
Groups = list[Samples]                  # one Samples per group of variants measured side by side


def interleave(variants: dict[str, Block], groups: Sequence[Sequence[str]], rounds: int,
               block: int | dict[str, int] = 1, warmup: int | dict[str, int] = 1) -> Groups:
    """Measure groups of variants side by side: every round runs each group, each variant of it one block.

    A comparison is made inside one group, so the two variants it compares run back to back, seconds
    apart; the order of the groups and of the variants inside each group rotates every round, so no
    variant always runs first (or right after a heavier one). One untimed warm-up step per variant first.
    """
    sizes = block if isinstance(block, dict) else {name: block for name in variants}
    warm = warmup if isinstance(warmup, dict) else {name: warmup for name in variants}
    # One full collection, then freeze the (large, long-lived) heap of torch / transformers objects so the
    # collections that do happen during the blocks stay cheap and do not land on one variant by chance.
    gc.collect()
    gc.freeze()
    try:
        for name in variants:
            if warm.get(name, 1):
                variants[name](warm.get(name, 1))
        out: Groups = [{name: [] for name in group} for group in groups]
        for r in range(rounds):
            for g in rotated(list(range(len(groups))), r):
                for name in rotated(list(groups[g]), r):
                    gc.collect(0)
                    out[g][name].append(variants[name](sizes[name]))
    finally:
        gc.unfreeze()
    return out


def rotated(items: list, r: int) -> list:
    """``items`` rotated left by ``r`` (mod its length): round r's order."""
    r %= max(1, len(items))
    return items[r:] + items[:r]


def pooled_median(groups: Groups, name: str) -> float:
    """Median step time (seconds) of a variant over every group that measured it."""
    return statistics.median(t for g in groups if name in g for block in g[name] for t in block)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def ratio(groups: Groups, num: str, den: str) -> dict:
    """num / den inside the first group holding both.

    ``ratio``: median of the per-round paired ratios (each the ratio of the two variants' block medians
    in that round, measured seconds apart), robust to load that comes and goes on a shared machine.
    ``q1``-``q3``: quartiles of those paired ratios (min-max under 4 rounds). ``of_medians``: ratio of the
    two medians over all rounds; ``fastest``: ratio of the fastest steps (the least disturbed).
    """
    g = next(g for g in groups if num in g and den in g)
    paired = [statistics.median(a) / statistics.median(b) for a, b in zip(g[num], g[den])]
    num_all = [t for block in g[num] for t in block]
    den_all = [t for block in g[den] for t in block]
    q1, q3 = _quartiles(paired)
    return {
        "ratio": statistics.median(paired),
        "q1": q1,
        "q3": q3,
        "of_medians": statistics.median(num_all) / statistics.median(den_all),
        "fastest": min(num_all) / min(den_all),
        "num_ms": 1e3 * statistics.median(num_all),
        "den_ms": 1e3 * statistics.median(den_all),
        "rounds": len(paired),
    }


def median_interval(values: list[float], level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The median of ``values`` and a percentile-bootstrap interval of it (seeded, so a rerun prints the same)."""
    data = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).choice(data, size=(resamples, len(data)), replace=True)
    medians = np.median(draws, axis=1)
    tail = (1 - level) / 2
    return float(np.median(data)), float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail))


def fmt_ratio(r: dict) -> str:
    return f"{r['ratio']:.2f}x  [{r['q1']:.2f}-{r['q3']:.2f}; fastest {r['fastest']:.2f}x]"


def section_models(title: str, section: dict) -> tuple[list[str], list[dict]]:
    """A per-model section's opening lines (its title, then what was skipped) and the models it measured."""
    if "skipped" in section:
        return [title, f"skipped: {section['skipped']}"], []
    models = section["models"]
    return [title, *(f"{m['name']}: skipped, {m['skipped']}" for m in models if "skipped" in m)], [
        m for m in models if "skipped" not in m
    ]


def paths_label(paths: Sequence[str]) -> str:
    """The speed paths a section ran with, for its title."""
    return "fast paths on: " + "; ".join(paths) if paths else "fast paths off: stock TransformerBridge"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned plain-text table with a dashed rule under the headers."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def jsonable(obj: Any) -> Any:
    """``obj`` with tuples as lists, numpy scalars as Python numbers and non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
