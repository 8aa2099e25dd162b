"""Pinned requirements: cvdeploy's extras resolved to the exact versions installed here.

A container must run what was tested, so every distribution that ``cvdeploy[EXTRAS]`` pulls in is
written as ``name==version`` from this environment's metadata (``importlib.metadata``), following
``Requires-Dist`` with environment markers evaluated by ``packaging`` (the same code pip uses).
"""

from __future__ import annotations

import importlib.metadata as md
import re
from collections.abc import Iterable

from cvdeploy.errors import MissingDependency


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_closure(extras: Iterable[str], root: str = "cvdeploy") -> tuple[list[str], list[str]]:
    """``(pins, missing)``: ``name==version`` for every distribution ``root[extras]`` needs (root
    itself excluded), sorted; ``missing`` names requirements that are not installed here."""
    from packaging.requirements import Requirement

    try:
        md.distribution(root)
    except md.PackageNotFoundError:
        raise MissingDependency(
            f"{root} is not installed as a distribution; install it with: pip install -e ."
        ) from None
    pins: dict[str, str] = {}
    missing: list[str] = []
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        if _norm(name) != _norm(root):
            pins[_norm(dist.metadata["Name"])] = f"{dist.metadata['Name']}=={dist.version}"
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in (wanted or {""})]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            if _norm(req.name) == _norm(root):  # cvdeploy[all] → cvdeploy[torch,...]: same root, more extras
                todo.append((root, frozenset(req.extras) | wanted))
                continue
            todo.append((req.name, frozenset(req.extras)))
    return sorted(pins.values(), key=str.lower), sorted(set(missing))
