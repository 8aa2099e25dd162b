"""Where ``doctor`` reports progress: the CLI draws a rich bar on it, the library default is silent."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Each check starts a task of ``total`` steps (images, configurations) and advances it."""

    def begin(self, title: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def end(self) -> None: ...


class Silent:
    """Progress that goes nowhere."""

    def begin(self, title: str, total: int) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        return None

    def end(self) -> None:
        return None
