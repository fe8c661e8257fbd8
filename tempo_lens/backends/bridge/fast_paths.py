"""The exact speed paths, on by default for every model :func:`tempo_lens.load_model` returns.

Three parity-tested paths change how a forward is computed, never what it computes (beyond the rounding
of the prepacked linears):

- lean dispatch (:mod:`tempo_lens.backends.bridge.lean_dispatch`): each block bridge reads its wrapped layer's signature
  once instead of on every call, and a component whose wrapped module is not offloaded by Accelerate is
  called without the (then empty) device-alignment context (bit-identical; any device and dtype);
- fast norms (:mod:`tempo_lens.backends.bridge.fast_norms`): a norm bridge skips the ``hook_scale`` / ``hook_normalized``
  statistics while nothing is attached to either hook point (bit-identical; any device and dtype);
- prepacked linears (:mod:`tempo_lens.backends.bridge.cpu_linears`): fp32 CPU linear layers run on oneDNN with
  prepacked weights, so a step with 2-8 siblings, or a batch, costs about what a one-token decode does per
  weight read, and one row (a decode) may run on a column-major copy of the weight (they round differently:
  logits within 1e-4 of the stock ones on the tiny test models, 1e-3 on the embedded model). Which of these
  pays depends on the CPU, so by default it is measured when the model loads
  (:mod:`tempo_lens.backends.bridge.linear_calibration`, once per process and layer shapes). Each kernel kept
  holds one more copy of the linear weights, so by default they are applied only where those copies take at
  most half of the free memory (the column-major copy goes first). ``fast=True`` applies them regardless of
  memory, and packs from 2 rows even where the measurement says it does not pay.

The one switch: ``load_model(..., fast=False)``, or the environment variable ``TEMPO_LENS_FAST=0``
(``tempo-lens --no-fast`` sets it), loads the stock TransformerBridge. :func:`stock_paths` sets them
aside inside a ``with`` block (for comparisons) and :func:`remove_fast_paths` undoes them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from ...io.memory import available_bytes
from ..base import ENV, fast_setting  # noqa: F401 - ENV: the switch's name, read here by tests and the CLI
from .cpu_linears import (
    install_prepacked_linears,
    installed_linears,
    linear_modules,
    one_row_kernel,
    packed_bytes,
    packed_min_rows,
    remove_prepacked_linears,
    sample_linears,
    stock_linears,
    weight_copies,
)
from .fast_norms import patched_norms, restore_norm_statistics, skip_unobserved_norm_statistics, stock_norms
from .lean_dispatch import lean_components, lean_dispatch, lean_hook_points, restore_dispatch, stock_dispatch
from .linear_calibration import LinearPlan, calibrate_linears

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger("tempo_lens")
PACKED_SHARE_OF_FREE = 0.5  # prepack by default only where the packed copy takes at most this share of free memory


def apply_fast_paths(model: TransformerBridge, fast: bool | None = None) -> list[str]:
    """Switch the exact speed paths on where they apply; returns a description of each path now on.

    ``fast`` is the switch (None: ``TEMPO_LENS_FAST``, else the default): False changes nothing, True also
    applies the prepacked linears where their copy takes more than half of the free memory.
    Calling it again repacks the linears (after editing weights through ``.data``).
    """
    setting = fast_setting(fast)
    if setting is False:
        return fast_paths_on(model)
    lean_dispatch(model)
    skip_unobserved_norm_statistics(model)
    params = next(model.original_model.parameters())
    one_copy = packed_bytes(linear_modules(model))
    budget = PACKED_SHARE_OF_FREE * available_bytes(params.device)
    if setting or one_copy <= budget:
        plan = linear_plan(model)
        min_rows, one_row = plan.min_rows, plan.one_row
        if setting and min_rows is None:
            min_rows = 2  # fast=True: packed from 2 rows whatever was measured
        if one_row == "by_column" and not setting and weight_copies(min_rows, one_row) * one_copy > budget:
            one_row = "stock"  # both copies do not fit: keep the packed one
        remove_prepacked_linears(model)
        if min_rows is not None or one_row != "stock":
            install_prepacked_linears(model, min_rows, one_row)
        log.info("fast paths: linears, %s", plan.describe())
    return fast_paths_on(model)


_PLANS: dict[tuple, LinearPlan] = {}


def linear_plan(model: TransformerBridge) -> LinearPlan:
    """The measured linear plan for this model's layer shapes (measured once per process and shapes)."""
    sample = sample_linears(model)
    key = (tuple(tuple(m.weight.shape) for m in sample), torch.get_num_threads())
    if key not in _PLANS:
        _PLANS[key] = calibrate_linears(sample)
    return _PLANS[key]


def fast_paths_on(model: TransformerBridge) -> list[str]:
    """What is on now, one line per path (empty: the stock bridge)."""
    on = []
    lean = lean_components(model)
    if lean:
        points = len(lean_hook_points(model))
        on.append(
            f"lean dispatch ({len(lean) - points} components skip per-call signature and device-alignment bookkeeping, "
            f"{points} hook points return their input directly while unhooked)"
        )
    norms = len(patched_norms(model))
    if norms:
        on.append(f"fast norms ({norms} norm bridges skip unobserved hook statistics)")
    linears = installed_linears(model)
    if linears:
        rows, one_row = packed_min_rows(model), one_row_kernel(model)
        packed = "never packed" if rows is None else f"packed from {rows} rows"
        copies = weight_copies(rows, one_row)
        on.append(
            f"prepacked linears ({len(linears)} fp32 CPU linears on oneDNN: {packed}, one row {one_row}; "
            f"+{copies * packed_bytes(linears) / 2**20:.0f} MB)"
        )
    return on


def remove_fast_paths(model: TransformerBridge) -> None:
    """Back to the stock TransformerBridge paths (the packed copies are freed)."""
    restore_dispatch(model)
    restore_norm_statistics(model)
    remove_prepacked_linears(model)


@contextlib.contextmanager
def stock_paths(model: TransformerBridge) -> Iterator[list[str]]:
    """Inside the block the model runs its stock paths; yields what was set aside (kept, not repacked)."""
    was_on = fast_paths_on(model)
    with stock_dispatch(model), stock_norms(model), stock_linears(model):
        yield was_on
