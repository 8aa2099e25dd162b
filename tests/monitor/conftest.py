"""Fixtures for the monitoring tests: scenes with and without a planted drift, a bundle whose profile
was built from the normal scenes, a settable clock, and the database on SQLite and PostgreSQL.

The PostgreSQL fixtures are the throwaway cluster of ``tests/security`` (``CVDEPLOY_TEST_POSTGRES_URL``,
or ``initdb``/``pg_ctl`` found here; skipped with the reason otherwise, failed under
``CVDEPLOY_REQUIRE_POSTGRES=1``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from security.conftest import postgres_server, postgres_url  # noqa: F401  (tests/security's cluster)

#: the planted drift: darker (x0.6), blurred (Gaussian sigma 1.2), larger (x1.8 both sides, same aspect)
DARKEN, BLUR_SIGMA, SCALE = 0.6, 1.2, 1.8
#: the input features this drift moves; aspect and saturation stay (checked on the images themselves)
MOVED = {"brightness", "contrast", "sharpness", "width", "height"}
STILL = {"aspect", "saturation"}
T0 = 1_800_000_000.0


class Clock:
    """A settable clock (UNIX seconds)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def daylight_photos(photos: list[np.ndarray]) -> list[np.ndarray]:
    """The sample photographs minus near-black ones (HSV saturation is ill-conditioned on near-black
    pixels, so darkening those would genuinely move saturation too)."""
    from cvdeploy.images import sample_images

    keep = [p for p in sample_images(8) if cv2.cvtColor(p, cv2.COLOR_BGR2GRAY).mean() > 40]
    assert len(keep) >= 4
    return keep


def scenes(photos: list[np.ndarray], seed: int, n: int) -> list[np.ndarray]:
    """``n`` random crops (260-400 px, aspect 0.8-1.25, random flips) cycling through ``photos``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        big_h, big_w = p.shape[:2]
        side = int(rng.integers(260, 400))
        w, h = min(big_w, int(side * rng.uniform(0.8, 1.25))), min(big_h, side)
        x, y = int(rng.integers(0, big_w - w + 1)), int(rng.integers(0, big_h - h + 1))
        crop = p[y : y + h, x : x + w]
        out.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return out


def planted(img: np.ndarray) -> np.ndarray:
    """Darker, blurred, larger."""
    dark = (img.astype(np.float32) * DARKEN).round().astype(np.uint8)
    return cv2.resize(cv2.GaussianBlur(dark, (0, 0), BLUR_SIGMA), None, fx=SCALE, fy=SCALE)


def jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def drift_bundle(tiny_bundle_path: Path, tmp_path_factory: pytest.TempPathFactory,
                 daylight_photos: list[np.ndarray]) -> Path:  # fmt: skip
    """The tiny bundle with a reference profile of 120 normal scenes (as the server decodes them)."""
    from cvdeploy.reference import write_profile

    dst = tmp_path_factory.mktemp("drift") / "tiny.cvd"
    shutil.copytree(tiny_bundle_path, dst)
    ref = [
        cv2.imdecode(np.frombuffer(jpeg(s), np.uint8), cv2.IMREAD_COLOR)
        for s in scenes(daylight_photos, 1, 120)
    ]
    assert write_profile(dst, ref) is not None
    return dst


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The monitoring database URL, once per backend."""
    if request.param == "sqlite":
        return str(tmp_path / "cvdeploy.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return str(tmp_path / "cvdeploy.db")


@pytest.fixture
def store(sqlite_url: str) -> Iterator[object]:
    from cvdeploy.monitor.store import MonitorStore

    s = MonitorStore.open(sqlite_url)
    yield s
    s.close()
