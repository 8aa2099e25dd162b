"""Render a :class:`Document` as GitHub-flavoured Markdown, the form users paste into issues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvdeploy.reports.document import Callout, Document, Figure, KeyValues, Paragraph, Table
from cvdeploy.reports.jsonio import write_text

_CALLOUT = {"critical": "**Critical:**", "warning": "**Warning:**", "info": "**Note:**", "success": "**OK:**"}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    """A pipe table; numeric columns right-aligned as the table says."""
    align = table.alignment()
    head = "| " + " | ".join(_cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if a == "right" else ":---" for a in align) + "|"
    lines = [head, rule]
    for i, row in enumerate(table.rows):
        cells = [_cell(c) for c in row]
        if i in table.highlight:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(
    doc: Document, figures_dir: str | Path | None = None, figures_link: str | None = None
) -> str:
    """Markdown text of ``doc``.

    Figures are written as PNG files into ``figures_dir`` and linked (as ``figures_link/NAME`` when
    given, else by file name) when a folder is given; otherwise each is replaced by a one-line note,
    since Markdown renderers such as GitHub do not show inline data URIs.
    """
    out: list[str] = [f"# {doc.title}"]
    if doc.subtitle:
        out.append(f"_{doc.subtitle}_")
    n_fig = 0
    for section in doc.sections:
        out.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                out.append(block.text)
            elif isinstance(block, Callout):
                out.append(f"> {_CALLOUT[block.level]} {block.text}")
            elif isinstance(block, KeyValues):
                if block.title:
                    out.append(f"**{block.title}**")
                out.append(
                    table_markdown(
                        Table(["", ""], [[f"**{k}**", v] for k, v in block.items], align=["left", "left"])
                    )
                )
            elif isinstance(block, Table):
                if block.title:
                    out.append(f"**{block.title}**")
                out.append(table_markdown(block))
            elif isinstance(block, Figure):
                n_fig += 1
                out.append(_figure(block, n_fig, figures_dir, figures_link))
    return "\n\n".join(out) + "\n"


def _figure(fig: Figure, n: int, figures_dir: str | Path | None, link: str | None) -> str:
    if figures_dir is None:
        return f"_Figure: {fig.title} (in the HTML report)._"
    d = Path(figures_dir)
    d.mkdir(parents=True, exist_ok=True)
    name = f"figure{n}.png"
    (d / name).write_bytes(fig.png)
    href = f"{link.rstrip('/')}/{name}" if link else name
    caption = f"\n\n_{fig.caption}_" if fig.caption else ""
    return f"![{fig.title}]({href}){caption}"


def write_markdown(report: Any, path: str | Path, figures_dir: str | Path | None = None) -> Path:
    """Write a :class:`Document` (or anything with ``to_document()``) as Markdown to ``path``."""
    doc = as_document(report)
    p = Path(path)
    link = None
    if figures_dir is not None:
        try:
            link = str(Path(figures_dir).resolve().relative_to(p.resolve().parent))
        except ValueError:
            link = str(Path(figures_dir).resolve())
    return write_text(render_markdown(doc, figures_dir, link), p)


def as_document(report: Any) -> Document:
    """Accept a Document or any report object that can build one (``to_document()``)."""
    if isinstance(report, Document):
        return report
    build = getattr(report, "to_document", None)
    if callable(build):
        doc = build()
        if isinstance(doc, Document):
            return doc
    raise TypeError(f"cannot render {type(report).__name__} as a report: it has no to_document()")
