"""The doctor's report: ranked findings and every check's verdict, as JSON or as a :class:`Document`.

JSON (``--json``): ``{"findings": [{"id", "severity", "title", "evidence", "fix", "score"}, ...],
"checks": [{"id", "title", "verdict", "summary", "findings", "seconds", "details"}, ...]}``, findings
most likely cause first. The Document renders as terminal tables or a self-contained HTML page
with the checks' plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cvdeploy.doctor.findings import CheckResult, Finding
from cvdeploy.reports.document import Callout, Document, Figure, KeyValues, Paragraph, Table

_VERDICT = {"ok": "ok", "finding": "FINDING", "skipped": "skipped", "failed": "failed"}


@dataclass
class DoctorReport:
    findings: list[Finding]
    checks: list[CheckResult]
    context: dict[str, str] = field(default_factory=dict)  # bundle, deployment, images, reference, seconds

    @property
    def critical(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "critical"]

    @property
    def top(self) -> Finding | None:
        return self.findings[0] if self.findings else None

    @property
    def exit_code(self) -> int:
        """0 when nothing critical was found, 1 when something was."""
        return 1 if self.critical else 0

    def finding(self, finding_id: str) -> Finding | None:
        return next((f for f in self.findings if f.id == finding_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.to_dict() for f in self.findings],
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_document(self, figures: bool = True) -> Document:
        """The report as a Document; ``figures`` draws the checks' plots (seconds; the terminal skips them)."""
        ctx = self.context
        doc = Document(f"cvdeploy doctor — {ctx.get('bundle', '')}",
                       f"{ctx.get('deployment', '')} · {ctx.get('images', '')} images · {ctx.get('seconds', '')} s")  # fmt: skip
        head = doc.section("Verdict")
        if self.critical:
            top = self.critical[0] if self.top is None or self.top.severity != "critical" else self.top
            head.add(Callout(f"{len(self.critical)} critical finding(s). Most likely cause: {top.title} "
                             f"({top.id}). Fix: {top.fix}", "critical"))  # fmt: skip
        elif self.findings:
            head.add(Callout(f"nothing critical; {len(self.findings)} finding(s) worth a look", "info"))
        else:
            head.add(Callout("nothing found: every check passed", "success"))
        head.add(KeyValues([(k, v) for k, v in ctx.items() if v]))
        if self.findings:
            sec = doc.section("Findings (most likely cause first)")
            sec.add(Table(["#", "severity", "id", "finding", "score"],
                          [[str(i + 1), f.severity, f.id, f.title, f"{f.score:.2f}"] for i, f in enumerate(self.findings)],
                          align=["right", "left", "left", "left", "right"],
                          highlight=[i for i, f in enumerate(self.findings) if f.severity == "critical"]))  # fmt: skip
            for i, f in enumerate(self.findings):
                sec.add(Paragraph(f"{i + 1}. {f.id} — evidence: {f.evidence}"))
                sec.add(Callout(f"fix: {f.fix}", "info"))
        sec = doc.section("Checks")
        sec.add(Table(["check", "verdict", "summary", "s"],
                      [[c.title, _VERDICT[c.verdict], c.summary, f"{c.seconds:.1f}"] for c in self.checks],
                      align=["left", "left", "left", "right"],
                      highlight=[i for i, c in enumerate(self.checks) if c.verdict == "finding"]))  # fmt: skip
        for c in self.checks:
            figs: list[Figure] = [f for draw in c.figures for f in draw()] if figures else []
            if figs or c.tables:
                s = doc.section(c.title)
                s.add(Paragraph(c.summary))
                s.add(*c.tables, *figs)
        return doc
