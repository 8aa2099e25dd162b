"""The tamper-evident audit log: append-only, hash-chained, every row and the chain head signed.

Row ``n`` stores its fields, ``prev_hash`` (row ``n−1``'s hash; 64 zeros for row 1) and
``hash = SHA-256(canonical JSON of [n, time, action, resource, principal, outcome, details,
request_id, prev_hash])``, plus an Ed25519 signature of that hash by the server's audit key
(:mod:`cvdeploy.security.serverkeys`, kept outside the database). ``audit_head`` holds the last
row's number and hash, signed too. :meth:`AuditLog.verify` walks the rows in order and names the
first bad one:

    edited row       its recomputed hash differs from the stored one
    deleted row      a gap in the numbering, or the next row's prev_hash no longer matches
    inserted row     a number out of sequence, a broken prev_hash link, or a signature that fails
    reordered rows   the row number is inside the hash, so swapped contents fail their hashes
    rewritten chain  hashes can be recomputed by anyone, signatures only with the private key
    truncated tail   the signed head names a row that is no longer there

What it cannot catch: someone holding the private key (keep the secrets folder private), or a
rollback of the whole database *and* its head to an older consistent copy — ship
``cvdeploy audit tail --json`` (or the head) to an external log to anchor it.

Nothing secret is ever written: the server passes only principal ids, model names and outcomes, and
:func:`scrub` replaces anything that looks like a credential (by field name or by shape) before a row
is hashed. :class:`AuditSink` is the server's :class:`~cvdeploy.serve.security.EventSink`: ``emit``
only enqueues, a background thread writes batches, so audit writes never hold up inference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import cvdeploy.security.schema  # noqa: F401  (registers the tables)
from cvdeploy.background import take_batch
from cvdeploy.security.db import Database
from cvdeploy.security.serverkeys import ServerKeys
from cvdeploy.serve.security import Event

__all__ = ["AuditLog", "AuditSink", "Verification", "scrub"]

log = logging.getLogger("cvdeploy.security.audit")

GENESIS = "0" * 64
Outcome = Literal["success", "failure"]
_SECRET_FIELD = re.compile(
    r"(token|secret|passw|otp|authori[sz]ation|api[_-]?key|^key$|credential|cookie|private)", re.I
)
_SECRET_VALUE = re.compile(r"(cvd_[0-9a-f]{12}_|^ey[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.|^bearer\s)", re.I)
REDACTED = "[redacted]"


def scrub(value: Any, field: str = "") -> Any:
    """``value`` with every credential-looking field or string replaced by ``[redacted]``."""
    if field and _SECRET_FIELD.search(field):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str) and _SECRET_VALUE.search(value):
        return REDACTED
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(seq: int, fields: Sequence[Any], prev_hash: str) -> str:
    """The hash of row ``seq``: ``fields`` = (time, action, resource, principal, outcome, details, request_id)."""
    return hashlib.sha256(_canonical([seq, *fields, prev_hash]).encode("utf-8")).hexdigest()


def _row_message(h: str) -> bytes:
    return b"cvdeploy-audit-row\x00" + h.encode()


def _head_message(seq: int, h: str) -> bytes:
    return f"cvdeploy-audit-head\x00{seq}:{h}".encode()


@dataclass(frozen=True)
class Verification:
    """The outcome of :meth:`AuditLog.verify`: ``first_bad`` is the first bad row's number, if any."""

    ok: bool
    rows: int
    first_bad: int | None = None
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "first_bad": self.first_bad, "problem": self.problem}


_COLUMNS = (
    "seq, time, action, resource, principal, outcome, details, request_id, prev_hash, hash, key_id, signature"
)


class AuditLog:
    """Append, verify and read the audit log of one database."""

    def __init__(self, db: Database, server_keys: ServerKeys) -> None:
        self.db = db
        self.keys = server_keys

    # ---- writing -------------------------------------------------------------------------------
    def append(self, events: Sequence[Event]) -> int:
        """Write ``events`` as consecutive rows in one transaction; returns the last row number."""
        if not events:
            return 0
        key_id = self.keys.key_id
        with self.db.transaction(write=True) as tx:
            tx.serialize("cvdeploy-audit")
            head = tx.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            seq, prev = (int(head[0]), str(head[1])) if head else (0, GENESIS)
            for ev in events:
                seq += 1
                fields = (
                    ev.time,
                    ev.action,
                    ev.resource,
                    ev.principal,
                    ev.outcome,
                    _canonical(scrub(dict(ev.details))),
                    ev.request_id,
                )
                h = row_hash(seq, fields, prev)
                tx.execute(
                    f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, *fields, prev, h, key_id, self.keys.sign(_row_message(h))),
                )
                prev = h
            head_sig = self.keys.sign(_head_message(seq, prev))
            if head:
                tx.execute(
                    "UPDATE audit_head SET seq = ?, hash = ?, key_id = ?, signature = ? WHERE id = 1",
                    (seq, prev, key_id, head_sig),
                )
            else:
                tx.execute(
                    "INSERT INTO audit_head (id, seq, hash, key_id, signature) VALUES (1, ?, ?, ?, ?)",
                    (seq, prev, key_id, head_sig),
                )
        return seq

    def emit(self, event: Event) -> None:
        """Append one event now (synchronous; the server uses :class:`AuditSink` instead)."""
        self.append([event])

    def record(
        self,
        action: str,
        resource: str,
        principal: str,
        outcome: str = "success",
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> int:
        """Append one event at once (the CLI's key and MFA changes)."""
        ev = Event(action, resource, principal, cast(Outcome, outcome), dict(details or {}), request_id)
        return self.append([ev])

    # ---- reading -------------------------------------------------------------------------------
    def _rows(self, chunk: int = 5000) -> Iterator[tuple[Any, ...]]:
        last = 0
        while True:
            rows = self.db.query(
                f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT {int(chunk)}", (last,)
            )
            yield from rows
            if len(rows) < chunk:
                return
            last = int(rows[-1][0])

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` rows, oldest first, as dictionaries (details parsed)."""
        rows = self.db.query(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT {max(0, int(n))}")
        out = []
        for r in reversed(rows):
            try:
                details = json.loads(r[6])
            except ValueError:
                details = r[6]
            out.append({"seq": int(r[0]), "time": r[1], "action": r[2], "resource": r[3], "principal": r[4],
                        "outcome": r[5], "details": details, "request_id": r[7], "hash": r[9]})  # fmt: skip
        return out

    def verify(self) -> Verification:
        """Check every row's hash, link and signature, then the signed head (see the module docstring)."""
        expected, prev, count = 1, GENESIS, 0
        for r in self._rows():
            seq = int(r[0])
            fields, prev_hash, h, signature = r[1:8], str(r[8]), str(r[9]), str(r[11])
            if seq != expected:
                return Verification(
                    False, count, expected,
                    f"row {expected} is missing: row {expected - 1 if expected > 1 else 'start'} is followed by "
                    f"row {seq} (rows deleted, or inserted with a wrong number)",
                )  # fmt: skip
            if row_hash(seq, fields, prev_hash) != h:
                return Verification(
                    False, count, seq, f"row {seq} was edited: its contents do not match its hash"
                )
            if prev_hash != prev:
                return Verification(
                    False, count, seq,
                    f"row {seq} does not follow row {seq - 1}: its previous-row hash differs (rows deleted, "
                    "inserted or reordered)",
                )  # fmt: skip
            if not self.keys.verify(_row_message(h), signature):
                return Verification(
                    False, count, seq,
                    f"row {seq}: its signature does not verify with the server's audit key (the chain was rewritten "
                    "from here)",
                )  # fmt: skip
            prev, expected, count = h, expected + 1, count + 1
        head = self.db.query("SELECT seq, hash, signature FROM audit_head WHERE id = 1")
        if not head:
            if count:
                return Verification(False, count, 1, "the signed chain head is missing")
            return Verification(True, 0)
        head_seq, head_hash, head_sig = int(head[0][0]), str(head[0][1]), str(head[0][2])
        if not self.keys.verify(_head_message(head_seq, head_hash), head_sig):
            return Verification(False, count, head_seq, "the chain head's signature does not verify")
        if head_seq != count:
            if head_seq > count:
                return Verification(
                    False, count, count + 1,
                    f"the log ends at row {count} but the signed head is row {head_seq}: rows deleted at the end",
                )  # fmt: skip
            return Verification(
                False,
                count,
                head_seq + 1,
                f"rows after the signed head (row {head_seq}) were added without the key",
            )
        if head_hash != prev:
            return Verification(False, count, count, f"row {count} differs from the signed chain head")
        return Verification(True, count)


class AuditSink:
    """An :class:`~cvdeploy.serve.security.EventSink` that writes to an :class:`AuditLog` in the background.

    ``emit`` never blocks and never raises: events go on a bounded queue, a thread writes them in
    batches (one transaction, one head signature per batch). When the queue is full the event is
    counted, logged, and a row recording how many were dropped is written as soon as there is room.
    """

    def __init__(self, audit: AuditLog, max_queue: int = 10_000, batch: int = 256) -> None:
        self.audit = audit
        self.batch = batch
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=max_queue)
        self._dropped = 0
        self._pending = 0  # emitted and not yet written (or given up on)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="cvdeploy-audit", daemon=True)
        self._thread.start()

    def emit(self, event: Event) -> None:
        with self._cond:
            self._pending += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._cond:
                self._pending -= 1
                self._dropped += 1
                self._cond.notify_all()
            log.error("audit queue full: event %s %s dropped", event.action, event.resource)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            events, stop = take_batch(self._queue, first, self.batch)
            with self._cond:
                dropped, self._dropped = self._dropped, 0
            extra = (
                [Event("audit", "audit-log", "system", "failure", {"dropped_events": dropped})]
                if dropped
                else []
            )
            try:
                self.audit.append(events + extra)
            except Exception:  # the database is down: keep serving, say so loudly, count the loss
                log.exception("audit log write failed; %d events lost", len(events))
                with self._cond:
                    self._dropped += len(events) + dropped
            with self._cond:
                self._pending -= len(events)
                self._cond.notify_all()
            if stop:
                return

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every emitted event is written (True) or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the writer thread."""
        self._queue.put(None)
        self._thread.join(timeout)
