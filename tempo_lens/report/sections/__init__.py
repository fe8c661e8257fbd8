"""The findings report's sections, one module each, in the order the report shows them.

Each module has one ``render(doc, metrics)`` that appends its section to the document, reading every number
from the one :class:`~tempo_lens.analysis.metrics.schema.Metrics` it is given. May import: the report's
shared modules (document, text, readings), analysis (the metrics types and verdict words) and figures.
"""

from . import (
    baseline,
    beyond,
    conclusion,
    cross_model,
    data_summary,
    future,
    header,
    hypotheses,
    implications,
    key_findings,
    knockout,
    reference,
    summary,
)

SECTIONS = (
    header,
    summary,
    key_findings,
    hypotheses,
    implications,
    baseline,
    beyond,
    knockout,
    future,
    conclusion,
    reference,
    cross_model,
    data_summary,
)
"""Every section in report order (the head first: the lines under the title)."""
