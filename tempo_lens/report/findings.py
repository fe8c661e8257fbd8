"""FINDINGS.md: the reference report's sections, every number from the metrics, every word from a verdict.

The renderer reads only a :class:`~.schema.Metrics`. Each section is one module of :mod:`.sections`
with one ``render(doc, metrics)``; direction words come from :mod:`.verdicts` (point estimates with a
tolerance in single-run tables, intervals wherever a value has one), and the readings several sections
state are in :mod:`.readings`. Speculative sections of the reference report appear as hypotheses, each
followed by what this run's controls say.
"""

from __future__ import annotations

from ..analysis.metrics.schema import Metrics
from .document import Document
from .escaping import escape_user_text
from .sections import SECTIONS
from .sections.header import TITLE


def render_findings(metrics: Metrics) -> Document:
    metrics = escape_user_text(metrics)  # names are shown, never interpreted as Markdown or HTML
    doc = Document(TITLE)
    for section in SECTIONS:
        section.render(doc, metrics)
    return doc
