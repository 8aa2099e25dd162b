"""Reports shared by bench, optimize and doctor: one :class:`Document`, rendered as JSON, Markdown,
a self-contained HTML page (plots embedded as base64 PNG) or rich terminal tables.

``write_html``, ``write_markdown`` take a Document or any report object with ``to_document()``;
``write_json`` takes anything JSON-like or with ``to_dict()``. Plot helpers live in
:mod:`cvdeploy.reports.plots` (matplotlib is imported only when a plot is drawn).
"""

from __future__ import annotations

from cvdeploy.reports.document import Callout, Document, Figure, KeyValues, Paragraph, Section, Table
from cvdeploy.reports.html import render_html, write_html
from cvdeploy.reports.jsonio import to_jsonable, write_json
from cvdeploy.reports.markdown import as_document, render_markdown, write_markdown

__all__ = [
    "Callout",
    "Document",
    "Figure",
    "KeyValues",
    "Paragraph",
    "Section",
    "Table",
    "as_document",
    "render_html",
    "render_markdown",
    "to_jsonable",
    "write_html",
    "write_json",
    "write_markdown",
]
