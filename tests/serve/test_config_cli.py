"""serve.yaml validation and the ``cvdeploy serve`` command's one-line errors (registered on its own app,
as ``cvdeploy.cli.main`` does)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cvdeploy.cli.serve_cmd import register
from cvdeploy.errors import ConfigError
from cvdeploy.serve.config import ServeConfig, load_config, parse_config

FULL = {
    "server": {"host": "127.0.0.1", "port": 9000, "workers": 2, "log_format": "text"},
    "limits": {"max_body_bytes": 1_000_000, "max_image_pixels": 4_000_000},
    "repository": {"max_loaded_versions": 3},
    "defaults": {"max_batch_size": 4, "max_queue_delay_ms": 5, "instances": 2},
    "models": {"tiny": {"artifact": "openvino-fp32", "max_batch_size": 16, "timeout_s": 2}},
}


def test_model_settings_overlay_defaults_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(FULL))
    cfg = load_config(path)
    tiny, other = cfg.model("tiny"), cfg.model("other")
    assert (tiny.artifact, tiny.max_batch_size, tiny.max_queue_delay_ms, tiny.instances, tiny.timeout_s) == (
        "openvino-fp32", 16, 5.0, 2, 2.0,
    )  # fmt: skip
    assert (other.artifact, other.max_batch_size) == (None, 4)
    flagged = cfg.with_overrides(max_batch_size=1, artifact=None)
    assert flagged.model("tiny").max_batch_size == 1 and flagged.model("tiny").artifact == "openvino-fp32"
    assert flagged.model("other").max_batch_size == 1
    assert ServeConfig().model("x").max_batch_size == 8


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"defaults": {"max_batch": 4}}, "unknown key 'defaults.max_batch'; allowed here: artifact"),
        ({"models": {"tiny": {"instance": 2}}}, "unknown key 'models.tiny.instance'; allowed here: artifact"),
        (
            {"serverr": {}},
            "unknown key 'serverr'; allowed here: defaults, limits, models, monitor, repository, security, server",
        ),
        ({"limits": {"max_body_bytes": 10}}, "limits.max_body_bytes"),
        ({"defaults": {"queue_size": 0}}, "defaults.queue_size"),
        ({"server": {"platform": "aws"}}, "server.platform"),
        ({"defaults": {"batching": "sometimes"}}, "defaults.batching"),
        (["a", "list"], "must be a mapping"),
    ],
)
def test_bad_configs_are_refused_with_one_line(raw: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        parse_config(raw, "serve.yaml")
    assert "\n" not in str(err.value)


def test_bad_overrides_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_batch_size"):
        ServeConfig().with_overrides(max_batch_size=-1)


runner = CliRunner()
cli = typer.Typer(add_completion=False)
cli.callback()(lambda: None)  # a group, so the command keeps its name: ``serve ...``
register(cli)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["{bundle}", "--port", "http"], "--port 'http' is not a whole number"),
        (["{bundle}", "--port", "70000"], "--port 70000 must be between 0 and 65535"),
        (["{bundle}", "--max-batch-size", "-2"], "--max-batch-size -2 must be between"),
        (["{bundle}", "--platform", "aws"], "unknown platform 'aws'"),
        (["{bundle}", "--config", "{bad_yaml}"], "unknown key 'defaults.max_batch'"),
        (["{bundle}", "--config", "/no/such.yaml"], "config file not found"),
        (["{bundle}", "--artifact", "onnx-int8", "--check"], "has no artifact 'onnx-int8'"),
        (["/no/such/bundle.cvd", "--check"], "bundle not found"),
        (["{bundle}", "--log-level", "loud"], "--log-level 'loud'"),
        (["{bundle}", "--batching", "maybe"], "--batching 'maybe': use auto, on or off"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tiny_bundle_path: Path, tmp_path: Path, args: list[str],
                                              match: str) -> None:  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  max_batch: 4\n")
    argv = ["serve", *(a.format(bundle=tiny_bundle_path, bad_yaml=bad) for a in args)]
    result = runner.invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert match in " ".join(result.output.split())
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_cli_check_loads_and_shows_what_would_be_served(tiny_bundle_path: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump({"models": {"tiny": {"max_batch_size": 2, "instances": 2}}}))
    result = runner.invoke(
        cli, ["serve", str(tiny_bundle_path), "--config", str(cfg), "--check", "--batching", "on"]
    )
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and "≤2" in result.output and "onnx-fp32" in result.output
    auto = runner.invoke(cli, ["serve", str(tiny_bundle_path), "--config", str(cfg), "--check"])
    assert auto.exit_code == 0 and "(measured" in auto.output  # batching: auto shows its measured gain


def test_cli_config_for_a_model_not_served_is_refused(tiny_bundle_path: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(yaml.safe_dump({"models": {"other": {"max_batch_size": 2}}}))
    result = runner.invoke(cli, ["serve", str(tiny_bundle_path), "--config", str(cfg), "--check"])
    assert result.exit_code == 2 and "sets up model 'other'" in result.output
