"""The exact speed paths, on by default for every model :func:`tempo_lens.load_model` returns.

Two parity-tested paths change how a forward is computed, never what any hook sees:

- fast norms (:mod:`tempo_lens.backends.bridge.fast_norms`): a norm bridge skips the ``hook_scale`` / ``hook_normalized``
  statistics while nothing observes either hook point (:func:`~tempo_lens.backends.observed.has_hooks`, asked on
  every forward; bit-identical; any device and dtype);
- prepacked linears (:mod:`tempo_lens.backends.bridge.cpu_linears`): fp32 CPU linear layers run on oneDNN with
  prepacked weights, so a step with 2-8 siblings, or a batch, costs about what a one-token decode does per
  weight read, and one row (a decode) may run on a column-major copy of the weight (they round differently:
  logits within 1e-4 of the stock ones on the tiny test models, 1e-3 on the embedded model). The kernels
  replace ``nn.Linear.forward`` only, so every hook on a linear still fires. Which kernels pay depends on the
  CPU: they are measured once per machine and cached (:mod:`tempo_lens.backends.bridge.linear_calibration`), so
  every load on one machine runs the same kernels. Each kernel kept holds one more copy of the linear
  weights, so by default they are applied only where those copies take at most half of the free memory (the
  column-major copy goes first). ``fast=True`` applies them regardless of memory, and packs from 2 rows even
  where the measurement says it does not pay.

:func:`speed_record` says what is on and which kernel plan runs (recorded with every experiment). The one
switch: ``load_model(..., fast=False)``, or the environment variable ``TEMPO_LENS_FAST=0`` (``tempo-lens
--no-fast`` sets it), loads the stock TransformerBridge. :func:`stock_paths` sets them aside inside a ``with``
block (for comparisons) and :func:`remove_fast_paths` undoes them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ...io.memory import available_bytes
from ...models.cache import cache_root
from ..base import ENV, SpeedRecord, fast_setting  # noqa: F401 - ENV: the switch's name, read here by tests and the CLI
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
from .linear_calibration import LinearPlan, cached_plan

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
        model.tempo_lens_linear_plan = plan
        log.info("fast paths: linears, %s", plan.describe())
    return fast_paths_on(model)


def linear_plan(model: TransformerBridge) -> LinearPlan:
    """The linear kernel plan for this model's layer shapes on this machine (measured once, then cached)."""
    return cached_plan(sample_linears(model), cache_root() / "kernel_plans")


def fast_paths_on(model: TransformerBridge) -> list[str]:
    """What is on now, one line per path (empty: the stock bridge)."""
    on = []
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
    restore_norm_statistics(model)
    remove_prepacked_linears(model)
    vars(model).pop("tempo_lens_linear_plan", None)


@contextlib.contextmanager
def stock_paths(model: TransformerBridge) -> Iterator[list[str]]:
    """Inside the block the model runs its stock paths; yields what was set aside (kept, not repacked)."""
    was_on = fast_paths_on(model)
    with stock_norms(model), stock_linears(model):
        yield was_on


def speed_record(model: TransformerBridge) -> SpeedRecord:
    """The paths on now, the linear kernels they run, and the cached measurement that chose them (while any path is on)."""
    paths = [line.split(" (")[0] for line in fast_paths_on(model)]
    plan = getattr(model, "tempo_lens_linear_plan", None) if paths else None
    return SpeedRecord(
        paths=paths,
        packed_from_rows=packed_min_rows(model),
        one_row=one_row_kernel(model),
        kernel_plan=None if plan is None else plan.key,
        plan_measured=None if plan is None else plan.measured,
    )
