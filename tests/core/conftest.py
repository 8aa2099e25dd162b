"""Fixtures of the core tests: Ultralytics models of every task, built once per session (see ultralytics_farm)."""

from __future__ import annotations

import pytest
from ultralytics_farm import Farm


@pytest.fixture(scope="session")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Farm:
    pytest.importorskip("ultralytics")
    return Farm(tmp_path_factory.mktemp("ultralytics"))
