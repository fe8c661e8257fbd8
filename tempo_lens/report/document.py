"""A small document model rendered twice: Markdown (FINDINGS.md) and a self-contained HTML page.

Blocks are headings, paragraphs, bullet lists, tables and figures; their text is Markdown (emphasis,
``code``, ~~strikethrough~~). The HTML page renders that Markdown with markdown-it-py (CommonMark
plus tables and strikethrough, raw HTML escaped) and inlines plotly.js once, so it opens offline.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from markdown_it import MarkdownIt


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str
    figure: Any
    caption: str = ""


Block = Heading | Paragraph | Bullets | Table | Figure

STYLE = (
    "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222;line-height:1.5}table{border-collapse:collapse;margin:1em 0;font-size:0.92em}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}"
    "code{background:#f4f4f4;padding:0 3px}figure.plot{margin:1.5em 0}figcaption{color:#555;font-size:0.9em}"
)


def markdown_renderer() -> MarkdownIt:
    """CommonMark with tables and strikethrough; raw HTML is escaped, and links and images are not rendered at all.

    The report never links anywhere, so no text (a name that slipped through escaping included) can
    make report.html reference a remote URL: it opens offline and loads nothing.
    """
    return (
        MarkdownIt("commonmark", {"html": False, "linkify": False})
        .enable(["table", "strikethrough"])
        .disable(["link", "image", "autolink", "html_inline", "html_block"])
    )


PLOT_TAGS = re.compile(r"<(br|/?extra)>")  # the only markup the project's own figures use


def inert_text(text: str) -> str:
    """Plotly renders ``<a href>``, ``<b>``, ... in labels: every ``<``/``>`` but the project's own tags as entities."""
    parts = PLOT_TAGS.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<{part}>")
        else:
            out.append(part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(out)


def _inert(value: Any) -> Any:
    if isinstance(value, str):
        return inert_text(value) if ("<" in value or ">" in value or "&" in value) else value
    if isinstance(value, dict):
        return {k: _inert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_inert(v) for v in value]
    return value


def inert_figure(figure: Any) -> Any:
    """A copy of a plotly figure whose text (names, labels, hover text: tokens and run names) cannot form markup."""
    return go.Figure(_inert(figure.to_plotly_json()))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def block_markdown(block: Block) -> list[str]:
    """The Markdown lines of one block (a figure becomes a one-line placeholder)."""
    if isinstance(block, Heading):
        return ["#" * block.level + " " + block.text]
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items]
    if isinstance(block, Table):
        return ["| " + " | ".join(_cell(h) for h in block.headers) + " |", "|" + "|".join("---" for _ in block.headers) + "|"] + [
            "| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows
        ]
    return [f"*Figure: {block.caption or block.name} (interactive in report.html).*"]


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(Heading(level, text))

    def p(self, text: str) -> None:
        self.blocks.append(Paragraph(text))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(Bullets(list(items)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(Table([str(h) for h in headers], [[str(c) for c in row] for row in rows]))

    def figure(self, name: str, figure: Any, caption: str = "") -> None:
        self.blocks.append(Figure(name, figure, caption))

    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            out += block_markdown(block) + [""]
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        md = markdown_renderer()
        body: list[str] = [f"<h1>{md.renderInline(self.title)}</h1>"]
        plotly_included = False
        for block in self.blocks:
            if isinstance(block, Heading):
                level = min(block.level, 6)
                body.append(f'<h{level} id="{anchor(block.text)}">{md.renderInline(block.text)}</h{level}>')
            elif isinstance(block, Figure):
                div = inert_figure(block.figure).to_html(
                    full_html=False, include_plotlyjs=not plotly_included, div_id=f"fig-{block.name}"
                )
                plotly_included = True
                caption = f"<figcaption>{md.renderInline(block.caption)}</figcaption>" if block.caption else ""
                body.append(f'<figure class="plot" data-figure="{html.escape(block.name)}">{div}{caption}</figure>')
            else:
                body.append(md.render("\n".join(block_markdown(block))))
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )
