"""Head specialisation (``docs/definitions.md``): recent vs distant attention, entropy and peak of every head.

At one step the attention is averaged over the captured layers to ``P[batch, head, query, key]``.
Per query row, only the keys the row could see count (``~layout.blocked(mode, ...)``: causal,
isolation of siblings in isolated mode, pruned keys): ``recent`` is the mean weight of the row's
last 3 visible keys, ``distant`` the mean over its other visible keys (3 or fewer visible keys:
``recent`` = mean over them, ``distant`` = 0). ``entropy`` (nats) and ``max`` are of the row's
distribution. All four are averaged over query rows and batch; with one query this is the
reference definition.

Grouping rule (deterministic, relative to the heads of the same step; the reference grouped by hand,
roughly by entropy). With ``lo``/``hi`` the lowest/highest head entropy and ``span = hi - lo``:

- **Diffuse**: ``entropy >= lo + 2/3 * span`` (top third of the entropy range);
- **Long-range**: ``entropy < lo + 1/3 * span`` (bottom third: focused) and ``distant > recent``;
- **Balanced**: every other head: the middle third, and focused heads whose recent weight is at
  least their distant weight (focused local heads; their recent/distant columns show it).

When every head has the same entropy (``span`` ~ 0, e.g. one head) there is no spread to rank by
and every head is Balanced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Bool, Float

from ..errors import InvalidInputError
from ..layout import Mode, TokenLayout
from ._arrays import layer_labels, step_attention

EPS = 1e-10
N_RECENT = 3
LONG_RANGE, BALANCED, DIFFUSE = "Long-range", "Balanced", "Diffuse"
HEAD_GROUPS = (LONG_RANGE, BALANCED, DIFFUSE)


def group_heads(entropy: Any, recent: Any, distant: Any) -> list[str]:
    """Long-range / Balanced / Diffuse by the rule in the module docstring."""
    entropy, recent, distant = (np.asarray(x, dtype=np.float64) for x in (entropy, recent, distant))
    lo, hi = float(entropy.min()), float(entropy.max())
    span = hi - lo
    if span <= 1e-9 * max(1.0, abs(hi)):
        return [BALANCED] * len(entropy)
    groups = np.full(len(entropy), BALANCED, dtype=object)
    groups[(entropy < lo + span / 3) & (distant > recent)] = LONG_RANGE
    groups[entropy >= lo + 2 * span / 3] = DIFFUSE
    return list(groups)


def recent_distant_masks(visible: Bool[np.ndarray, "query key"], n_recent: int = N_RECENT):
    """Per row, the last ``n_recent`` visible keys and the other visible keys (recent takes all when <= n_recent)."""
    from_end = np.cumsum(visible[:, ::-1], axis=1)[:, ::-1]  # visible keys at or after k
    recent = visible & (from_end <= n_recent)
    distant = visible & (from_end > n_recent)
    return recent, distant


def _row_metrics(
    p: Float[np.ndarray, "*lead batch head_index query_pos key_pos"], visible: Bool[np.ndarray, "query key"]
) -> dict[str, np.ndarray]:
    """recent / distant / entropy / max per head, averaged over batch and query rows (leading axes kept)."""
    recent_mask, distant_mask = recent_distant_masks(visible)
    n_recent = recent_mask.sum(-1)
    n_distant = distant_mask.sum(-1)
    recent = (p * recent_mask).sum(-1) / n_recent
    distant = np.where(n_distant > 0, (p * distant_mask).sum(-1) / np.maximum(n_distant, 1), 0.0)
    entropy = -(p * np.log(p + EPS)).sum(-1)
    peak = p.max(-1)
    return {name: x.mean(axis=(-3, -1)) for name, x in dict(recent=recent, distant=distant, entropy=entropy, max=peak).items()}


def head_specialisation(
    attention: Any, layout: TokenLayout, step: int, mode: Mode, *, n_kv_heads: int | None = None
) -> pd.DataFrame:
    """Per head: head, kv_head, recent, distant, entropy, max, group (see the module docstring).

    Averaged over the captured layers first, as the reference did (*the reference's view*: head ``h`` of
    one layer is unrelated to head ``h`` of another; :func:`layer_head_specialisation` keeps them apart).
    ``mode`` picks the mask that says which keys each query row could see; ``n_kv_heads`` (default
    ``n_heads``) maps each head to the KV head it shares under GQA: ``head // (n_heads // n_kv_heads)``.
    """
    a, _ = step_attention(attention, layout, step)
    p: Float[np.ndarray, "batch head_index query_pos key_pos"] = a.mean(axis=0)
    n_queries, n_keys = p.shape[-2:]
    visible = ~layout.blocked(mode, n_queries=n_queries, n_keys=n_keys).numpy()
    per_head = _row_metrics(p, visible)

    n_heads = p.shape[1]
    n_kv_heads = n_heads if n_kv_heads is None else int(n_kv_heads)
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise InvalidInputError(f"{n_heads} heads cannot share {n_kv_heads} KV heads evenly")
    heads = np.arange(n_heads)
    groups = group_heads(per_head["entropy"], per_head["recent"], per_head["distant"])
    return pd.DataFrame({"head": heads, "kv_head": heads // (n_heads // n_kv_heads), **per_head, "group": groups})


def layer_head_specialisation(
    attention: Any, layout: TokenLayout, step: int, mode: Mode, *, layers: Sequence[int] | None = None
) -> pd.DataFrame:
    """Per captured (layer, head), not averaged over layers: layer, head, recent, distant, entropy, max, group.

    The grouping rule of the module docstring is applied over every (layer, head) of the step together.
    Layers are labelled by ``layers``, else the captured step's own layer numbers, else ``0..L-1``.
    """
    a, _ = step_attention(attention, layout, step)
    n_queries, n_keys = a.shape[-2:]
    visible = ~layout.blocked(mode, n_queries=n_queries, n_keys=n_keys).numpy()
    cells = {k: v.ravel() for k, v in _row_metrics(a, visible).items()}  # [layer, head] -> flat
    n_layers, n_heads = a.shape[0], a.shape[2]
    layers = layer_labels(attention, n_layers) if layers is None else list(layers)
    groups = group_heads(cells["entropy"], cells["recent"], cells["distant"])
    return pd.DataFrame(
        {"layer": np.repeat(layers, n_heads), "head": np.tile(np.arange(n_heads), n_layers), **cells, "group": groups}
    )


def heads_by_kv_group(df: pd.DataFrame) -> pd.DataFrame:
    """GQA summary: per KV head, its query heads, their mean metrics, entropy spread and group counts."""
    rows = []
    for kv, part in df.groupby("kv_head", sort=True):
        counts = part["group"].value_counts()
        rows.append(
            dict(
                kv_head=int(kv),
                heads=",".join(str(int(h)) for h in part["head"]),
                n_heads=len(part),
                recent=part["recent"].mean(),
                distant=part["distant"].mean(),
                entropy=part["entropy"].mean(),
                entropy_min=part["entropy"].min(),
                entropy_max=part["entropy"].max(),
                max=part["max"].mean(),
                groups=", ".join(f"{g} x{int(counts[g])}" for g in HEAD_GROUPS if g in counts),
            )
        )
    return pd.DataFrame(
        rows,
        columns=["kv_head", "heads", "n_heads", "recent", "distant", "entropy", "entropy_min", "entropy_max", "max", "groups"],
    )
