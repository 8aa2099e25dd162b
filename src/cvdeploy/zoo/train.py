"""Reproducible, time-boxed CPU training of the zoo detectors on the synthetic shapes dataset.

    python -m cvdeploy.zoo.train --size n --threads 1 --time-budget-min 55 --out runs/zoo-n

The learning-rate schedule (linear warm-up, cosine decay) is driven by
``progress = max(step / total_steps, elapsed / budget)``, so a run always ends on time, whatever the
machine's speed. Training uses random native-scale crops (default 384x384 cut from the 640x640
images): objects keep the pixel size they have at inference at 640, for ~3x less compute per image.
An EMA of the weights is evaluated (COCO mAP50-95 at full 640 on a held-out val set) every few
minutes and the best one is kept. Outputs in ``--out``: ``best.pt`` (plain EMA state dict, loadable
with ``torch.load(..., weights_only=True)``), ``last.pt`` and ``train_log.json``.

The datasets are generated on first use (train seed 1000, val seed 2000, test seed 3000; none of the
three is ever used for another purpose); run with ``--prepare-only`` once before starting several
trainings that share them.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cvdeploy._deps import require

require("torch", "the zoo models and their training")  # one-line install hint instead of an ImportError

import torch
from torch import nn

from cvdeploy.zoo.classes import CLASS_NAMES, IMGSZ
from cvdeploy.zoo.dataset import generate_dataset, list_split, read_labels
from cvdeploy.zoo.loss import DetectionLoss
from cvdeploy.zoo.model import build_model, count_parameters
from cvdeploy.zoo.validate import coco_map, load_images

__all__ = ["CropLoader", "ModelEMA", "TrainConfig", "lr_factor", "prepare_data", "train"]

#: Seeds of the generated datasets; each is used for one purpose only.
TRAIN_SEED, VAL_SEED, TEST_SEED = 1000, 2000, 3000


@dataclass
class TrainConfig:
    """All knobs of one training run (recorded in ``train_log.json``)."""

    size: str = "n"
    out: str = ""
    data_root: str = "runs/zoo-data"
    train_images: int = 6000
    val_images: int = 120
    test_images: int = 300
    crop: int = 384
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.03  # share of progress spent warming up
    final_lr: float = 0.02  # final LR as a share of --lr
    epochs: int = 300  # upper bound; the time budget normally ends training first
    time_budget_min: float = 55.0
    eval_every_min: float = 12.0
    ema_decay: float = 0.997
    ema_tau: float = 150.0
    threads: int = 1
    seed: int = 0
    channels_last: bool = True
    init_weights: str = ""  # a state dict to start from (e.g. continuing an interrupted run)


def prepare_data(root: str | Path, train_images: int, val_images: int, test_images: int) -> dict[str, Path]:
    """Generate (once) the train/val/test shapes datasets under ``root``; returns the ``data.yaml`` paths."""
    root = Path(root)
    plan = {
        "train": (TRAIN_SEED, train_images, (1.0, 0.0, 0.0)),
        "val": (VAL_SEED, val_images, (0.0, 1.0, 0.0)),
        "test": (TEST_SEED, test_images, (0.0, 0.0, 1.0)),
    }
    paths = {}
    for split, (seed, n, splits) in plan.items():
        folder = root / f"{split}-seed{seed}-n{n}"
        yaml_path = folder / "data.yaml"
        if not yaml_path.is_file():
            print(f"generating {split} set: {n} images, seed {seed} → {folder}", flush=True)
            generate_dataset(folder, images=n, seed=seed, imgsz=IMGSZ, splits=splits, progress=True)
        paths[split] = yaml_path
    return paths


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------


class CropLoader:
    """Batches of random native-scale square crops with their boxes, drawn from a YOLO split.

    Yields ``(images, targets)``: ``(B, 3, crop, crop)`` float RGB in 0-1, and ``(T, 6)`` rows
    ``(index in batch, class, x1, y1, x2, y2)`` in crop pixels. A box cut by the crop is kept
    (clipped) when at least ``min_keep`` of its area stays inside. Crops are centred near a random
    object 70 % of the time; flips and 90° rotations are applied (every class is symmetric enough).
    """

    def __init__(
        self, data_yaml: str | Path, split: str, crop: int, batch: int, seed: int, min_keep: float = 0.45
    ) -> None:
        self.items = []
        for img_path, label_path in list_split(data_yaml, split):
            classes, cxcywh = read_labels(label_path)
            self.items.append((str(img_path), classes, cxcywh))
        if not self.items:
            raise ValueError(f"no images in split {split!r} of {data_yaml}")
        self.crop, self.batch, self.min_keep = crop, batch, min_keep
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items) // self.batch

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.rng.permutation(len(self.items))
        for i in range(len(self)):
            imgs: list[np.ndarray] = []
            rows: list[list[float]] = []
            for j, k in enumerate(order[i * self.batch : (i + 1) * self.batch]):
                img, cls, boxes = self._sample(int(k))
                imgs.append(img)
                rows.extend([j, c, *b] for c, b in zip(cls.tolist(), boxes.tolist(), strict=True))
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(255.0)
            t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
            yield x, t

    def _sample(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        path, classes, cxcywh = self.items[k]
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read {path}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        half = cxcywh[:, 2:] / 2
        boxes = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], 1) * [w, h, w, h]
        c = min(self.crop, h, w)
        rng = self.rng
        if len(boxes) and rng.random() < 0.7:
            b = boxes[rng.integers(len(boxes))]
            cx, cy = rng.uniform(b[0], b[2]), rng.uniform(b[1], b[3])
            x0, y0 = int(cx - rng.uniform(0.1, 0.9) * c), int(cy - rng.uniform(0.1, 0.9) * c)
        else:
            x0, y0 = int(rng.integers(0, w - c + 1)), int(rng.integers(0, h - c + 1))
        x0, y0 = min(max(x0, 0), w - c), min(max(y0, 0), h - c)
        img = img[y0 : y0 + c, x0 : x0 + c]
        if len(boxes):
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            boxes = (boxes - [x0, y0, x0, y0]).clip(0, c)
            clipped = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            keep = (
                (clipped >= self.min_keep * area)
                & (boxes[:, 2] - boxes[:, 0] >= 2)
                & (boxes[:, 3] - boxes[:, 1] >= 2)
            )
            boxes, classes = boxes[keep], classes[keep]
        if rng.random() < 0.5:  # horizontal flip
            img = img[:, ::-1]
            boxes = np.column_stack([c - boxes[:, 2], boxes[:, 1], c - boxes[:, 0], boxes[:, 3]])
        if rng.random() < 0.5:  # vertical flip
            img = img[::-1]
            boxes = np.column_stack([boxes[:, 0], c - boxes[:, 3], boxes[:, 2], c - boxes[:, 1]])
        if rng.random() < 0.5:  # transpose (with the flips: all 8 right-angle symmetries)
            img = img.transpose(1, 0, 2)
            boxes = boxes[:, [1, 0, 3, 2]]
        return np.ascontiguousarray(img), classes, boxes.reshape(-1, 4)


# ----------------------------------------------------------------------------------------------------
# optimisation helpers
# ----------------------------------------------------------------------------------------------------


class ModelEMA:
    """Exponential moving average of a model's floating-point state (parameters and BN statistics).

    The decay ramps up as ``decay * (1 - exp(-updates / tau))`` so early, poor weights fade fast.
    """

    def __init__(self, model: nn.Module, decay: float = 0.997, tau: float = 150.0) -> None:
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        current = model.state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(current[name].detach(), alpha=1 - d)
            else:
                value.copy_(current[name])


def lr_factor(progress: float, warmup: float, final: float) -> float:
    """LR multiplier at ``progress`` in [0, 1]: linear warm-up from 0.1, then cosine down to ``final``."""
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    t = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay conv/linear weights only; biases and normalisation parameters are not decayed."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous (not channels-last) CPU copy of the state dict, for portable checkpoints."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train one detector as configured; writes best.pt, last.pt and train_log.json; returns the log."""
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(1)
    out = Path(cfg.out or f"runs/zoo-{cfg.size}")
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg.data_root, cfg.train_images, cfg.val_images, cfg.test_images)

    model = build_model(cfg.size, len(CLASS_NAMES))
    if cfg.init_weights:
        model.load_state_dict(torch.load(cfg.init_weights, map_location="cpu", weights_only=True))
    n_params = count_parameters(model)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau)
    criterion = DetectionLoss(model)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    loader = CropLoader(data["train"], "train", cfg.crop, cfg.batch, cfg.seed)
    val_images = load_images(data["val"], "val")
    total_steps = cfg.epochs * len(loader)
    budget = cfg.time_budget_min * 60.0
    reserve = 0.06 * budget  # time kept for the final evaluations; refined after the first one

    log: dict[str, Any] = {
        "config": asdict(cfg),
        "model": {"size": cfg.size, "params": n_params, "classes": CLASS_NAMES, "imgsz": IMGSZ},
        "data": {k: str(v) for k, v in data.items()},
        "seeds": {"train": cfg.seed, "train_data": TRAIN_SEED, "val_data": VAL_SEED, "test_data": TEST_SEED},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "threads": cfg.threads},
        "evals": [],
    }  # fmt: skip
    earlier = Path(cfg.init_weights).with_name("train_log.json") if cfg.init_weights else None
    if earlier is not None and earlier.is_file():  # continuing a run: keep its history
        log["continued_from"] = json.loads(earlier.read_text())
    best = -1.0

    def evaluate(step: int, epoch: int) -> float:
        nonlocal best, reserve
        t0 = time.perf_counter()
        metrics = coco_map(ema.ema, data["val"], "val", images=val_images, channels_last=cfg.channels_last)
        dt = time.perf_counter() - t0
        # the final evaluation also covers the test set
        reserve = dt * (1 + cfg.test_images / max(1, len(val_images))) * 1.15 + 20
        elapsed = round(time.perf_counter() - t_start, 1)
        row = {"step": step, "epoch": epoch, "images_seen": step * cfg.batch, "elapsed_s": elapsed,
               "eval_s": round(dt, 1), **metrics}  # fmt: skip
        log["evals"].append(row)
        if metrics["mAP50-95"] > best:
            best = metrics["mAP50-95"]
            torch.save(_plain_state_dict(ema.ema), out / "best.pt")
        torch.save(_plain_state_dict(ema.ema), out / "last.pt")
        print(f"[eval] step {step} epoch {epoch}: mAP50-95 {metrics['mAP50-95']:.4f} mAP50 "
              f"{metrics['mAP50']:.4f} (best {best:.4f}, {dt:.0f} s)", flush=True)  # fmt: skip
        (out / "train_log.json").write_text(json.dumps(log, indent=2))
        return dt

    bar = _bar(cfg.size)
    step, epoch, last_eval = 0, 0, time.perf_counter()
    t_train = time.perf_counter()
    losses = torch.zeros(3)
    done = False
    while not done and epoch < cfg.epochs:
        for x, targets in loader.epoch():
            elapsed = time.perf_counter() - t_start
            progress = max(step / total_steps, elapsed / max(1.0, budget - reserve))
            if progress >= 1.0:
                done = True
                break
            lr = cfg.lr * lr_factor(progress, cfg.warmup, cfg.final_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            x = x.contiguous(memory_format=fmt)
            loss, parts = criterion(model(x), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            ema.update(model)
            step += 1
            losses = 0.98 * losses + 0.02 * parts if step > 1 else parts
            rate = step * cfg.batch / (time.perf_counter() - t_train)
            bar.set(progress, f"ep {epoch} step {step} lr {lr:.2e} box {losses[0]:.3f} cls {losses[1]:.3f} "
                              f"dfl {losses[2]:.3f} {rate:.1f} img/s")  # fmt: skip
            if time.perf_counter() - last_eval > cfg.eval_every_min * 60:
                evaluate(step, epoch)
                last_eval = time.perf_counter()
        else:
            epoch += 1
    bar.close()
    train_s = time.perf_counter() - t_train
    log["train"] = {"steps": step, "epochs": epoch, "images_seen": step * cfg.batch,
                    "train_wall_s": round(train_s, 1),
                    "images_per_s": round(step * cfg.batch / max(train_s, 1e-9), 2)}  # fmt: skip
    evaluate(step, epoch)
    # honest final number: the best checkpoint on a test set never used for training or selection
    model.load_state_dict(torch.load(out / "best.pt", weights_only=True))
    log["test"] = coco_map(model.eval(), data["test"], "test", channels_last=cfg.channels_last)
    log["best_val_mAP50-95"] = best
    log["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    (out / "train_log.json").write_text(json.dumps(log, indent=2))
    print(f"[done] best val mAP50-95 {best:.4f}; test mAP50-95 {log['test']['mAP50-95']:.4f} "
          f"mAP50 {log['test']['mAP50']:.4f}; {log['total_wall_s']:.0f} s → {out}", flush=True)  # fmt: skip
    return log


class _bar:
    """A progress bar over [0, 1] (tqdm when installed and on a terminal, else a line every ~30 s)."""

    def __init__(self, size: str) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.tq: Any = None
        if self.tty:
            try:
                from tqdm import tqdm

                self.tq = tqdm(total=1000, desc=f"zoo-{size}", unit="‰")
            except ImportError:
                self.tq = None

    def set(self, progress: float, text: str) -> None:
        if self.tq is not None:
            self.tq.n = int(progress * 1000)
            self.tq.set_postfix_str(text, refresh=True)
        elif time.perf_counter() - self.last > 30:
            self.last = time.perf_counter()
            print(f"[{progress * 100:5.1f}%] {text}", flush=True)

    def close(self) -> None:
        if self.tq is not None:
            self.tq.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m cvdeploy.zoo.train --size n|s [options]``."""
    defaults = TrainConfig()
    ap = argparse.ArgumentParser(prog="python -m cvdeploy.zoo.train", description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["n", "s"], default="n")
    ap.add_argument("--out", default="", help="output folder (default runs/zoo-<size>)")
    ap.add_argument("--data-root", default=defaults.data_root, help="where the generated datasets live")
    ap.add_argument("--threads", type=int, default=defaults.threads)
    ap.add_argument("--time-budget-min", type=float, default=defaults.time_budget_min)
    ap.add_argument("--eval-every-min", type=float, default=defaults.eval_every_min)
    ap.add_argument("--epochs", type=int, default=defaults.epochs)
    ap.add_argument("--batch", type=int, default=defaults.batch)
    ap.add_argument("--crop", type=int, default=defaults.crop)
    ap.add_argument("--lr", type=float, default=defaults.lr)
    ap.add_argument("--train-images", type=int, default=defaults.train_images)
    ap.add_argument("--val-images", type=int, default=defaults.val_images)
    ap.add_argument("--test-images", type=int, default=defaults.test_images)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--init-weights", default="", help="state dict to start from (continue a run)")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--prepare-only", action="store_true", help="only generate the datasets, then exit")
    args = ap.parse_args(argv)
    if args.prepare_only:
        for split, path in prepare_data(
            args.data_root, args.train_images, args.val_images, args.test_images
        ).items():
            print(f"{split}: {path}")
        return
    kwargs = {k: v for k, v in vars(args).items() if k != "prepare_only"}
    train(TrainConfig(**kwargs))


if __name__ == "__main__":
    main()
