"""The security commands: keys, mfa, audit, certs — their --json shapes, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyotp
import pytest

from cvdeploy.cli.main import run


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_keys_create_list_revoke(db_url: str, secrets_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(["keys", "create", "--db", db_url, "--name", "ci", "--role", "predictor",
                          "--models", "shapes,people", "--expires-in", "3600", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"id", "key"} and doc["key"].startswith(f"cvd_{doc['id']}_")
    code, out, err = cli(["keys", "list", "--db", db_url, "--json"], capsys)
    listed = json.loads(out)
    assert code == 0 and [(k["id"], k["role"], k["models"], k["state"]) for k in listed] == [
        (doc["id"], "predictor", ["shapes", "people"], "active")
    ]
    assert doc["key"] not in out
    code, out, err = cli(["keys", "revoke", doc["id"], "--db", db_url], capsys)
    assert code == 0 and "revoked key" in out
    code, out, err = cli(["keys", "list", "--db", db_url], capsys)
    assert code == 0 and "revoked" in out
    code, out, err = cli(["audit", "tail", "--db", db_url, "--json"], capsys)
    rows = json.loads(out)
    assert [(r["action"], r["resource"]) for r in rows] == [("keys.create", f"key:{doc['id']}"),
                                                           ("keys.revoke", f"key:{doc['id']}")]  # fmt: skip
    assert rows[0]["principal"].startswith("cli:")


def test_keys_create_prints_the_key_once_in_plain_mode(
    tmp_path: Path, secrets_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "k.db")
    code, out, err = cli(["keys", "create", "--db", db, "--name", "ops", "--role", "operator"], capsys)
    assert code == 0 and "shown only this once" in err
    token = out.strip().splitlines()[-1]
    assert token.startswith("cvd_")
    code, out, err = cli(["keys", "list", "--db", db], capsys)
    assert token not in out


def test_mfa_enroll_json(tmp_path: Path, secrets_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "m.db")
    _, out, _ = cli(["keys", "create", "--db", db, "--name", "ops", "--role", "operator", "--json"], capsys)
    key = json.loads(out)
    code, out, err = cli(["mfa", "enroll", "--db", db, "--key-id", key["id"], "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"secret", "uri"} and pyotp.parse_uri(doc["uri"]).secret == doc["secret"]
    code, out, err = cli(["mfa", "enroll", "--db", db, "--key-id", "000000000000"], capsys)
    assert code == 2 and "no API key with id" in err and len(err.strip().splitlines()) == 1


def test_audit_verify_exit_codes_and_first_bad_row(
    tmp_path: Path, secrets_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    db = str(tmp_path / "a.db")
    for name in ("a", "b", "c"):
        cli(["keys", "create", "--db", db, "--name", name, "--role", "viewer", "--json"], capsys)
    code, out, err = cli(["audit", "verify", "--db", db], capsys)
    assert code == 0 and "intact" in out and "3 rows" in out
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_log SET principal = 'cli:mallory' WHERE seq = 2")
    code, out, err = cli(["audit", "verify", "--db", db], capsys)
    assert code == 1 and "first bad row 2" in err and "row 2 was edited" in err
    code, out, err = cli(["audit", "verify", "--db", db, "--json"], capsys)
    assert code == 1 and json.loads(out)["first_bad"] == 2


def test_audit_verify_needs_the_servers_public_key(tmp_path: Path, secrets_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    db = str(tmp_path / "a.db")
    cli(["keys", "create", "--db", db, "--name", "a", "--role", "viewer", "--json"], capsys)
    monkeypatch.setenv("CVDEPLOY_SECRETS_DIR", str(tmp_path / "elsewhere"))
    code, _, err = cli(["audit", "verify", "--db", db], capsys)
    assert code == 2 and "no audit verification key" in err


@pytest.mark.parametrize(
    ("db", "message"),
    [("mysql://x/y", "unsupported database URL"), ("{tmp}", "is a folder"), ("{tmp}/no/such/dir/x.db", "does not exist"),
     ("{tmp}/text.db", "not a SQLite database"), ("postgresql://nobody@127.0.0.1:1/x", "cannot connect to the database")],
)  # fmt: skip
def test_bad_db_is_one_line(
    tmp_path: Path, secrets_dir: Path, db: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if message == "cannot connect to the database":
        pytest.importorskip("psycopg")
    (tmp_path / "text.db").write_text("this is not a database, just some text that is long enough " * 20)
    code, _, err = cli(["keys", "list", "--db", db.format(tmp=tmp_path)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_certs_dev(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(["certs", "dev", "-o", str(tmp_path / "c"), "--json"], capsys)
    assert code == 0, err
    files = json.loads(out)
    assert all(Path(p).is_file() for k, p in files.items() if k != "client_name")
    code, out, err = cli(["certs", "dev", "-o", str(tmp_path / "c")], capsys)
    assert code == 2 and "already exists" in err


def test_without_the_security_extra_a_command_names_the_pip_line(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("cryptography", "pyotp", "jwt"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Hide())
        from cvdeploy.cli.main import run
        sys.exit(run(["keys", "create", "--db", {str(tmp_path / "x.db")!r}, "--name", "a", "--role", "viewer"]))
        """
    )
    env = {**__import__("os").environ, "CVDEPLOY_SECRETS_DIR": str(tmp_path / "s")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "cvdeploy[security]"' in lines[0]
