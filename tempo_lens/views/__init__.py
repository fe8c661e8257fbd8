"""Views of captured runs (plotly, offline HTML): the token lattice, the entropy heatmap, the head grid.

The figures live in :mod:`tempo_lens.figures`; this name keeps ``tempo_lens.views`` working. Each takes
:class:`~tempo_lens.capture.CapturedRun` objects (or GenerationResults generated with ``capture=True``)
and returns a ``go.Figure``; save with ``fig.write_html(path)``.

May import: :mod:`tempo_lens.figures` only.
"""

from ..figures.heatmaps import entropy_heatmap, head_grid
from ..figures.lattice import lattice_edges, token_lattice

__all__ = ["entropy_heatmap", "head_grid", "lattice_edges", "token_lattice"]
