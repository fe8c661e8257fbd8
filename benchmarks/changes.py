"""Section 9, what each per-step change gives: a TEMPO step with the defaults against the same step with one change undone.

Each row undoes one change inside the timed block and compares, paired per round (:mod:`benchmarks.harness`),
a TEMPO step (hooks on, fixed context, :mod:`benchmarks.steps`) at k = 1 and k = 4:

- ``calls``: components and hook points called through ``nn.Module.__call__`` again, as before lean dispatch
  learnt to call ``forward`` (or return a hook point's input) directly while no torch hook is attached;
- ``hook points``: only the hook points back on the stock call;
- ``one-row kernel``: one row on the stock kernel (the fixed rule before the load-time measurement) instead of
  the measured choice (no row where that is stock already);
- ``packing``: the stock kernels for every row count (``stock_linears``).

A ratio below 1 means the change makes the step faster (defaults / change undone).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .config import BenchConfig
from .harness import fmt_ratio, interleave, ratio, table
from .steps import FixedContext, tempo_step_block, with_context

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

KS = (1, 4)


@contextlib.contextmanager
def _stock_calls() -> Iterator[None]:
    from tempo_lens.backends.bridge import lean_dispatch

    present = lean_dispatch._torch_hooks_present
    lean_dispatch._torch_hooks_present = lambda module: True  # type: ignore[assignment]
    try:
        yield
    finally:
        lean_dispatch._torch_hooks_present = present  # type: ignore[assignment]


def _stock_hook_points(model: "TransformerBridge") -> Callable[[], Any]:
    from tempo_lens.backends.bridge import lean_dispatch

    @contextlib.contextmanager
    def undone() -> Iterator[None]:
        points = lean_dispatch.lean_hook_points(model)
        lean_dispatch.restore_dispatch(model, points)
        try:
            yield
        finally:
            for point in points:
                lean_dispatch._make_lean(point)

    return undone


def _one_row_stock(model: "TransformerBridge") -> Callable[[], Any]:
    from tempo_lens.backends.bridge.cpu_linears import installed_linears

    @contextlib.contextmanager
    def undone() -> Iterator[None]:
        forwards = [vars(m)["forward"] for m in installed_linears(model)]
        before = [f.one_row for f in forwards]
        for f in forwards:
            f.one_row = "stock"
        try:
            yield
        finally:
            for f, b in zip(forwards, before):
                f.one_row = b

    return undone


def bench_changes(model: "TransformerBridge", cfg: BenchConfig) -> dict:
    from tempo_lens.backends.bridge.cpu_linears import installed_linears, one_row_kernel, packed_min_rows, stock_linears

    ctx = FixedContext(model, cfg.context, cfg.mode, cfg.seed)
    rows_now, one_row = packed_min_rows(model), one_row_kernel(model)
    undo: dict[str, Callable[[], Any]] = {"calls": _stock_calls, "hook points": _stock_hook_points(model)}
    if one_row != "stock":
        undo["one-row kernel"] = _one_row_stock(model)
    if installed_linears(model):
        undo["packing"] = lambda: stock_linears(model)
    variants, groups = {}, []
    for k in KS:
        variants[f"default k={k}"] = tempo_step_block(ctx, k)
        for name, factory in undo.items():
            variants[f"{name} k={k}"] = with_context(factory, tempo_step_block(ctx, k))
        groups.append([f"default k={k}", *(f"{name} k={k}" for name in undo)])
    samples = interleave(variants, groups, cfg.rounds, 3)
    rows = [{"change": name, "k": k, "effect": ratio(samples, f"default k={k}", f"{name} k={k}")} for name in undo for k in KS]
    return {"context": cfg.context, "packed_from_rows": rows_now, "one_row": one_row, "rows": rows, "samples": samples}


def format_changes(ch: dict) -> list[str]:
    out = [f"\n[9] what each per-step change gives: TEMPO step (hooks on, context {ch['context']}) with the defaults / "
           f"with the change undone (< 1: the change helps); linears now packed from {ch['packed_from_rows'] or 'never'} rows, "
           f"one row {ch.get('one_row', 'stock')}"]
    out.append(table(["change undone", "k", "defaults / undone [quartiles; fastest]", "median step ms"],
                     [[r["change"], r["k"], fmt_ratio(r["effect"]), f"{r['effect']['num_ms']:.1f} / {r['effect']['den_ms']:.1f}"]
                      for r in ch["rows"]]))
    return out
