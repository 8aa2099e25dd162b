"""Loss and label assignment of the zoo detector, and the training helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cvdeploy.zoo.dataset import generate_dataset  # noqa: E402
from cvdeploy.zoo.loss import DetectionLoss, bbox_iou, task_aligned_assign  # noqa: E402
from cvdeploy.zoo.model import build_n  # noqa: E402
from cvdeploy.zoo.train import CropLoader, ModelEMA, lr_factor  # noqa: E402


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [0, 0, 5, 5], 0.25),
    ],
)
def test_bbox_iou(a: list[float], b: list[float], iou: float) -> None:
    ta, tb = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    assert float(bbox_iou(ta, tb)) == pytest.approx(iou, abs=1e-5)
    assert float(bbox_iou(ta, tb, ciou=True)) <= float(bbox_iou(ta, tb)) + 1e-6


def test_assignment_picks_anchors_inside_the_box_with_its_class() -> None:
    # one 8x8 grid of stride-8 anchors (64x64 image), one box in the top-left quarter
    g = (torch.arange(8) + 0.5) * 8
    points = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    n, nc = len(points), 6
    gt = torch.tensor([[[2.0, 2.0, 30.0, 30.0]]])
    pred = gt.expand(1, n, 4).clone()  # every anchor predicts the box exactly
    scores = torch.full((1, n, nc), 0.5)
    boxes, target_scores, fg = task_aligned_assign(
        scores, pred, points, torch.tensor([[3]]), gt, torch.tensor([[True]]), topk=5
    )
    inside = (points[:, 0] > 2) & (points[:, 0] < 30) & (points[:, 1] > 2) & (points[:, 1] < 30)
    assert int(fg.sum()) == 5
    assert bool(inside[fg[0]].all())
    assert torch.all(target_scores[0, fg[0]].argmax(-1) == 3)
    assert torch.all(target_scores[0, ~fg[0]] == 0)
    torch.testing.assert_close(boxes[0, fg[0]], gt[0].expand(5, 4))


def test_loss_is_finite_and_decreases_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = build_n().train()
    criterion = DetectionLoss(model)
    x = torch.rand(2, 3, 96, 96)
    x[0, :, 10:40, 20:60] = torch.tensor([1.0, 0.1, 0.1])[:, None, None]
    x[1, :, 50:90, 40:70] = torch.tensor([0.1, 0.1, 1.0])[:, None, None]
    targets = torch.tensor([[0, 1, 20, 10, 60, 40], [1, 4, 40, 50, 70, 90]], dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss, parts = criterion(model(x), targets)
        assert torch.isfinite(loss) and parts.shape == (3,) and torch.all(parts >= 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_loss_with_no_targets_is_finite() -> None:
    model = build_n().train()
    loss, parts = DetectionLoss(model)(model(torch.rand(2, 3, 64, 64)), torch.zeros(0, 6))
    assert torch.isfinite(loss) and float(parts[0]) == 0.0 and float(parts[1]) > 0.0
    loss.backward()


@pytest.mark.parametrize(("progress", "expected"), [(0.0, 0.1), (0.05, 1.0), (1.0, 0.02), (0.525, 0.51)])
def test_lr_factor(progress: float, expected: float) -> None:
    assert lr_factor(progress, warmup=0.05, final=0.02) == pytest.approx(expected, abs=1e-9)


def test_ema_moves_towards_the_model() -> None:
    model = torch.nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = (ema.ema.weight - model.weight).abs().sum()
    ema.update(model)
    after = (ema.ema.weight - model.weight).abs().sum()
    assert float(after.detach()) < float(before.detach())
    assert math.isclose(ema.decay * (1 - math.exp(-1)), 0.9 * (1 - math.exp(-1)))


def test_crop_loader_keeps_boxes_inside_the_crop(tmp_path: Path) -> None:
    data = generate_dataset(
        tmp_path, images=8, seed=5, imgsz=192, splits=(1, 0, 0), progress=False, workers=1
    )
    loader = CropLoader(data, "train", crop=96, batch=4, seed=0)
    batches = list(loader.epoch())
    assert len(batches) == 2
    x, t = batches[0]
    assert x.shape == (4, 3, 96, 96) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert t.shape[1] == 6 and len(t) > 0
    assert np.all(t[:, 2:].numpy() >= 0) and np.all(t[:, 2:].numpy() <= 96)
    assert torch.all(t[:, 4] > t[:, 2]) and torch.all(t[:, 5] > t[:, 3])
    assert set(t[:, 0].long().tolist()) <= {0, 1, 2, 3}
