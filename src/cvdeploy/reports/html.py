"""Render a :class:`Document` as one self-contained HTML page: inline CSS, plots as data URIs."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from cvdeploy import __version__
from cvdeploy._deps import require
from cvdeploy.reports.document import Callout, Document, Figure, KeyValues, Paragraph, Table
from cvdeploy.reports.jsonio import write_text
from cvdeploy.reports.markdown import as_document

TEMPLATE = "report.html.j2"


def render_html(doc: Document) -> str:
    """The page as a string; needs ``jinja2`` (``pip install "cvdeploy[reports]"``)."""
    jinja2 = require("jinja2", "HTML reports")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cvdeploy.reports", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template(TEMPLATE)
    return template.render(
        doc=doc,
        kind=_kind,
        generated=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        version=__version__,
    )


def _kind(block: object) -> str:
    for cls, name in (
        (Paragraph, "paragraph"),
        (Callout, "callout"),
        (KeyValues, "keyvalues"),
        (Table, "table"),
        (Figure, "figure"),
    ):
        if isinstance(block, cls):
            return name
    return "unknown"


def write_html(report: Any, path: str | Path) -> Path:
    """Write a :class:`Document` (or anything with ``to_document()``, e.g. a ``BenchReport``) as HTML."""
    return write_text(render_html(as_document(report)), path)
