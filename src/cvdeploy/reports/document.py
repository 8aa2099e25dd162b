"""A report as plain data: a title, sections and blocks (text, callouts, key-values, tables, figures).

Commands (bench, optimize, doctor) build a :class:`Document`; the renderers in this package turn
it into Markdown, a self-contained HTML page or rich terminal tables. Nothing here knows what the
numbers mean, so every command's report looks and reads the same.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Literal

Align = Literal["left", "right"]


@dataclass
class Paragraph:
    """One paragraph of plain text."""

    text: str


@dataclass
class Callout:
    """A line that must not be missed: something critical, a warning, or an informational note."""

    text: str
    level: Literal["critical", "warning", "info", "success"] = "warning"


@dataclass
class KeyValues:
    """A two-column list of facts, e.g. the environment a figure was measured on."""

    items: list[tuple[str, str]]
    title: str = ""


@dataclass
class Table:
    """Rows of already formatted cells; ``align`` per column (default: first left, others right)."""

    columns: list[str]
    rows: list[list[str]]
    title: str = ""
    align: list[Align] | None = None
    highlight: list[int] = field(default_factory=list)  # row indices to emphasise (e.g. the recommendation)

    def alignment(self) -> list[Align]:
        if self.align is not None:
            return self.align
        rest: list[Align] = ["right"] * (len(self.columns) - 1)
        return ["left", *rest]


@dataclass
class Figure:
    """A PNG image (bytes) with a title and an optional caption."""

    title: str
    png: bytes
    caption: str = ""

    @property
    def data_uri(self) -> str:
        """The image as a ``data:image/png;base64,…`` URI, so an HTML page needs no other file."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


Block = Paragraph | Callout | KeyValues | Table | Figure


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self


@dataclass
class Document:
    """A whole report: title, a one-line subtitle and sections in reading order."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        """Append a new, empty section and return it."""
        s = Section(title)
        self.sections.append(s)
        return s

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]

    def tables(self) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]
