"""The findings report: metrics from experiment files, rendered as FINDINGS.md, report.html and metrics.json.

Data flows one way: experiments -> :func:`compute_metrics` (a typed :class:`Metrics`, written as
``metrics.json``) -> :func:`render_findings` (words from :mod:`.verdicts`) -> Markdown and HTML.

Rendering only: it formats a ``Metrics`` (computed in :mod:`tempo_lens.analysis.metrics`) and draws
its figures through :mod:`tempo_lens.figures.report`. May import: analysis and figures and the layers below;
never app.
"""

from ..analysis.metrics.compute import compute_metrics, reference_values, single_run_metrics
from ..analysis.metrics.inputs import ReportInputs, RunRef, choose_inputs
from ..analysis.metrics.schema import SCHEMA_VERSION, Metrics, parse_metrics, read_metrics
from .findings import render_findings

__all__ = [
    "SCHEMA_VERSION",
    "Metrics",
    "ReportInputs",
    "RunRef",
    "choose_inputs",
    "compute_metrics",
    "parse_metrics",
    "read_metrics",
    "reference_values",
    "render_findings",
    "single_run_metrics",
]
