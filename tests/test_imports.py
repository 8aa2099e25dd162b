"""With only the core dependencies, every module imports (or says which extra it needs) and every
``--help`` works. Optional packages are hidden from a fresh interpreter by an import hook."""

from __future__ import annotations

import subprocess
import sys
import textwrap

OPTIONAL = [
    "torch",
    "torchvision",
    "openvino",
    "nncf",
    "ultralytics",
    "onnxslim",
    "faster_coco_eval",
    "skimage",
    "sklearn",
    "matplotlib",
    "jinja2",
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "tritonclient",
    "scipy",
    "torch_pruning",
    "multipart",
    "python_multipart",
    "cryptography",
    "jwt",
    "pyotp",
    "psycopg",
    "ai_edge_litert",
    "litert_torch",
    "ai_edge_quantizer",
    "tensorrt",
    "ray",
]

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys, json
    HIDDEN = set(%r)

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    import cvdeploy
    from cvdeploy.errors import MissingDependency
    report = {"ok": [], "needs_extra": [], "broken": []}
    for mod in pkgutil.walk_packages(cvdeploy.__path__, "cvdeploy."):
        try:
            importlib.import_module(mod.name)
            report["ok"].append(mod.name)
        except MissingDependency as exc:
            report["needs_extra"].append([mod.name, str(exc)])
        except Exception as exc:
            report["broken"].append([mod.name, f"{type(exc).__name__}: {exc}"])
    from cvdeploy.cli.main import app, run
    import typer
    codes = {"--help": run(["--help"])}
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        codes[name] = run([name, "--help"])
        for sub in getattr(cmd, "commands", {}) or {}:
            codes[name + " " + sub] = run([name, sub, "--help"])
    report["help"] = codes
    print("REPORT" + json.dumps(report))
    """
)


def test_core_only_imports_and_help() -> None:
    import json

    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT % OPTIONAL], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT"))
    report = json.loads(line[len("REPORT") :])
    assert report["broken"] == [], report["broken"]
    for name, message in report["needs_extra"]:
        assert "pip install" in message, (name, message)
    assert len(report["ok"]) > 20
    assert "cvdeploy.pipeline" in report["ok"] and "cvdeploy.runtimes.onnxruntime" in report["ok"]
    assert all(code == 0 for code in report["help"].values()), report["help"]
    assert {"export", "inspect", "predict"} <= set(report["help"])


def test_missing_optional_dependency_is_one_line(tiny_bundle_path, photo_dir) -> None:  # type: ignore[no-untyped-def]
    """Running an OpenVINO artifact without openvino installed: exit 2 and the pip line."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "openvino":
                    raise ModuleNotFoundError("No module named 'openvino'", name=name)
        sys.meta_path.insert(0, Hide())
        from cvdeploy.cli.main import run
        sys.exit(run(["predict", {str(tiny_bundle_path)!r}, {str(photo_dir)!r}, "--artifact", "openvino-fp32"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "cvdeploy[openvino]"' in lines[0]
