"""Intra-step attention: how much each sibling attends to the other siblings of its own step.

The reference could not measure this (it fed one query per step). Here every sibling is a query of
its step's forward pass, so its row splits into three masses (averaged over layers, batch, heads):
``to_siblings`` (the other siblings of the step), ``to_self`` and ``to_earlier`` (every key before the
step). In isolated mode ``to_siblings`` is 0 by construction; in visible mode a sibling sees the
siblings appended before it, so the first sibling's ``to_siblings`` is 0 there too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..capture import as_runs
from ..layout import TokenLayout
from ._arrays import step_attention

INTRA_COLUMNS = ["step", "physical", "rank", "n_siblings", "to_siblings", "to_self", "to_earlier"]


def intra_step_attention(attention: Any, layout: TokenLayout, step: int) -> pd.DataFrame:
    """One row per query sibling of ``step``: physical index, sibling rank and its three masses.

    A step with a single sibling has no intra-step attention to measure: the frame is empty (with the
    same columns), so means over steps only cover parallel steps.
    """
    a, siblings = step_attention(attention, layout, step)
    n = len(siblings)
    if n < 2:
        return pd.DataFrame(columns=INTRA_COLUMNS)
    rows: Float[np.ndarray, "query key"] = a.mean(axis=(0, 1, 2), dtype=np.float64)
    within = rows[:, siblings.start :]
    to_self = np.diagonal(within)
    return pd.DataFrame(
        {
            "step": step,
            "physical": list(siblings),
            "rank": np.arange(n),
            "n_siblings": n,
            "to_siblings": within.sum(-1) - to_self,
            "to_self": to_self,
            "to_earlier": rows[:, : siblings.start].sum(-1),
        }
    )


def intra_step_table(runs: Iterable[Any]) -> pd.DataFrame:
    """:func:`intra_step_attention` over every captured step of every run, with run, mode, token, prob.

    ``runs``: captured runs or generation results (one, a list, or an experiment: its generated runs);
    single-sibling steps add no rows. ``mode`` is the mask the attention was computed under
    (``run.mask``: a control replay's own, not its generation's), so isolated rows are 0 by construction.
    """
    columns = ["run", "mode", *INTRA_COLUMNS[:3], "token", "prob", *INTRA_COLUMNS[3:]]
    frames = []
    for run in as_runs(runs):
        for step in run.step_ids:
            frame = intra_step_attention(run.attention[step], run.layout, step)
            if frame.empty:
                continue
            frame.insert(0, "run", run.name)
            frame.insert(1, "mode", run.mask)
            frame["token"] = [run.token_strings[i] for i in frame["physical"]]
            frame["prob"] = [run.layout.probs[i] for i in frame["physical"]]
            frames.append(frame[columns])
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)
