"""FINDINGS.md and report.html from one document: Markdown rendered by markdown-it-py, never shown as source."""

from __future__ import annotations

import re

import plotly.graph_objects as go

from tempo_lens.report.document import Document
from tempo_lens.report.text import code


def _doc() -> Document:
    doc = Document("Title with `code`")
    doc.h(2, "Section *one*")
    doc.p("*Hypothesis:* tokens are **down-weighted**; raw <script>alert(1)</script> stays text; ~~pruned~~ and `a|b`.")
    doc.bullets(["*What the controls say:* less", f"token {code('x`y')}"])
    doc.table(["A", "B"], [["*x*", "1|2"]])
    doc.figure("f", go.Figure(go.Scatter(x=[1], y=[2])), "a *caption*")
    return doc


def test_html_renders_emphasis_not_markdown_source():
    html = _doc().to_html()
    assert "<em>Hypothesis:</em>" in html and "<strong>down-weighted</strong>" in html
    assert "*Hypothesis:*" not in html and "**" not in html.split("<script")[0]
    assert "<s>pruned</s>" in html and "<em>What the controls say:</em>" in html
    assert "<h2 id=\"section-one\">Section <em>one</em></h2>" in html


def test_raw_html_in_text_is_escaped():
    html = _doc().to_html()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html


def test_tables_and_code_spans():
    html = _doc().to_html()
    assert re.search(r"<td><em>x</em></td>\s*<td>1\|2</td>", html)
    assert "<code>x`y</code>" in html
    assert html.count('class="plot"') == 1 and "<figcaption>a <em>caption</em></figcaption>" in html


def test_markdown_keeps_the_source_and_escapes_table_pipes():
    md = _doc().to_markdown()
    assert md.startswith("# Title with `code`\n")
    assert "| *x* | 1\\|2 |" in md and "*Figure: a *caption* (interactive in report.html).*" in md


def test_code_span_shows_whitespace_tokens():
    assert code("\n") == "`⏎`" and code(" a") == "` a`" and code("``") == "``` `` ```"


def test_the_report_page_renders_emphasis(report):
    html = report["html"]
    assert "*Hypothesis:*" not in html and "<em>Hypothesis:</em>" in html
    assert "**" not in re.sub(r"<script.*?</script>", "", html, flags=re.S)
