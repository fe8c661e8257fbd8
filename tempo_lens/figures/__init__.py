"""Every plotly figure of tempo_lens, in one home: pure functions from analysis frames, runs or metrics to ``go.Figure``.

- :mod:`.charts`: figures of analysis frames and runs (ratios, entropy, heads, attention heatmaps, branching);
- :mod:`.heatmaps`, :mod:`.lattice`: views of captured runs (entropy heatmap, head grid, token lattice);
- :mod:`.report`: the findings report's figures, drawn from its metrics alone.

May import: the bottom layers, ``capture``, ``layout`` and ``analysis`` (never ``report`` or ``app``).
Nothing here renders images (no kaleido / Chrome): save with ``fig.write_html(path)``.
"""

from ..analysis.labels import key_labels, token_text
from .charts import (
    GROUP_COLOURS,
    MAX_TEXT_LABELS,
    MODE_COLOURS,
    PALETTE,
    attention_heatmap,
    branching_figure,
    entropy_figure,
    head_map_figure,
    head_scatter,
    heatmap_figure,
    layer_head_heatmap,
    ratio_ci_figure,
    ratio_figure,
    step_slider,
)
from .heatmaps import entropy_heatmap, head_grid
from .lattice import lattice_edges, token_lattice

__all__ = [
    "GROUP_COLOURS",
    "MAX_TEXT_LABELS",
    "MODE_COLOURS",
    "PALETTE",
    "attention_heatmap",
    "branching_figure",
    "entropy_figure",
    "entropy_heatmap",
    "head_grid",
    "head_map_figure",
    "head_scatter",
    "heatmap_figure",
    "key_labels",
    "lattice_edges",
    "layer_head_heatmap",
    "ratio_ci_figure",
    "ratio_figure",
    "step_slider",
    "token_lattice",
    "token_text",
]
