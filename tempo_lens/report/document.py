"""A small document model rendered twice: Markdown (FINDINGS.md) and a self-contained HTML page.

Blocks are headings, paragraphs, bullet lists, tables and figures; inline text may use ``**bold**``
and ``code`` spans. The HTML page inlines plotly.js once, so it opens offline.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, Sequence, Union


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


Block = Union[Heading, Paragraph, Bullets, Table, Figure]


def _inline_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    escaped = re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)
    return escaped


def _cell_md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


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

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            if isinstance(block, Heading):
                out += ["#" * block.level + " " + block.text, ""]
            elif isinstance(block, Paragraph):
                out += [block.text, ""]
            elif isinstance(block, Bullets):
                out += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, Table):
                out.append("| " + " | ".join(_cell_md(h) for h in block.headers) + " |")
                out.append("|" + "|".join("---" for _ in block.headers) + "|")
                out += ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in block.rows]
                out.append("")
            elif isinstance(block, Figure):
                out += [f"*Figure: {block.caption or block.name} (interactive in report.html).*", ""]
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        body: list[str] = [f"<h1>{_inline_html(self.title)}</h1>"]
        plotly_included = False
        for block in self.blocks:
            if isinstance(block, Heading):
                level = min(block.level, 6)
                anchor = re.sub(r"[^a-z0-9]+", "-", block.text.lower()).strip("-")
                body.append(f'<h{level} id="{anchor}">{_inline_html(block.text)}</h{level}>')
            elif isinstance(block, Paragraph):
                body.append(f"<p>{_inline_html(block.text)}</p>")
            elif isinstance(block, Bullets):
                body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items) + "</ul>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in block.headers)
                rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in block.rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif isinstance(block, Figure):
                div = block.figure.to_html(full_html=False, include_plotlyjs=not plotly_included, div_id=f"fig-{block.name}")
                plotly_included = True
                caption = f"<figcaption>{_inline_html(block.caption)}</figcaption>" if block.caption else ""
                body.append(f'<figure class="plot">{div}{caption}</figure>')
        style = (
            "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
            "color:#222;line-height:1.5}table{border-collapse:collapse;margin:1em 0;font-size:0.92em}"
            "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}"
            "code{background:#f4f4f4;padding:0 3px}figure.plot{margin:1.5em 0}figcaption{color:#555;font-size:0.9em}"
        )
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )
