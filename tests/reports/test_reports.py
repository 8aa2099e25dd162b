"""The shared report renderers: Markdown, self-contained HTML, JSON, terminal tables and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cvdeploy.reports import (
    Callout,
    Document,
    Figure,
    KeyValues,
    Paragraph,
    Table,
    plots,
    render_html,
    render_markdown,
    to_jsonable,
    write_html,
    write_json,
    write_markdown,
)
from cvdeploy.reports.terminal import print_document, rich_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def png() -> bytes:
    return plots.distribution({"a": [1.0, 2.0, 3.0], "b": [2.0, 2.5, 4.0]})


@pytest.fixture
def doc(png: bytes) -> Document:
    d = Document("Report <title>", "one line")
    s = d.section("Summary")
    s.add(Callout("provider fell back to CPU", "warning"), Paragraph("x < y & z"))
    s.add(
        Table(
            ["name", "ms"],
            [["a|b", "1.00"], ["<script>alert(1)</script>", "2.00"]],
            title="times",
            highlight=[1],
        )
    )
    d.section("Environment").add(KeyValues([("CPU", "Zen 3"), ("GPU", "none")]))
    d.section("Plots").add(Figure("Latency", png, "caption here"))
    return d


@pytest.mark.parametrize(
    "draw",
    [
        lambda: plots.distribution({"x": list(np.linspace(1, 2, 50))}),
        lambda: plots.stacked_bars(["a", "b"], {"decode": [1.0, 2.0], "infer": [5.0, 4.0]}),
        lambda: plots.pareto(
            [("a", 10.0, 0.5), ("b", 20.0, 0.6), ("c", 25.0, 0.55)], ["a", "b"], "b", 22.0, 0.5
        ),
        lambda: plots.heatmap([[1.0, None], [3.0, 4.0]], ["r1", "r2"], ["c1", "c2"]),
    ],
)
def test_plots_are_png(draw) -> None:  # type: ignore[no-untyped-def]
    data = draw()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000


def test_markdown_has_tables_callouts_and_a_figure_note(doc: Document) -> None:
    text = render_markdown(doc)
    assert text.startswith("# Report <title>\n")
    assert "> **Warning:** provider fell back to CPU" in text
    assert "| name | ms |\n|:---|---:|\n| a\\|b | 1.00 |" in text
    assert "| **<script>alert(1)</script>** | **2.00** |" in text  # highlighted row
    assert "| **CPU** | Zen 3 |" in text
    assert "_Figure: Latency (in the HTML report)._" in text


def test_markdown_with_figure_files(doc: Document, tmp_path: Path) -> None:
    path = write_markdown(doc, tmp_path / "r.md", figures_dir=tmp_path / "r_files")
    assert "![Latency](r_files/figure1.png)" in path.read_text()
    assert (tmp_path / "r_files" / "figure1.png").read_bytes().startswith(PNG_MAGIC)


def test_html_is_self_contained_and_escaped(doc: Document, png: bytes, tmp_path: Path) -> None:
    page = render_html(doc)
    assert page.startswith("<!DOCTYPE html>")
    assert doc.figures()[0].data_uri in page
    assert doc.figures()[0].data_uri.startswith("data:image/png;base64,")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "x &lt; y &amp; z" in page
    assert 'class="callout warning"' in page and 'class="highlight"' in page
    assert "<link" not in page and 'src="http' not in page  # nothing fetched from elsewhere
    written = write_html(doc, tmp_path / "sub" / "r.html").read_text()
    assert written.startswith("<!DOCTYPE html>") and doc.figures()[0].data_uri in written


def test_writers_accept_report_objects_and_refuse_others(doc: Document, tmp_path: Path) -> None:
    class Report:
        def to_document(self) -> Document:
            return doc

    assert "Report &lt;title&gt;" in write_html(Report(), tmp_path / "a.html").read_text()
    with pytest.raises(TypeError, match="no to_document"):
        write_markdown(object(), tmp_path / "b.md")


def test_json_handles_numpy_and_non_finite(tmp_path: Path) -> None:
    obj = {"a": np.float32(1.5), "b": np.arange(3), "c": math.nan, "d": (1, Path("x")), "e": np.bool_(True)}
    assert to_jsonable(obj) == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [1, "x"], "e": True}
    path = write_json(obj, tmp_path / "deep" / "r.json")
    assert json.loads(path.read_text())["b"] == [0, 1, 2]
    assert not list(tmp_path.glob("deep/*.tmp"))


def test_terminal_rendering(doc: Document) -> None:
    from rich.console import Console

    console = Console(record=True, width=120)
    print_document(doc, console)
    text = console.export_text()
    assert "warning: provider fell back to CPU" in text
    assert "a|b" in text and "CPU: Zen 3" in text
    assert "(figure: Latency" in text
    t = rich_table(doc.tables()[0])
    assert [c.header for c in t.columns] == ["name", "ms"]
    assert t.row_count == 2


def test_a_critical_callout_is_called_critical_everywhere() -> None:
    from rich.console import Console

    d = Document("Doctor")
    d.section("Verdict").add(Callout("1 critical finding(s)", "critical"))
    assert "> **Critical:** 1 critical finding(s)" in render_markdown(d)
    assert '<div class="callout critical">1 critical finding(s)</div>' in render_html(d)
    console = Console(record=True, width=120)
    print_document(d, console)
    out = console.export_text()
    assert "critical: 1 critical finding(s)" in out and "warning:" not in out
