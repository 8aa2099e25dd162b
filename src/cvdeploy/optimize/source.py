"""The bundle's PyTorch model, rebuilt from what ``provenance.source`` keeps inside the bundle.

Re-export at another size, pruning, distillation and QAT all start from it; it lives apart from
each of them so that none imports another. Three kinds of kept source, all safe to load (no
unpickling of code):

- ``python:`` factories: the factory is called and the kept state dict loaded (``weights_only``);
- Ultralytics checkpoints: the model is rebuilt from its kept YAML and state dict;
- TorchScript: the kept archive is loaded (it re-exports; it cannot be restructured by pruning).
"""

from __future__ import annotations

from typing import Any

from cvdeploy._deps import require
from cvdeploy.bundle import Bundle
from cvdeploy.errors import ModelError


def no_source_reason(bundle: Bundle) -> str | None:
    """Why the bundle has no PyTorch model to load (``None``: it has one)."""
    src = bundle.manifest.provenance.source
    if src.kept:
        return None
    return (
        f"bundle {bundle.name!r} has no PyTorch source (it was made from {src.kind}); pruning, distillation, QAT "
        "and re-export work on the PyTorch model — export the bundle from the .pt, TorchScript or python: factory"
    )


def load_source_model(bundle: Bundle, fresh: bool = False, seed: int = 0) -> Any:
    """The bundle's PyTorch model with its kept weights (eval mode); ``fresh``: newly initialised instead."""
    why = no_source_reason(bundle)
    if why:
        raise ModelError(why)
    src = bundle.manifest.provenance.source
    torch = require("torch", "PyTorch sources")
    if fresh:
        torch.manual_seed(seed)
    if src.kind == "torchscript":
        if fresh:
            raise ModelError(
                f"bundle {bundle.name!r} keeps a TorchScript model, which cannot be re-initialised"
            )
        from cvdeploy.sources.torch import load_torchscript

        return load_torchscript(bundle.path / str(src.weights))
    if src.kind == "ultralytics":
        import yaml

        from cvdeploy.sources.torch import read_state_dict
        from cvdeploy.sources.ultralytics import TaskOutputs, rebuild

        arch = yaml.safe_load((bundle.path / str(src.architecture)).read_text(encoding="utf-8"))
        c = bundle.contract
        model = rebuild(arch, {} if fresh else read_state_dict(bundle.path / str(src.weights)), c.task, c.classes,
                        strict=not fresh)  # fmt: skip
        return TaskOutputs.wrap(model, c.task)
    from cvdeploy.sources.torch import load_factory, load_state_dict

    if fresh:
        return load_factory(str(src.factory))
    return load_state_dict(load_factory(str(src.factory)), bundle.path / str(src.weights))


def can_restructure(bundle: Bundle) -> str | None:
    """Why pruning/QAT cannot change this bundle's model's structure (``None``: they can)."""
    if bundle.manifest.provenance.source.kind == "torchscript":
        return (
            f"bundle {bundle.name!r} keeps a TorchScript model: it re-exports, but pruning, distillation and QAT need "
            "the Python model — export it from python:pkg.module:factory (--weights FILE) instead"
        )
    return None


def example_input(bundle: Bundle) -> Any:
    """A zero ``(1, 3, H, W)`` tensor at the contract's input size (for tracing and MAC counts)."""
    torch = require("torch")
    return torch.zeros(1, 3, bundle.contract.input.height, bundle.contract.input.width)
