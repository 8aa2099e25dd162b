"""Render a :class:`Document` (without its figures) on a rich console."""

from __future__ import annotations

from typing import Any

from cvdeploy.reports.document import Callout, Document, Figure, KeyValues, Paragraph, Table

_STYLE = {"critical": "bold red", "warning": "bold yellow", "info": "cyan", "success": "green"}


def rich_table(table: Table) -> Any:
    """A ``rich.table.Table`` with the same columns, rows, alignment and highlighted rows."""
    from rich.table import Table as RichTable

    t = RichTable(title=table.title or None, title_justify="left")
    for col, align in zip(table.columns, table.alignment(), strict=True):
        t.add_column(col, justify=align)
    for i, row in enumerate(table.rows):
        t.add_row(*row, style="bold green" if i in table.highlight else None)
    return t


def print_document(doc: Document, console: Any, sections: list[str] | None = None) -> None:
    """Print the chosen sections (default: all) of ``doc``; figures become a one-line pointer."""
    from rich.markup import escape

    console.print(
        f"[bold]{escape(doc.title)}[/]" + (f"  [dim]{escape(doc.subtitle)}[/]" if doc.subtitle else "")
    )
    for section in doc.sections:
        if sections is not None and section.title not in sections:
            continue
        console.rule(f"[bold]{escape(section.title)}", align="left")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                console.print(escape(block.text))
            elif isinstance(block, Callout):
                console.print(f"[{_STYLE[block.level]}]{block.level}: {escape(block.text)}[/]")
            elif isinstance(block, KeyValues):
                for k, v in block.items:
                    console.print(f"[bold]{escape(k)}:[/] {escape(v)}")
            elif isinstance(block, Table):
                console.print(rich_table(block))
            elif isinstance(block, Figure):
                console.print(f"[dim](figure: {escape(block.title)} — in the HTML report)[/]")
