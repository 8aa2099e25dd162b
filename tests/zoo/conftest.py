"""Fixtures of the zoo tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every test here runs torch single-threaded (fixture in tests/conftest.py)."""
