"""Contract hints from CLI flags or a YAML file, validated with clear messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cvdeploy.contract import FORMATS, TASKS, InputSpec, OutputSpec
from cvdeploy.errors import ConfigError, InputError
from cvdeploy.sources.assemble import ContractHints
from cvdeploy.sources.presets import PRESETS

_TASKS = TASKS
_FORMATS = FORMATS


def read_names(value: str) -> list[str]:
    """Class names from ``"a,b,c"``, a text file (one per line) or a YAML file (list, or ``names:``)."""
    p = Path(value)
    if p.suffix.lower() in (".txt", ".yaml", ".yml", ".names") or p.is_file():
        if not p.is_file():
            raise InputError(f"--names file not found: {p}")
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() in (".yaml", ".yml"):
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{p}: not valid YAML ({exc})") from None
            if isinstance(data, dict):
                data = data.get("names", data)
            if isinstance(data, dict):
                return [str(data[k]) for k in sorted(data)]
            if isinstance(data, list):
                return [str(x) for x in data]
            raise ConfigError(f"{p}: expected a list of names or a 'names:' mapping")
        return [line.strip() for line in text.splitlines() if line.strip()]
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise ConfigError("--names is empty")
    return names


def hints_from(
    names: str | None = None,
    task: str | None = None,
    output_format: str | None = None,
    contract_file: Path | None = None,
    preset: str | None = None,
) -> ContractHints:
    """Hints from export's flags; a flag given twice in contradiction (``--task`` vs ``--output-format``)
    is refused when the contract is assembled."""
    hints = ContractHints()
    if contract_file is not None:
        hints = read_contract_file(contract_file)
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"--preset {preset!r}: use one of {', '.join(PRESETS)}")
        hints.preset = preset
    if names:
        hints.classes = read_names(names)
    if task:
        if task not in _TASKS:
            raise ConfigError(f"--task {task!r}: use one of {', '.join(_TASKS)}")
        hints.task = task
    if output_format:
        if output_format not in _FORMATS:
            raise ConfigError(f"--output-format {output_format!r}: use one of {', '.join(_FORMATS)}")
        hints.format = output_format
    return hints


def read_contract_file(path: Path) -> ContractHints:
    """A YAML file with any of ``task``, ``classes``/``names``, ``input:`` and ``output:`` fields."""
    if not path.is_file():
        raise InputError(f"contract file not found: {path}")
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with task/classes/input/output")
    unknown = set(data) - {"task", "classes", "names", "input", "output"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: task, classes, input, output"
        )
    inp, out = data.get("input") or {}, data.get("output") or {}
    for section, model, values in (("input", InputSpec, inp), ("output", OutputSpec, out)):
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: '{section}' must be a mapping")
        bad = set(values) - set(model.model_fields)
        if bad:
            raise ConfigError(f"{path}: unknown {section} field(s) {', '.join(sorted(bad))}")
        try:
            model(**values)
        except Exception as exc:
            raise ConfigError(f"{path}: invalid {section}: {str(exc).splitlines()[1:3]}") from None
    hints = ContractHints(input=dict(inp), output=dict(out))
    names = data.get("classes", data.get("names"))
    if names is not None:
        hints.classes = (
            [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
        )
    if "task" in data:
        hints.task = str(data["task"])
    if "format" in out:
        hints.format = str(out["format"])
    if "height" in inp and "width" in inp:
        hints.imgsz = (int(inp["height"]), int(inp["width"]))
    return hints
