"""The public API of ``cvdeploy.optimize`` is pinned and every name resolves."""

from __future__ import annotations

import cvdeploy.optimize as optimize

PUBLIC = ["Int8Options", "TrainConfig", "auto_optimize", "distill_bundle", "prune_bundle", "qat_bundle",
          "quantize_int8", "to_fp16", "variants_table"]  # fmt: skip


def test_public_names() -> None:
    assert sorted(optimize.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert callable(getattr(optimize, name))
