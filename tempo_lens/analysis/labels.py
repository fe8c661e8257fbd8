"""Token and key labels as figures show them: HTML-escaped text, ``∥`` on parallel tokens, ``✗`` on keys hidden by pruning.

The labels are data: the report computes them with its metrics and stores them in ``metrics.json``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ..layout import TokenLayout

PARALLEL_MARK, PRUNED_MARK = "∥", "✗"


def token_text(token: str) -> str:
    """A token as plotly can show it: HTML-escaped, newlines and tabs made visible."""
    return html.escape(str(token)).replace("\n", "⏎").replace("\t", "⇥")


def key_labels(layout: TokenLayout, token_strings: Sequence[str], step: int, n_keys: int) -> list[str]:
    """Axis labels ``index:token``, ``∥`` marking parallel tokens and ``✗`` keys hidden from ``step`` by pruning."""
    parallel = layout.parallel_tensor().numpy()
    labels = []
    for i in range(n_keys):
        mark = ""
        if layout.is_hidden(i, step):
            mark += PRUNED_MARK
        if parallel[i]:
            mark += PARALLEL_MARK
        labels.append(f"{i}:{mark}{token_text(token_strings[i])}")
    return labels
