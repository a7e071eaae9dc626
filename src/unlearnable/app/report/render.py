"""The report as a document: a few block kinds (headings, paragraphs, tables, figures, code), rendered
once as GitHub-flavoured Markdown and once as one self-contained HTML page, and the cell formats."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Any

DASH = "—"


def number(value: Any, fmt: str = ".2f") -> str:
    """`value` formatted, or a dash when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DASH
    return format(value, fmt)


def duration(seconds: Any) -> str:
    """Seconds as '12.3 s', '20 min 05 s' or '3 h 07 min'."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def describe_adversarial(adversarial: Any) -> str:
    """e.g. 'L∞ 4/255, 10 steps', 'L2 ε=0.5, 7 steps', 'none'."""
    if not adversarial:
        return "none"
    if not isinstance(adversarial, dict):
        return str(adversarial)
    norm = str(adversarial.get("norm", "?"))
    linf = norm.lower() == "linf"
    text = "L∞" if linf else norm.upper()
    eps = adversarial.get("eps")
    if isinstance(eps, (int, float)):
        levels = eps * 255
        text += f" {round(levels)}/255" if linf and abs(levels - round(levels)) < 0.02 else f" ε={eps:g}"
    steps = adversarial.get("steps")
    return text + (f", {steps} steps" if steps is not None else "")


@dataclass
class Heading:
    """A section title; level 1 is the report's title."""

    level: int
    text: str


@dataclass
class Paragraph:
    """Running text (`code` and **bold** allowed); a note is set in italics."""

    text: str
    note: bool = False


@dataclass
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass
class Table:
    """A table of strings; `numeric` columns are right-aligned, `flagged` rows highlighted."""

    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    flagged: set[int] = field(default_factory=set)


@dataclass
class Figure:
    """A PNG: linked by `path` (relative to the report) from Markdown, embedded in HTML."""

    path: str
    png: bytes
    caption: str


@dataclass
class Code:
    """A block of shell commands."""

    text: str


Block = Heading | Paragraph | Bullets | Table | Figure | Code


def md_row(cells: list[str]) -> str:
    """One Markdown table row, with pipes inside cells escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_markdown(blocks: list[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown; figures link to their PNG files."""
    parts = []
    for block in blocks:
        match block:
            case Heading(level, text):
                parts.append(f"{'#' * level} {text}")
            case Paragraph(text, note):
                parts.append(f"_{text}_" if note else text)
            case Bullets(items):
                parts.append("\n".join(f"- {item}" for item in items))
            case Table(header, rows, numeric, _):
                rule = "|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|"
                lines = [md_row(header), rule]
                parts.append("\n".join(lines + [md_row(row) for row in rows]))
            case Figure(path, _, caption):
                parts.append(f"![{caption}]({path})\n\n_{caption}_")
            case Code(text):
                parts.append(f"```sh\n{text}\n```")
    return "\n\n".join(parts) + "\n"


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1120px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.8em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
h3 { margin-bottom: .3em; }
.scroll { overflow-x: auto; margin: .4em 0 1.2em; }
table { border-collapse: collapse; font-size: 13.5px; }
th, td { border: 1px solid #d0d0d0; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; vertical-align: bottom; }
td { white-space: nowrap; } td:first-child { white-space: normal; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td { background: #fff6dd; }
figure { margin: 1em 0 1.5em; } figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 13px; color: #555; margin-top: .4em; }
.note { color: #666; font-style: italic; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: 90%; }
pre { background: #f6f6f6; padding: .8em 1em; overflow-x: auto; font-size: 13px; }
pre code { background: none; padding: 0; }
"""


def inline(text: str) -> str:
    """Escape text for HTML and turn `code` and **bold** into tags."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def html_cells(values: list[str], tag: str, numeric: set[int]) -> str:
    """One table row's cells; numeric columns are right-aligned."""
    return "".join(f"<{tag}{' class=num' if i in numeric else ''}>{inline(v)}</{tag}>" for i, v in enumerate(values))


def to_html(blocks: list[Block], title: str) -> str:
    """The blocks as one HTML page with inline CSS and every figure embedded as a data: URI."""
    body = []
    for block in blocks:
        match block:
            case Heading(level, text):
                body.append(f"<h{level}>{inline(text)}</h{level}>")
            case Paragraph(text, note):
                body.append(f'<p class="note">{inline(text)}</p>' if note else f"<p>{inline(text)}</p>")
            case Bullets(items):
                body.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
            case Table(header, rows, numeric, flagged):
                lines = [f"<tr>{html_cells(header, 'th', numeric)}</tr>"]
                lines += [
                    f"<tr{' class=flagged' if r in flagged else ''}>{html_cells(row, 'td', numeric)}</tr>"
                    for r, row in enumerate(rows)
                ]
                body.append('<div class="scroll"><table>' + "".join(lines) + "</table></div>")
            case Figure(_, png, caption):
                data = base64.b64encode(png).decode()
                body.append(
                    f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{inline(caption)}</figcaption></figure>"
                )
            case Code(text):
                body.append(f"<pre><code>{html.escape(text)}</code></pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
