"""Parallel : non-parallel attention ratio (``docs/definitions.md``).

At step ``s`` the captured attention is averaged to one weight per key,
``a = A.mean(layer, batch, head, query)``, and the keys before the step's first sibling are split
into two buckets read from the layout:

- **parallel**: tokens of earlier steps that selected >= 2 siblings (a collapsed set's survivor
  stays parallel, :meth:`TokenLayout.parallel_tensor`);
- **other**: every other earlier key, prompt and BOS included (``other="generated"``: only the
  generated, non-parallel keys, so the prompt, far from the query, is left out; the
  *generated-only* control for distance and token kind).

Keys pruned before ``s`` (hidden from this step's queries, :meth:`TokenLayout.hidden_tensor`)
are left out of both. ``ratio = mean(a[parallel]) / mean(a[other])``; 1.0 means a parallel token gets
as much attention as an average other token. Because ``k`` near-identical siblings split mass, the
per-set mass (sum over a set's keys, averaged over sets) is reported beside the per-token mean.

A step that cannot be measured carries a ``missing_reason`` and NaN measurements, never a silent 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from jaxtyping import Bool, Float, Int

from ..capture import as_runs
from ..errors import InvalidInputError
from ..layout import TokenLayout
from ._arrays import layer_labels, step_attention

NO_PARALLEL = "no earlier parallel set"
NO_OTHER = "no other keys"
MIN_DENOMINATOR = 1e-6
"""A ratio of attention weights is measurable only when its denominator (a mean weight) is at least this:
below it the weight is within about ten float32 rounding steps (1.2e-7 near 1) of 0 and the ratio is noise."""
NO_OTHER_ATTENTION = f"attention to other keys below {MIN_DENOMINATOR:g} (not measurable)"

OtherKeys = Literal["all", "generated"]
"""Which non-parallel keys form the "other" bucket: every one, or the generated ones only."""

STEP_RATIO_COLUMNS = ["run", "prompt", "mode", "step", "ratio", "parallel_mean"]
"""The columns every per-step ratio table opens with: which step of which run, its ratio, the parallel keys' mean."""
RATIO_COLUMNS = [
    *STEP_RATIO_COLUMNS,
    "other_mean",
    "parallel_set_mass",
    "n_parallel_keys",
    "n_other_keys",
    "n_parallel_sets",
    "missing_reason",
    "set_ratio",
]


def measurable(denominator: Any) -> Any:
    """Whether a ratio over ``denominator`` (a mean attention weight) is measurable: at least :data:`MIN_DENOMINATOR`."""
    return np.asarray(denominator) >= MIN_DENOMINATOR


@dataclass(frozen=True)
class KeyBuckets:
    """Which earlier keys of one step are parallel / other, and the parallel set each belongs to.

    ``parallel`` and ``other`` are boolean masks over the physical keys ``0..first-1`` (``first`` =
    the step's first sibling); ``set_of_key`` maps every key to a parallel-set number
    ``0..n_sets-1`` (-1 for keys outside the parallel bucket).
    """

    step: int
    first: int
    parallel: Bool[np.ndarray, " key"]
    other: Bool[np.ndarray, " key"]
    set_of_key: Int[np.ndarray, " key"]
    n_sets: int

    @property
    def n_parallel(self) -> int:
        return int(self.parallel.sum())

    @property
    def n_other(self) -> int:
        return int(self.other.sum())


def key_buckets(layout: TokenLayout, step: int, *, exclude_first: bool = False, other: OtherKeys = "all") -> KeyBuckets:
    """Split the keys before ``step``'s first sibling into parallel / other buckets (see module doc).

    ``exclude_first`` drops physical position 0 from both (the "attention sink" variant), whether or
    not it is a BOS token. ``other="generated"`` keeps only generated keys (step >= 0) in "other".
    """
    if other not in get_args(OtherKeys):
        raise InvalidInputError(f"other must be one of {get_args(OtherKeys)}, got {other!r}")
    first = layout.step_range(step).start
    is_parallel = layout.parallel_tensor().numpy()[:first]
    key_steps = layout.steps_tensor().numpy()[:first]
    counted = ~layout.hidden_tensor(step).numpy()[:first]
    if exclude_first and first > 0:
        counted[0] = False
    parallel = counted & is_parallel
    others = counted & ~is_parallel & ((key_steps >= 0) if other == "generated" else True)
    set_of_key = np.full(first, -1, dtype=np.int64)
    set_steps, set_of_key[parallel] = np.unique(key_steps[parallel], return_inverse=True)
    return KeyBuckets(step, first, parallel, others, set_of_key, len(set_steps))


@dataclass
class RatioResult:
    """One step's parallel : other ratio and the quantities behind it.

    ``parallel_set_mass``: mean over earlier parallel sets of the summed weight of the set's counted
    keys. ``other_token_mean`` equals ``other_mean`` (named for the per-token comparison with the set
    mass). When ``missing_reason`` is set, every measurement is NaN; the key and set counts stay
    the true counts, which explain the reason.
    """

    step: int
    ratio: float
    parallel_mean: float
    other_mean: float
    parallel_set_mass: float
    other_token_mean: float
    n_parallel_keys: int
    n_other_keys: int
    n_parallel_sets: int
    missing_reason: str | None = None

    @property
    def set_ratio(self) -> float:
        """Mass of an average parallel set over the weight of an average other token."""
        return self.parallel_set_mass / self.other_token_mean if self.missing_reason is None else float("nan")


def _weights_ratio(weights: Float[np.ndarray, "... key"], buckets: KeyBuckets) -> dict[str, np.ndarray]:
    """Bucket means, set mass and ratio for each row of ``weights`` (keys ``0..first-1``); NaN where missing."""
    w = weights[..., : buckets.first]
    nan = np.full(w.shape[:-1], np.nan)
    if buckets.n_parallel == 0 or buckets.n_other == 0:
        return dict(ratio=nan, parallel_mean=nan, other_mean=nan, parallel_set_mass=nan)
    parallel_mean = w[..., buckets.parallel].mean(-1)
    other_mean = w[..., buckets.other].mean(-1)
    one_hot = buckets.set_of_key[:, None] == np.arange(buckets.n_sets)[None, :]
    set_mass = (w @ one_hot).mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(measurable(other_mean), parallel_mean / other_mean, np.nan)
    return dict(ratio=ratio, parallel_mean=parallel_mean, other_mean=other_mean, parallel_set_mass=set_mass)


def _missing(buckets: KeyBuckets, other_mean: Any) -> str | None:
    if not buckets.parallel.any():
        return NO_PARALLEL
    if not buckets.other.any():
        return NO_OTHER
    return None if measurable(other_mean) else NO_OTHER_ATTENTION


def parallel_ratio(
    attention: Any, layout: TokenLayout, step: int, *, exclude_first: bool = False, other: OtherKeys = "all"
) -> RatioResult:
    """Parallel : other attention ratio of one captured step ``[layer, batch, head, query, key]``."""
    a, _ = step_attention(attention, layout, step)
    weights: Float[np.ndarray, " key"] = a.mean(axis=(0, 1, 2, 3), dtype=np.float64)
    buckets = key_buckets(layout, step, exclude_first=exclude_first, other=other)
    r = {k: float(v) for k, v in _weights_ratio(weights, buckets).items()}
    reason = _missing(buckets, r["other_mean"])
    if reason is not None:
        r = dict.fromkeys(r, float("nan"))
    return RatioResult(
        step=step,
        ratio=r["ratio"],
        parallel_mean=r["parallel_mean"],
        other_mean=r["other_mean"],
        parallel_set_mass=r["parallel_set_mass"],
        other_token_mean=r["other_mean"],
        n_parallel_keys=buckets.n_parallel,
        n_other_keys=buckets.n_other,
        n_parallel_sets=buckets.n_sets,
        missing_reason=reason,
    )


def ratio_table(runs: Iterable[Any], *, exclude_first: bool = False, other: OtherKeys = "all") -> pd.DataFrame:
    """One row per (run, step) for every step >= 0 with a captured array; missing steps keep their reason.

    ``runs``: captured runs or generation results (one, a list, or an experiment). Columns: run, prompt, mode, step,
    ratio, parallel_mean, other_mean, parallel_set_mass, n_parallel_keys, n_other_keys,
    n_parallel_sets, missing_reason, set_ratio (= parallel_set_mass / other_mean).
    """
    rows = []
    for run in as_runs(runs):
        for step in run.step_ids:
            result = parallel_ratio(run.attention[step], run.layout, step, exclude_first=exclude_first, other=other)
            row = {k: v for k, v in vars(result).items() if k != "other_token_mean"}  # the fields are plain values
            rows.append(dict(run=run.name, prompt=run.prompt, mode=run.mask, **row, set_ratio=result.set_ratio))
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)


def mode_averages(ratio_df: pd.DataFrame) -> pd.DataFrame:
    """Mean of the per-step ratios per (run, mode), skipping missing steps (the reference's average).

    Columns: run, mode, ratio (mean of per-step ratios), set_ratio (same for the set ratio, when the
    table has it), n_steps (steps averaged), steps (those steps, comma-separated).
    """
    keys = ["run", "mode"]
    means = ["ratio"] + (["set_ratio"] if "set_ratio" in ratio_df else [])
    columns = [*keys, *means, "n_steps", "steps"]
    measured = ratio_df[ratio_df["missing_reason"].isna() & ratio_df["ratio"].notna()]
    grouped = measured.groupby(keys, sort=False)
    found = grouped[means].mean().join(grouped["step"].agg(n_steps="size", steps=lambda s: ",".join(str(int(v)) for v in s)))
    out = ratio_df[keys].drop_duplicates().merge(found.reset_index(), on=keys, how="left")  # every (run, mode), in table order
    return out.fillna({"n_steps": 0, "steps": ""}).astype({"n_steps": int, "steps": str})[columns].reset_index(drop=True)


def _grouped_ratio(
    weights: Float[np.ndarray, "group key"],
    layout: TokenLayout,
    step: int,
    exclude_first: bool,
    label: str,
    labels: Sequence[int],
) -> pd.DataFrame:
    buckets = key_buckets(layout, step, exclude_first=exclude_first)
    r = _weights_ratio(weights, buckets)
    reason = _missing(buckets, 1.0)  # shared by every row, unless a row pays no attention to other keys
    reasons = np.full(len(labels), reason, dtype=object)
    if reason is None:
        reasons[~measurable(r["other_mean"])] = NO_OTHER_ATTENTION
    missing = np.array([x is not None for x in reasons], dtype=bool)
    columns = {k: np.where(missing, np.nan, v) for k, v in r.items()}
    return pd.DataFrame({label: np.asarray(labels), "step": step, **columns, "missing_reason": reasons})


def ratio_by_layer(
    attention: Any, layout: TokenLayout, step: int, *, layers: Sequence[int] | None = None, exclude_first: bool = False
) -> pd.DataFrame:
    """The ratio per captured layer (averaged over batch, heads, queries); rows are labelled by model layer.

    The labels come from ``layers``, else from a :class:`~tempo_lens.capture.StepAttention`'s own layer
    numbers (``result.capture[step]``), else ``0..L-1``.

    Columns: layer, step, ratio, parallel_mean, other_mean, parallel_set_mass, missing_reason.
    """
    a, _ = step_attention(attention, layout, step)
    layers = layer_labels(attention, a.shape[0]) if layers is None else list(layers)
    if len(layers) != a.shape[0]:
        raise InvalidInputError(f"{len(layers)} layer labels for {a.shape[0]} captured layers")
    return _grouped_ratio(a.mean(axis=(1, 2, 3), dtype=np.float64), layout, step, exclude_first, "layer", layers)


def ratio_by_head(attention: Any, layout: TokenLayout, step: int, *, exclude_first: bool = False) -> pd.DataFrame:
    """The ratio per head (averaged over the captured layers, batch, queries).

    Columns: head, step, ratio, parallel_mean, other_mean, parallel_set_mass, missing_reason.
    """
    a, _ = step_attention(attention, layout, step)
    weights = a.mean(axis=(0, 1, 3), dtype=np.float64)
    return _grouped_ratio(weights, layout, step, exclude_first, "head", range(a.shape[2]))
