"""The one trainer behind pruning recovery, distillation and QAT, and its losses.

A student learns to reproduce a teacher's outputs in the shared YOLO layout ``(B, 4 + nc, N)``
(cx, cy, w, h in pixels; class scores 0–1) on unlabelled images: class scores by binary cross
entropy against the teacher's scores, boxes by an L1 loss (in units of the image size) weighted
by the teacher's confidence, so that background anchors do not drown the objects. With labels
(a YOLO ``data.yaml``) the zoo's detection loss can be added.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvdeploy._deps import require
from cvdeploy.errors import ConfigError, InputError, ModelError
from cvdeploy.images import find_images, read_image

log = logging.getLogger("cvdeploy")


def decoded_forward(model: Any, x: Any) -> Any:
    """``(B, 4 + nc, N)`` decoded outputs, also in training mode (BatchNorm keeps learning).

    Models with ``forward_raw``/``decode`` (the zoo's ``Detector``) are called through them; any
    other module must return the decoded layout from ``forward`` in training mode.
    """
    if hasattr(model, "forward_raw") and hasattr(model, "decode"):
        return model.decode(model.forward_raw(x))
    out = model(x)
    if isinstance(out, list | tuple):
        out = out[0]
    if getattr(out, "ndim", 0) != 3:
        raise ModelError("cannot train this model: its output is not the YOLO layout (B, 4 + nc, N)")
    return out


def distill_loss(
    student: Any, teacher: Any, imgsz: int, box_gain: float = 5.0, cls_gain: float = 1.0
) -> tuple[Any, dict[str, float]]:
    """Loss of student outputs against teacher outputs, both ``(B, 4 + nc, N)``; returns (loss, parts)."""
    torch = require("torch")
    f = torch.nn.functional
    s_box, s_cls = student[:, :4], student[:, 4:].clamp(1e-6, 1 - 1e-6)
    t_box, t_cls = teacher[:, :4].detach(), teacher[:, 4:].detach()
    cls = f.binary_cross_entropy(s_cls, t_cls, reduction="mean") * t_cls.shape[1]
    weight = t_cls.max(1).values  # (B, N) teacher confidence
    box = ((s_box - t_box).abs().sum(1) / imgsz * weight).sum() / weight.sum().clamp(min=1e-6)
    loss = cls_gain * cls + box_gain * box
    return loss, {"cls": float(cls.detach()), "box": float(box.detach())}


class ImageCrops:
    """Random native-scale square crops (with flips) of unlabelled images, ``(B, 3, crop, crop)`` RGB 0–1.

    Images are read once; a crop larger than an image letterboxes it (pad 114) instead.
    """

    def __init__(self, sources: str | Path | Sequence[str | Path], crop: int, batch: int, seed: int = 0,
                 limit: int | None = None) -> None:  # fmt: skip
        items = [sources] if isinstance(sources, str | Path) else list(sources)
        files = find_images(items)
        if not files:
            raise InputError(f"no training images found in {', '.join(str(s) for s in items)}")
        files = files[:limit] if limit else files
        self.images = [read_image(f)[:, :, ::-1].copy() for f in files]  # RGB
        self.crop, self.batch = crop, min(batch, len(self.images))
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return max(1, len(self.images) // self.batch)

    def _crop(self, img: np.ndarray) -> np.ndarray:
        import cv2

        c = self.crop
        h, w = img.shape[:2]
        if h < c or w < c:
            r = c / max(h, w)
            img = cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))))
            out = np.full((c, c, 3), 114, np.uint8)
            out[: img.shape[0], : img.shape[1]] = img
            img = out
        else:
            y, x = int(self.rng.integers(0, h - c + 1)), int(self.rng.integers(0, w - c + 1))
            img = img[y : y + c, x : x + c]
        if self.rng.random() < 0.5:
            img = img[:, ::-1]
        return np.ascontiguousarray(img)

    def epoch(self) -> Iterator[Any]:
        """Batches ``(images, None)``: no labels."""
        torch = require("torch")
        order = self.rng.permutation(len(self.images))
        for i in range(len(self)):
            batch = [self._crop(self.images[k]) for k in order[i * self.batch : (i + 1) * self.batch]]
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0), None


@dataclass
class TrainConfig:
    """How long and how to train; ``time_budget_s`` stops early (the schedule is by steps)."""

    epochs: int = 5
    crop: int = 320
    batch: int = 8
    lr: float = 5e-4
    weight_decay: float = 5e-4
    box_gain: float = 5.0
    cls_gain: float = 1.0
    label_gain: float = 0.0  # > 0 with ``labels``: add the zoo detection loss
    feature_gain: float = 0.0  # > 0: also match the teacher's neck features (zoo detectors; see _NeckMatch)
    labels: str | Path | None = None  # YOLO data.yaml (train split) for the label loss
    time_budget_s: float | None = None
    threads: int | None = None
    seed: int = 0
    max_images: int | None = None


@dataclass
class TrainLog:
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    stopped_early: bool = False
    lr_end: float = 0.0  # learning rate at the last step (the schedule's floor when it ran to the end)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": round(self.seconds, 1),
                "losses": [round(v, 5) for v in self.losses], "stopped_early": self.stopped_early,
                "lr_end": self.lr_end}  # fmt: skip


def train_student(
    student: Any,
    teacher: Any | None,
    images: str | Path | Sequence[str | Path],
    config: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainLog:
    """Train ``student`` in place to match ``teacher`` and/or labels; returns the log.

    Without ``config.labels`` the student sees random crops of ``images`` (label-free); with them,
    labelled crops of the data.yaml's train split (``images`` unused), distilled and supervised.
    ``teacher=None`` needs labels (plain supervised training, the no-teacher baseline).
    """
    torch = require("torch", "training")
    if teacher is None and (config.labels is None or config.label_gain <= 0):
        raise ConfigError("training needs a teacher or labels (label_gain > 0 with a data.yaml)")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    use_labels = config.labels is not None and config.label_gain > 0
    source: Any = (
        _Labelled(student, config)
        if use_labels
        else ImageCrops(images, config.crop, config.batch, config.seed, config.max_images)
    )
    params = [p for p in student.parameters() if p.requires_grad]
    match = _NeckMatch(student, teacher) if teacher is not None and config.feature_gain > 0 else None
    opt = torch.optim.AdamW(params + (match.parameters() if match else []), lr=config.lr,
                            weight_decay=config.weight_decay)  # fmt: skip
    total = max(1, config.epochs * len(source))
    t0 = time.perf_counter()  # the clock of the time budget and of the schedule

    def progress(step: int) -> float:
        # the cosine runs over the steps, or over the time budget when that ends training first
        done = step / total
        if config.time_budget_s:
            done = max(done, (time.perf_counter() - t0) / config.time_budget_s)
        return min(done, 1.0)

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress(s)))
    )
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    student.train()
    tlog = TrainLog()
    for epoch in range(config.epochs):
        running: list[float] = []
        for x, targets in source.epoch():
            loss = torch.zeros(())
            # with labels the student (a zoo Detector) runs once: its raw head outputs feed the detection
            # loss and, decoded, the distillation loss (a second forward cost a third of a step and moved
            # BatchNorm's running statistics twice)
            raw = student.forward_raw(x) if targets is not None else None
            if teacher is not None:
                with torch.no_grad():
                    t_out = decoded_forward(teacher, x)
                s_out = student.decode(raw) if raw is not None else decoded_forward(student, x)
                loss, _ = distill_loss(s_out, t_out, config.crop, config.box_gain, config.cls_gain)
                if match is not None:
                    loss = loss + config.feature_gain * match.loss()
            if raw is not None:
                label_loss, _ = source.criterion(raw, targets)
                loss = loss + config.label_gain * label_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            running.append(float(loss.detach()))
            tlog.steps += 1
            if config.time_budget_s and time.perf_counter() - t0 > config.time_budget_s:
                tlog.stopped_early = True
                break
        tlog.losses.append(float(np.mean(running)) if running else float("nan"))
        if on_epoch is not None:
            on_epoch(epoch, tlog.losses[-1])
        if tlog.stopped_early:
            break
    tlog.seconds = time.perf_counter() - t0
    tlog.lr_end = float(opt.param_groups[0]["lr"])
    if match is not None:
        match.close()
    student.eval()
    return tlog


class _NeckMatch:
    """Feature distillation: the student's neck outputs (the inputs of its detection heads), mapped by one
    1x1 convolution per level onto the teacher's channels, are pulled towards the teacher's (mean squared
    error over the teacher's mean square, per level). A pruned student has fewer channels than its teacher:
    each map starts as the least-squares fit on the first batch and is trained with the student; it is
    dropped after training. Zoo detectors only (their ``neck``)."""

    def __init__(self, student: Any, teacher: Any) -> None:
        if not (hasattr(student, "neck") and hasattr(teacher, "neck")):
            raise ConfigError(
                "feature distillation needs zoo detectors (a neck whose outputs feed the heads)"
            )
        self.feats: dict[str, Any] = {}
        self.handles = [
            m.neck.register_forward_hook(lambda _m, _i, out, k=k: self.feats.__setitem__(k, out))
            for k, m in (("student", student), ("teacher", teacher))
        ]
        # the channel counts, from one small pass in eval mode (BatchNorm's statistics untouched)
        torch = require("torch")
        was_training = student.training
        student.eval()
        with torch.no_grad():
            x = torch.zeros(1, 3, 64, 64)
            student(x), teacher(x)
        student.train(was_training)
        self.maps = [
            torch.nn.Conv2d(s.shape[1], t.shape[1], 1)
            for s, t in zip(self.feats["student"], self.feats["teacher"], strict=True)
        ]
        self.fitted = False

    def parameters(self) -> list[Any]:
        return [p for m in self.maps for p in m.parameters()]

    def _fit_maps(self, s_feats: Sequence[Any], t_feats: Sequence[Any]) -> None:
        torch = require("torch")
        with torch.no_grad():
            for conv, s, t in zip(self.maps, s_feats, t_feats, strict=True):
                xs = s.detach().permute(0, 2, 3, 1).reshape(-1, s.shape[1])
                xt = t.detach().permute(0, 2, 3, 1).reshape(-1, t.shape[1])
                ones = torch.ones(xs.shape[0], 1)
                sol = torch.linalg.lstsq(torch.cat([xs, ones], 1), xt).solution  # (cs + 1, ct)
                conv.weight.copy_(sol[:-1].T[:, :, None, None])
                conv.bias.copy_(sol[-1])
        self.fitted = True

    def loss(self) -> Any:
        s_feats, t_feats = self.feats["student"], self.feats["teacher"]
        if not self.fitted:
            self._fit_maps(s_feats, t_feats)
        total = 0.0
        for conv, s, t in zip(self.maps, s_feats, t_feats, strict=True):
            t = t.detach()
            total = total + ((conv(s) - t) ** 2).mean() / (t**2).mean().clamp(min=1e-6)
        return total / len(self.maps)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class _Labelled:
    """Labelled crops of a YOLO ``data.yaml``'s train split (the zoo's loader) and the zoo detection loss."""

    def __init__(self, model: Any, config: TrainConfig) -> None:
        from cvdeploy.zoo.loss import DetectionLoss
        from cvdeploy.zoo.train import CropLoader

        if not hasattr(model, "forward_raw"):
            raise ModelError(
                "training with labels needs a zoo Detector (forward_raw); train label-free instead"
            )
        self.loader = CropLoader(str(config.labels), "train", config.crop, config.batch, config.seed)
        self.criterion = DetectionLoss(model)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self) -> Iterator[Any]:
        yield from self.loader.epoch()
