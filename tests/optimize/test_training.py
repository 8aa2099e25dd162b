"""Pruning keeps the output layout; the distillation loss goes down; the trainer's inputs are checked."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cvdeploy.errors import ConfigError  # noqa: E402
from cvdeploy.optimize.distill import TrainConfig, distill_loss, train_student  # noqa: E402
from cvdeploy.optimize.prune import (  # noqa: E402
    magnitude_sparsity,
    output_convs,
    prune_channels,
    split_chunked_blocks,
)
from cvdeploy.zoo.model import build_model  # noqa: E402

X = torch.rand(2, 3, 64, 64)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("n").eval()


def test_output_convs_are_the_head_convs(model) -> None:
    convs = output_convs(model, X[:1])
    heads = {id(h.box[-1]) for h in model.heads} | {id(h.cls[-1]) for h in model.heads}
    assert {id(c) for c in convs} == heads


def test_split_blocks_are_equivalent(model) -> None:
    with torch.no_grad():
        before = model(X)
        assert split_chunked_blocks(model) > 0
        assert torch.allclose(model(X), before, atol=1e-5)


@pytest.mark.parametrize(("ratio", "target"), [(0.3, None), (None, 0.6)])
def test_pruning_keeps_the_output_layout(model, ratio: float | None, target: float | None) -> None:
    with torch.no_grad():
        shape = model(X).shape
    report = prune_channels(model, X[:1], ratio=ratio, target_macs=target)
    with torch.no_grad():
        out = model(X)
    assert out.shape == shape and torch.isfinite(out).all()
    assert report.macs_after < report.macs_before and report.params_after < report.params_before
    if target is not None:
        assert report.macs_after <= target * report.macs_before
    assert report.kept_layers == 6


def test_rounded_pruning_leaves_narrow_layers_whole(model) -> None:
    narrow = {n: m.out_channels for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d) and m.out_channels <= 16}  # fmt: skip
    prune_channels(model, X[:1], ratio=0.3, round_to=8)
    convs = dict(model.named_modules())
    assert narrow and all(convs[n].out_channels == c for n, c in narrow.items())
    heads = {id(h.box[-1]) for h in model.heads} | {id(h.cls[-1]) for h in model.heads}
    pruned = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and id(m) not in heads]
    assert all(m.out_channels % 8 == 0 for m in pruned)


@pytest.mark.parametrize(
    ("kw", "words"),
    [({}, "either"), ({"ratio": 0.95}, "between"), ({"ratio": 0.3, "target_macs": 0.5}, "either")],
)
def test_bad_pruning_settings(model, kw: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        prune_channels(model, X[:1], **kw)


def test_magnitude_sparsity_says_no_speedup(model) -> None:
    rep = magnitude_sparsity(model, 0.5)
    assert 0.45 <= rep["sparsity"] <= 0.55
    assert "no speedup" in rep["note"]


def test_distill_loss_is_zero_for_identical_outputs(model) -> None:
    with torch.no_grad():
        out = model(X)
    loss, parts = distill_loss(out, out, 64)
    other, _ = distill_loss(torch.rand_like(out) * 64, out, 64)
    assert parts["box"] == pytest.approx(0.0, abs=1e-6) and other > loss


def test_distillation_loss_decreases(model, photo_dir: Path) -> None:
    torch.manual_seed(1)
    teacher = build_model("n").eval()
    log = train_student(model, teacher, photo_dir, TrainConfig(epochs=6, crop=64, batch=4, lr=2e-3))
    assert log.steps == 6 and len(log.losses) == 6
    assert log.losses[-1] < log.losses[0]


def test_time_budget_runs_the_whole_schedule(model, photo_dir: Path) -> None:
    teacher = build_model("n").eval()
    cfg = TrainConfig(epochs=10_000, crop=64, batch=4, lr=1e-3, time_budget_s=0.5)
    log = train_student(model, teacher, photo_dir, cfg)
    # stopped by the clock long before the step count, yet the learning rate reached its floor
    assert log.stopped_early and log.steps < 10_000
    assert log.lr_end < 0.1 * cfg.lr


def test_trainer_needs_a_teacher_or_labels(model, photo_dir: Path) -> None:
    with pytest.raises(ConfigError, match="teacher or labels"):
        train_student(model, None, photo_dir, TrainConfig(epochs=1))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cvdeploy.zoo.dataset import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("shapes"), images=10, seed=3, imgsz=128, progress=False,
                            workers=1)  # fmt: skip


@pytest.mark.parametrize("with_teacher", [False, True])
def test_training_with_labels(model, tiny_data: Path, with_teacher: bool) -> None:
    teacher = build_model("n").eval() if with_teacher else None
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(epochs=1, crop=64, batch=4, labels=tiny_data, label_gain=1.0)
    log = train_student(model, teacher, [], cfg)
    assert log.steps == 2 and np.isfinite(log.losses[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_distillation_with_labels_runs_the_student_once_per_step(
    model, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detection loss and the distillation loss share one forward pass of the student."""
    calls = [0]
    real = type(model).forward_raw

    def counted(self: object, x: torch.Tensor) -> list[torch.Tensor]:
        if self is model:
            calls[0] += 1
        return real(self, x)

    monkeypatch.setattr(type(model), "forward_raw", counted)
    cfg = TrainConfig(epochs=1, crop=64, batch=4, labels=tiny_data, label_gain=1.0)
    log = train_student(model, build_model("n").eval(), [], cfg)
    assert log.steps == 2 and calls[0] == 2


def test_feature_distillation_maps_a_pruned_neck_onto_the_teachers(photo_dir: Path) -> None:
    """A pruned student (fewer neck channels) learns the teacher's neck features through fitted 1x1 maps;
    its BatchNorm statistics are untouched by the pass that sizes the maps, and the hooks are removed."""
    pytest.importorskip("torch_pruning")
    from cvdeploy.optimize.distill import _NeckMatch
    from cvdeploy.optimize.prune import prune_channels

    torch.manual_seed(0)
    teacher = build_model("n").eval()
    student = copy.deepcopy(teacher)
    prune_channels(student, torch.zeros(1, 3, 64, 64), ratio=0.25)
    stats = [b.running_mean.clone() for b in student.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    match = _NeckMatch(student.train(), teacher)
    after = [b.running_mean for b in student.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(stats, after, strict=True))
    s_ch = [m.in_channels for m in match.maps]
    t_ch = [m.out_channels for m in match.maps]
    assert len(s_ch) == 3 and sum(s_ch) < sum(t_ch)  # the pruned neck is narrower
    match.close()
    cfg = TrainConfig(epochs=4, crop=64, batch=4, lr=2e-3, feature_gain=1.0)
    log = train_student(student, teacher, photo_dir, cfg)
    assert log.steps == 4 and np.isfinite(log.losses).all()
    assert not student.neck._forward_hooks and not teacher.neck._forward_hooks


def test_qat_wraps_convs_and_strips_back(model) -> None:
    from cvdeploy.optimize.qat import prepare_qat, strip_qat

    with torch.no_grad():
        ref = model(X)
    n = prepare_qat(model, [X[:1], X[1:]])
    assert n == sum(1 for m in model.modules() if type(m).__name__ == "FakeQuantConv") > 10
    with torch.no_grad():
        fq = model(X)
    # fake quantization perturbs the outputs a little, not a lot (BatchNorm folding is exact)
    assert 0 < float((fq - ref).abs().max()) < 0.25 * float(ref.abs().max())
    strip_qat(model)
    assert not any(type(m).__name__ == "FakeQuantConv" for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        assert torch.allclose(model(X), ref, atol=1e-3 * float(ref.abs().max()))


@pytest.mark.slow
def test_fresh_student_distilled_from_a_teacher(tiny_bundle_copy: Path, photo_dir: Path) -> None:
    from cvdeploy.bundle import Bundle
    from cvdeploy.optimize.retrain import distill_bundle
    from cvdeploy.optimize.source import load_source_model

    b = Bundle.load(tiny_bundle_copy)
    trained = load_source_model(b).state_dict()
    fresh = load_source_model(b, fresh=True, seed=1).state_dict()
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained if trained[k].is_floating_point())
    with pytest.raises(ConfigError, match="needs labels"):
        distill_bundle(b, None, photo_dir, TrainConfig(epochs=1, crop=64, batch=4), fresh=True)
    art = distill_bundle(b, tiny_bundle_copy, photo_dir, TrainConfig(epochs=1, crop=64, batch=4), fresh=True)
    assert art.name == "onnx-fp32-distilled"
    assert art.details["distillation"]["start"] == "fresh initialisation"
    assert art.parity is not None and art.parity.passed
