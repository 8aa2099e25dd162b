"""The bundle's PyTorch model, rebuilt from ``provenance.source`` (factory + kept weights).

Pruning, distillation and QAT all start from it; it lives apart from each of them so that none
imports another.
"""

from __future__ import annotations

from typing import Any

from cvdeploy._deps import require
from cvdeploy.bundle import Bundle
from cvdeploy.errors import ModelError


def load_source_model(bundle: Bundle, fresh: bool = False, seed: int = 0) -> Any:
    """The bundle's PyTorch model with its kept weights (eval mode); ``fresh``: newly initialised instead."""
    from cvdeploy.sources.torch import load_factory, load_state_dict

    src = bundle.manifest.provenance.source
    if not (src.factory and src.weights):
        raise ModelError(
            f"bundle {bundle.name!r} has no PyTorch source (it was made from {src.kind}); pruning, distillation "
            "and QAT retrain the PyTorch model — export the bundle from PyTorch weights first"
        )
    if fresh:
        require("torch").manual_seed(seed)
        return load_factory(src.factory)
    return load_state_dict(load_factory(src.factory), bundle.path / src.weights)


def example_input(bundle: Bundle) -> Any:
    """A zero ``(1, 3, H, W)`` tensor at the contract's input size (for tracing and MAC counts)."""
    torch = require("torch")
    return torch.zeros(1, 3, bundle.contract.input.height, bundle.contract.input.width)
