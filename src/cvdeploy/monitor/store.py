"""The monitoring tables, in the server's one database (SQLite by default, PostgreSQL by URL).

    monitor_requests   one row per request: time, model, version, status, stage latencies (ms),
                       the image's features and the decoded output's statistics (JSON), sampled or not
    monitor_samples    the stage I/O of a sampled request: thumbnail (base64 JPEG; NULL with --redact),
                       the input tensor's summary, the raw outputs' summary, the decoded result (JSON)
    monitor_models     each model version the server served: bundle, artifact, classes and its reference
                       profile, so that a report needs the database only

The tables are a :class:`~cvdeploy.security.db.Schema` registered with the security database, so
``--db`` holds keys, audit log and monitoring together. Times are UNIX seconds (UTC).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cvdeploy.security.db import Database, Schema, open_database, register_schema

__all__ = ["MONITOR_SCHEMA", "ModelRecord", "MonitorStore", "RequestRow", "SampleRow"]

STAGES = ("preprocess", "queue", "inference", "postprocess", "total")

MONITOR_SCHEMA = register_schema(
    Schema(
        "monitor",
        (
            """CREATE TABLE IF NOT EXISTS monitor_requests (
                id TEXT PRIMARY KEY,
                time DOUBLE PRECISION NOT NULL,
                model TEXT NOT NULL,
                version BIGINT,
                kind TEXT NOT NULL,
                status BIGINT NOT NULL,
                request_id TEXT,
                preprocess_ms DOUBLE PRECISION,
                queue_ms DOUBLE PRECISION,
                inference_ms DOUBLE PRECISION,
                postprocess_ms DOUBLE PRECISION,
                total_ms DOUBLE PRECISION,
                features TEXT,
                outputs TEXT,
                sampled BIGINT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS monitor_requests_model_time ON monitor_requests (model, time)",
            "CREATE INDEX IF NOT EXISTS monitor_requests_time ON monitor_requests (time)",
            """CREATE TABLE IF NOT EXISTS monitor_samples (
                id TEXT PRIMARY KEY,
                time DOUBLE PRECISION NOT NULL,
                model TEXT NOT NULL,
                version BIGINT,
                request_id TEXT,
                width BIGINT,
                height BIGINT,
                redacted BIGINT NOT NULL,
                thumbnail TEXT,
                tensor TEXT,
                raw_output TEXT,
                result TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS monitor_samples_model_time ON monitor_samples (model, time)",
            "CREATE INDEX IF NOT EXISTS monitor_samples_time ON monitor_samples (time)",
            """CREATE TABLE IF NOT EXISTS monitor_models (
                model TEXT NOT NULL,
                version BIGINT NOT NULL,
                seen DOUBLE PRECISION NOT NULL,
                bundle TEXT,
                artifact TEXT,
                task TEXT,
                classes TEXT,
                profile TEXT,
                PRIMARY KEY (model, version)
            )""",
        ),
    )
)

_REQ_COLS = (
    "id, time, model, version, kind, status, request_id, preprocess_ms, queue_ms, inference_ms, "
    "postprocess_ms, total_ms, features, outputs, sampled"
)
_SAMPLE_COLS = "id, time, model, version, request_id, width, height, redacted, tensor, raw_output, result"
_SAMPLE_INSERT = (
    "id, time, model, version, request_id, width, height, redacted, thumbnail, tensor, raw_output, result"
)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)


def _loads(text: Any) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass
class RequestRow:
    """One request as monitored. ``latency_ms`` maps stage → milliseconds (``total`` included)."""

    id: str
    time: float
    model: str
    version: int | None
    kind: str  # image | tensor | error
    status: int
    request_id: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] | None = None
    outputs: dict[str, Any] | None = None
    sampled: bool = False

    def params(self) -> tuple[Any, ...]:
        lat = [_num(self.latency_ms.get(s)) for s in STAGES]
        return (self.id, self.time, self.model, self.version, self.kind, self.status, self.request_id, *lat,
                _dumps(self.features), _dumps(self.outputs), int(self.sampled))  # fmt: skip

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> RequestRow:
        lat = {s: float(v) for s, v in zip(STAGES, r[7:12], strict=True) if v is not None}
        return cls(str(r[0]), float(r[1]), str(r[2]), None if r[3] is None else int(r[3]), str(r[4]), int(r[5]),
                   r[6], lat, _loads(r[12]), _loads(r[13]), bool(r[14]))  # fmt: skip


@dataclass
class SampleRow:
    """A sampled request's stage I/O. ``thumbnail`` is base64 JPEG, or None (redacted or not loaded)."""

    id: str
    time: float
    model: str
    version: int | None
    request_id: str | None
    width: int | None
    height: int | None
    redacted: bool
    tensor: dict[str, Any] | None = None
    raw_output: list[dict[str, Any]] | None = None
    result: dict[str, Any] | None = None
    thumbnail: str | None = None

    def params(self) -> tuple[Any, ...]:
        return (self.id, self.time, self.model, self.version, self.request_id, self.width, self.height,
                int(self.redacted), None if self.redacted else self.thumbnail, _dumps(self.tensor),
                _dumps(self.raw_output), _dumps(self.result))  # fmt: skip

    @classmethod
    def from_row(cls, r: Sequence[Any], thumbnail: str | None = None) -> SampleRow:
        return cls(str(r[0]), float(r[1]), str(r[2]), None if r[3] is None else int(r[3]), r[4],
                   None if r[5] is None else int(r[5]), None if r[6] is None else int(r[6]), bool(r[7]),
                   _loads(r[8]), _loads(r[9]), _loads(r[10]), thumbnail)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the thumbnail (the console fetches it by id)."""
        return {"id": self.id, "time": self.time, "model": self.model, "version": self.version,
                "request_id": self.request_id, "width": self.width, "height": self.height,
                "redacted": self.redacted, "tensor": self.tensor, "raw_output": self.raw_output,
                "result": self.result}  # fmt: skip


@dataclass
class ModelRecord:
    """A model version the server served, with its reference profile (None when the bundle has none)."""

    model: str
    version: int
    seen: float
    bundle: str | None = None
    artifact: str | None = None
    task: str | None = None
    classes: list[str] = field(default_factory=list)
    profile: dict[str, Any] | None = None


class MonitorStore:
    """Reads and writes the monitoring tables of one :class:`~cvdeploy.security.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, url: str) -> MonitorStore:
        """Open (creating the tables if missing) the database at ``url``."""
        return cls(open_database(url))

    def close(self) -> None:
        self.db.close()

    # ---- writing -------------------------------------------------------------------------------
    def record_model(self, rec: ModelRecord) -> None:
        """Remember a served model version (replacing what was stored for the same name and version)."""
        with self.db.transaction(write=True) as tx:
            tx.execute(
                "INSERT INTO monitor_models (model, version, seen, bundle, artifact, task, classes, profile) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model, version) DO UPDATE SET seen = excluded.seen, "
                "bundle = excluded.bundle, artifact = excluded.artifact, task = excluded.task, "
                "classes = excluded.classes, profile = excluded.profile",
                (rec.model, rec.version, rec.seen, rec.bundle, rec.artifact, rec.task, _dumps(rec.classes),
                 _dumps(rec.profile)),
            )  # fmt: skip

    def insert(self, requests: Sequence[RequestRow], samples: Sequence[SampleRow] = ()) -> None:
        """Write a batch of rows in one transaction."""
        if not requests and not samples:
            return
        with self.db.transaction(write=True) as tx:
            for r in requests:
                tx.execute(
                    f"INSERT INTO monitor_requests ({_REQ_COLS}) VALUES ({', '.join('?' * 15)})", r.params()
                )
            for s in samples:
                tx.execute(
                    f"INSERT INTO monitor_samples ({_SAMPLE_INSERT}) VALUES ({', '.join('?' * 12)})",
                    s.params(),
                )

    def prune(self, before: float) -> tuple[int, int]:
        """Delete requests and samples older than ``before``; → (requests, samples) deleted."""
        with self.db.transaction(write=True) as tx:
            n_req = tx.execute("DELETE FROM monitor_requests WHERE time < ?", (before,)).rowcount
            n_smp = tx.execute("DELETE FROM monitor_samples WHERE time < ?", (before,)).rowcount
        return max(0, n_req), max(0, n_smp)

    # ---- reading -------------------------------------------------------------------------------
    def requests(
        self, model: str | None, since: float, until: float | None = None, version: int | None = None,
        limit: int | None = None,
    ) -> list[RequestRow]:  # fmt: skip
        """Rows with ``since <= time < until`` (oldest first); with ``limit``, the latest ``limit`` of them."""
        where, params = ["time >= ?"], [cast(Any, since)]
        if until is not None:
            where.append("time < ?")
            params.append(until)
        if model is not None:
            where.append("model = ?")
            params.append(model)
        if version is not None:
            where.append("version = ?")
            params.append(version)
        sql = f"SELECT {_REQ_COLS} FROM monitor_requests WHERE {' AND '.join(where)}"
        if limit is not None:
            rows = self.db.query(sql + f" ORDER BY time DESC LIMIT {int(limit)}", params)
            rows.reverse()
        else:
            rows = self.db.query(sql + " ORDER BY time", params)
        return [RequestRow.from_row(r) for r in rows]

    def samples(self, model: str | None = None, limit: int = 12, since: float = 0.0) -> list[SampleRow]:
        """The latest sampled requests (newest first), without thumbnails."""
        where, params = ["time >= ?"], [cast(Any, since)]
        if model is not None:
            where.append("model = ?")
            params.append(model)
        rows = self.db.query(
            f"SELECT {_SAMPLE_COLS} FROM monitor_samples WHERE {' AND '.join(where)} "
            f"ORDER BY time DESC LIMIT {max(0, int(limit))}",
            params,
        )
        return [SampleRow.from_row(r) for r in rows]

    def sample(self, sample_id: str) -> SampleRow | None:
        """One sample with its thumbnail."""
        rows = self.db.query(
            f"SELECT {_SAMPLE_COLS}, thumbnail FROM monitor_samples WHERE id = ?", (sample_id,)
        )
        return SampleRow.from_row(rows[0], rows[0][11]) if rows else None

    def models(self) -> list[ModelRecord]:
        rows = self.db.query(
            "SELECT model, version, seen, bundle, artifact, task, classes, profile FROM monitor_models "
            "ORDER BY model, version"
        )
        return [ModelRecord(str(r[0]), int(r[1]), float(r[2]), r[3], r[4], r[5], _loads(r[6]) or [],
                            _loads(r[7])) for r in rows]  # fmt: skip

    def model(self, name: str, version: int | None = None) -> ModelRecord | None:
        """A stored model version (the highest when ``version`` is None)."""
        found = [m for m in self.models() if m.model == name and (version is None or m.version == version)]
        return found[-1] if found else None

    def span(self, model: str | None = None) -> tuple[float, float] | None:
        """The first and last request times, or None when there is none."""
        sql = "SELECT MIN(time), MAX(time) FROM monitor_requests"
        rows = self.db.query(sql + (" WHERE model = ?" if model else ""), (model,) if model else ())
        if not rows or rows[0][0] is None:
            return None
        return float(rows[0][0]), float(rows[0][1])

    def status_counts(self, model: str | None, since: float, until: float) -> dict[int, int]:
        """Requests per status with ``since <= time < until`` (exact, whatever the volume)."""
        sql = "SELECT status, COUNT(*) FROM monitor_requests WHERE time >= ? AND time < ?"
        params: list[Any] = [since, until]
        if model is not None:
            sql += " AND model = ?"
            params.append(model)
        return {int(r[0]): int(r[1]) for r in self.db.query(sql + " GROUP BY status", params)}

    def model_names(self, since: float = 0.0) -> list[str]:
        """Models with requests since ``since`` (or recorded as served), sorted."""
        a = {
            str(r[0])
            for r in self.db.query("SELECT DISTINCT model FROM monitor_requests WHERE time >= ?", (since,))
        }
        return sorted(a | {m.model for m in self.models()})

    def counts(self) -> tuple[int, int]:
        """(requests, samples) stored."""
        a = self.db.query("SELECT COUNT(*) FROM monitor_requests")[0][0]
        b = self.db.query("SELECT COUNT(*) FROM monitor_samples")[0][0]
        return int(a), int(b)
