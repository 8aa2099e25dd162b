"""Helpers shared by the CLI commands: one-line user errors, consoles, option parsing."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from cvdeploy.errors import ConfigError, CvdeployError

# Piped or captured output gets a wide fixed width so tables are not squeezed to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr and return the exit to raise."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """User errors (``CvdeployError``) become one red line and exit code 2; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CvdeployError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def bundle_key_options(fn: F | None = None, *, needs_files: str | None = None) -> Any:
    """Give a command that loads bundles the options ``--decrypt-key KEYFILE`` and ``--trust-key PUBLIC_KEY``.

    Every bundle the command loads is then opened with those keys (``cvdeploy.security.bundlekeys``):
    an encrypted bundle is decrypted in memory; with ``--trust-key`` an unsigned or badly signed bundle
    is refused. ``needs_files="optimize"`` refuses encrypted bundles up front for a command that works
    on model files on disk. Use as ``@bundle_key_options`` above ``@handle_errors``.
    """
    import inspect
    from pathlib import Path
    from typing import get_type_hints

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from cvdeploy.security.bundlekeys import BundleKeys, using_keys

            decrypt, trust = kwargs.pop("decrypt_key", None), kwargs.pop("trust_key", None)
            keys = BundleKeys(decrypt, trust, needs_files) if (decrypt or trust or needs_files) else None
            with using_keys(keys):
                return func(*args, **kwargs)

        sig = inspect.signature(func)
        extra = [
            inspect.Parameter(
                "decrypt_key", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                default=typer.Option(None, "--decrypt-key", metavar="KEYFILE",
                                     help="Model key of an encrypted bundle (decrypted in memory only)."),
            ),
            inspect.Parameter(
                "trust_key", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                default=typer.Option(None, "--trust-key", metavar="PUBLIC_KEY",
                                     help="Refuse bundles not signed with this Ed25519 public key."),
            ),
        ]  # fmt: skip
        wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            **get_type_hints(func),
            "decrypt_key": Path | None,
            "trust_key": Path | None,
        }
        return wrapper  # type: ignore[return-value]

    return wrap(fn) if fn is not None else wrap


def parse_list(value: str | None) -> list[str]:
    """``"a,b, c"`` → ``["a", "b", "c"]``; empty or None → ``[]``."""
    if not value:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_ints(value: str | None, what: str) -> list[int]:
    out = []
    for v in parse_list(value):
        try:
            out.append(int(v))
        except ValueError:
            raise ConfigError(f"{what}: {v!r} is not a whole number") from None
        if out[-1] <= 0:
            raise ConfigError(f"{what}: {v} must be positive")
    return out


def parse_imgsz(value: str | None) -> tuple[int, int] | None:
    """``"640"`` → (640, 640); ``"480,640"`` or ``"480x640"`` → (480, 640) as (height, width)."""
    if not value:
        return None
    parts = parse_ints(value.replace("x", ","), "--imgsz")
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ConfigError(f"--imgsz {value!r}: give one size (640) or height,width (480,640)")


def setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
        force=True,
    )
    if not verbose:
        logging.getLogger("cvdeploy").setLevel(logging.WARNING)


def is_tty() -> bool:
    return sys.stderr.isatty()
