"""Fixtures for the security tests: a private secrets folder, and the database on SQLite and PostgreSQL.

The PostgreSQL backend runs against a real server: ``CVDEPLOY_TEST_POSTGRES_URL`` when set (a server
CI started), otherwise a throwaway cluster that this file starts on 127.0.0.1 in a temporary folder
with the PostgreSQL binaries found here (``initdb``/``pg_ctl``; as the ``postgres`` user when running
as root, since initdb refuses root). Without binaries the PostgreSQL cases are skipped, saying why —
unless ``CVDEPLOY_REQUIRE_POSTGRES=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

pytest.importorskip("cryptography")
pytest.importorskip("jwt")
pytest.importorskip("pyotp")

from cvdeploy.security.db import Database, open_database
from cvdeploy.security.serverkeys import ServerKeys


@pytest.fixture
def secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private secrets folder for this test (also what the CLI reads through $CVDEPLOY_SECRETS_DIR)."""
    d = tmp_path / "secrets"
    monkeypatch.setenv("CVDEPLOY_SECRETS_DIR", str(d))
    return d


@pytest.fixture
def server_keys(secrets_dir: Path) -> ServerKeys:
    return ServerKeys(secrets_dir)


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    return Path(dirs[-1]) if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CVDEPLOY_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (CVDEPLOY_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A URL of a running PostgreSQL server (admin database), or a skip saying why there is none."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'cvdeploy[postgres]'")
    if os.environ.get("CVDEPLOY_TEST_POSTGRES_URL"):
        yield os.environ["CVDEPLOY_TEST_POSTGRES_URL"]
        return
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) here: apt-get install postgresql")
    base = Path(tempfile.mkdtemp(prefix="cvdeploy-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as the postgres user
        runuser = shutil.which("runuser")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run a throwaway cluster as")
        if runuser is None:
            _unavailable("running as root and 'runuser' is missing to start PostgreSQL as another user")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    port = _free_port()
    data = base / "data"

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stderr[-2000:]}")

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "cvdeploy",
            "-E",
            "UTF8",
            "--no-sync",
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
            "-o", f"-h 127.0.0.1 -p {port} -k {base} -F", "start")  # fmt: skip
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(base, ignore_errors=True)
        _unavailable(f"could not start a throwaway PostgreSQL cluster: {exc}")
    try:
        yield f"postgresql://cvdeploy@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server for one test."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = postgres_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database URL, once per backend."""
    if request.param == "sqlite":
        return str(tmp_path / "cvdeploy.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.close()


class Clock:
    """A settable clock for expiry, TOTP steps and buckets."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()
