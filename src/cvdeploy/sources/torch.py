"""Import a PyTorch module from ``python:pkg.module:factory`` or a TorchScript file."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import InputError, ModelError


def load_factory(spec: str) -> Any:
    """Call ``factory()`` from ``python:pkg.module:factory`` and return the ``nn.Module`` it builds."""
    torch = require("torch", "PyTorch sources")
    target = spec.removeprefix("python:")
    if ":" not in target:
        raise InputError(f"{spec!r}: expected python:package.module:factory (e.g. python:mypkg.models:build)")
    mod_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InputError(f"{spec!r}: cannot import module {mod_name!r} ({exc})") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise InputError(f"{spec!r}: module {mod_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise InputError(f"{spec!r}: {attr!r} is not callable")
    try:
        model = factory()
    except TypeError:
        # a factory with required arguments: say so instead of a traceback (the one TypeError we expect)
        import inspect

        try:
            params = [p for p in inspect.signature(factory).parameters.values()
                      if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
        except (TypeError, ValueError):
            params = []
        if not params:
            raise
        raise InputError(
            f"{spec!r} needs argument(s) {', '.join(p.name for p in params)}; cvdeploy calls the factory with none — "
            f"write a zero-argument function that builds the model (def build(): return {attr}(...)) and name that"
        ) from None
    except Exception as exc:
        raise ModelError(
            f"{spec!r}: the factory failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{spec!r}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def load_torchscript(path: str | Path) -> Any:
    """Load a TorchScript archive (not a pickle: no arbitrary Python runs)."""
    torch = require("torch", "TorchScript sources")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable TorchScript file ({exc})") from None


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """A plain state dict from a file, loaded safely (``weights_only=True``: tensors, no code)."""
    torch = require("torch", "PyTorch weights")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"weights file not found: {p}")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{p}: cannot load weights safely — not a plain state dict ({type(exc).__name__}); save it with "
            "torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{p}: holds a {type(state).__name__}, not a state dict")
    return state


def load_state_dict(model: Any, path: str | Path) -> Any:
    """Load a plain state dict safely (``weights_only=True``) into ``model``."""
    state = read_state_dict(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the model ({str(exc).splitlines()[0]})") from None
    return model.eval()


class FirstOutput:
    """Wraps a module whose forward returns a tuple/list so that only the first tensor is exported."""

    @staticmethod
    def wrap(model: Any) -> Any:
        torch = require("torch")

        class _First(torch.nn.Module):  # type: ignore[name-defined]
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: Any) -> Any:
                out = self.inner(x)
                while isinstance(out, list | tuple):
                    out = out[0]
                return out

        return _First(model).eval()
