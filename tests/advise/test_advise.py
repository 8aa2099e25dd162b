"""advise: each decision from measured data with its number, what was ruled out and why, and what is missing."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from cvdeploy.advise import HEADROOM, Constraints, Measured, _batch, advise
from cvdeploy.bundle import Bundle
from cvdeploy.cli.main import run
from cvdeploy.serve.autobatch import MIN_GAIN


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.fixture
def measured(tmp_path: Path) -> Bundle:
    """zoo:n with a second artifact and variants rows as ``cvdeploy optimize`` records them."""
    dst = tmp_path / "zoo-n.cvd"
    shutil.copytree(Bundle.load("zoo:n").path, dst)
    b = Bundle.load(dst)
    ref = b.artifact("onnx-fp32")
    fast = ref.model_copy(deep=True)
    fast.name, fast.precision = "onnx-int8", "int8"
    b.manifest.artifacts.append(fast)
    ref.metrics["variant"] = {"p50_ms": 40.0, "model_p50_ms": 30.0, "cpu": "test CPU", "cores": 2}
    fast.metrics["variant"] = {"p50_ms": 20.0, "model_p50_ms": 12.0, "cpu": "test CPU", "cores": 2}
    fast.metrics["mAP50-95"] = ref.metrics["mAP50-95"] - 0.004  # 0.4 points lost
    b.save()
    return Bundle.load(dst)


def test_without_measurements_it_says_which_runs_would_supply_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["advise", "zoo:n", "--rps", "50", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by = {d["topic"]: d for d in doc["decisions"]}
    assert by["artifact"]["choice"] is None
    assert any(
        m.startswith("latency of onnx-fp32: cvdeploy bench zoo:n --artifact onnx-fp32")
        for m in by["artifact"]["missing"]
    )
    assert by["replicas"]["choice"] is None and "--concurrency" in by["replicas"]["missing"][0]
    assert "--imgsz" in by["input size"]["missing"][0] and "--batch" in by["batch"]["missing"][0]
    assert by["images seen"]["choice"] == "640x640"  # from the bundle's profile.json


def test_the_fastest_accurate_artifact_wins_with_the_numbers(measured: Bundle) -> None:
    adv = advise(measured, Constraints(latency_ms=30))
    art = adv.decision("artifact")
    assert art.choice == "onnx-int8"
    assert "p50 20.0 ms" in art.evidence and "within the 30 ms budget" in art.evidence
    assert {"option": "onnx-fp32", "why": "p50 40.0 ms vs 20.0 ms (2.00x slower)"} in art.ruled_out


def test_an_artifact_losing_too_much_accuracy_is_ruled_out(measured: Bundle) -> None:
    adv = advise(measured, Constraints(max_drop=0.2))
    art = adv.decision("artifact")
    assert art.choice == "onnx-fp32"
    assert any(r["option"] == "onnx-int8" and "loses 0.40 mAP50-95 points" in r["why"] for r in art.ruled_out)


def test_over_budget_asks_for_a_smaller_model(measured: Bundle) -> None:
    adv = advise(measured, Constraints(latency_ms=10))
    assert "OVER the 10 ms budget" in adv.decision("artifact").evidence
    assert adv.decision("model size").choice == "smaller"


@pytest.mark.parametrize(
    ("cons", "where", "ruled"),
    [
        (Constraints(offline=True), "edge", "cloud"),
        (Constraints(private_data=True), "local", "cloud"),
        (Constraints(where="cloud"), "cloud", None),
        (Constraints(rps=10_000), "cloud", "local"),
        (Constraints(), "local", "cloud"),
    ],
)
def test_where(measured: Bundle, cons: Constraints, where: str, ruled: str | None) -> None:
    d = advise(measured, cons).decision("where")
    assert d.choice == where
    if ruled:
        assert any(r["option"] == ruled for r in d.ruled_out)


@pytest.mark.parametrize(("batch4_ips", "choice"), [(15.3, "1"), (14.7 * MIN_GAIN + 0.1, "4")])
def test_a_larger_batch_must_pay_what_the_server_asks(batch4_ips: float, choice: str) -> None:
    """A few per cent between two bench rows is noise: batch 4 at 15.3 vs 14.7 images/s (tripling the
    time per call) stays batch 1, as the server's own measurement would decide."""
    b = Bundle.load("zoo:n")
    hw = (b.contract.input.height, b.contract.input.width)
    rows = [Measured("onnx-fp32", hw, 1, 68.0, 70.0, 14.7, 2, 1, "bench.json"),
            Measured("onnx-fp32", hw, 4, 261.0, 270.0, batch4_ips, 2, 1, "bench.json")]  # fmt: skip
    d, cap = _batch(b, Constraints(), rows, "onnx-fp32", "zoo:n")
    assert d.choice == choice
    if choice == "1":
        assert cap == 14.7 and any("under the 1.1x that batching needs" in r["why"] for r in d.ruled_out)


@pytest.mark.slow
def test_replicas_and_batch_come_from_a_real_bench_report(tmp_path: Path) -> None:
    from cvdeploy.bench import BenchSettings, run_bench

    report = run_bench("zoo:n", BenchSettings(batch=[1, 2], runs=6, warmup=1, num_images=4))
    path = report.save_json(tmp_path / "bench.json")
    adv = advise(Bundle.load("zoo:n"), Constraints(rps=40, latency_ms=10_000), [path])
    batch = adv.decision("batch")
    by_batch = {r.config.batch: r for r in report.results}
    # batch 2 only where it serves MIN_GAIN x the images/s of batch 1 (the server's own threshold)
    best = by_batch[2] if by_batch[2].throughput_ips >= MIN_GAIN * by_batch[1].throughput_ips else by_batch[1]
    assert batch.choice == str(best.config.batch) and f"{best.throughput_ips:.1f} images/s" in batch.evidence
    assert adv.decision("replicas").choice == str(max(1, math.ceil(40 / (best.throughput_ips * HEADROOM))))
    assert (
        adv.decision("artifact").choice == "onnx-fp32" and "bench.json" in adv.decision("artifact").evidence
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "moon"], "--where 'moon': use one of cloud, edge, local"),
        (["--rps", "-3"], "--rps must be positive"),
        (["--bench", "{tmp}/nope.json"], "report not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["advise", "zoo:n", *[a.replace("{tmp}", str(tmp_path)) for a in args]]) == 2
    assert message in one_error_line(capsys)


def test_edge_without_an_edge_format_says_how_to_get_one(measured: Bundle) -> None:
    adv = advise(measured, Constraints(where="edge"))
    assert adv.decision("where").choice == "edge"
    assert any("--format onnx,openvino" in m for m in adv.decision("artifact").missing)
    assert not any(
        "--format" in m for m in advise(measured, Constraints(where="cloud")).decision("artifact").missing
    )


def test_every_suggested_bench_command_is_accepted_by_bench(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What advise tells users to run must parse: each suggested ``cvdeploy bench`` line goes through the
    real CLI up to the point where it would start measuring."""
    import shlex

    import cvdeploy.bench as bench_mod

    class Parsed(Exception):
        pass

    def stop(bundle: Any, settings: Any, **kw: Any) -> None:
        raise Parsed

    monkeypatch.setattr(bench_mod, "run_bench", stop)
    adv = advise(Bundle.load("zoo:n"), Constraints(rps=50), [], ref="zoo:n")
    lines = [m for d in adv.decisions for m in d.missing]
    commands = {line[line.index("cvdeploy bench") :].split(" (")[0].split(",  or")[0] for line in lines
                if "cvdeploy bench" in line}  # fmt: skip
    assert any("--imgsz" in c for c in commands) and any("--concurrency" in c for c in commands)
    for cmd in commands:
        argv = [a.replace("ARTIFACT", "onnx-fp32") for a in shlex.split(cmd)[1:]]
        with pytest.raises(Parsed):
            run(argv)
        assert "error" not in capsys.readouterr().err.lower(), cmd
