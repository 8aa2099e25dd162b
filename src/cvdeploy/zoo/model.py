"""A compact anchor-free detector in the YOLOv8 style, written in plain PyTorch.

Architecture: Conv-BN-SiLU blocks, a CSP backbone of C2f blocks with an SPPF at the end, a PAN/FPN
neck, and decoupled box/class heads at strides 8, 16 and 32. Boxes are regressed as distributions
over ``reg_max`` bins per side (distribution focal loss) and decoded inside ``forward``, so in eval
mode the model returns exactly the ``yolov8`` output layout::

    (B, 4 + nc, N)   rows 0-3: cx, cy, w, h in input pixels; rows 4..: sigmoid class scores
                     N = sum over strides s of (H / s) * (W / s)

Anchor points are built from the feature maps' own shapes (``ones_like(..).cumsum``), so the graph
traces with dynamic batch, height and width (any H, W divisible by 32). In training mode ``forward``
returns the raw per-level head outputs that :mod:`cvdeploy.zoo.loss` consumes.

Two sizes come from one definition by width/depth multipliers: :func:`build_n` (1.40 M parameters)
and :func:`build_s` (3.91 M parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cvdeploy._deps import require

require("torch", "the zoo models and their training")  # one-line install hint instead of an ImportError

import torch
from torch import nn

from cvdeploy.zoo.classes import CLASS_NAMES, IMGSZ, NUM_CLASSES, STRIDES

__all__ = [
    "CLASS_NAMES",
    "REG_MAX",
    "SIZES",
    "STRIDES",
    "Detector",
    "ModelSize",
    "build_model",
    "build_n",
    "build_s",
    "count_parameters",
    "make_anchors",
]

#: Number of distribution bins per box side (DFL).
REG_MAX: int = 16


@dataclass(frozen=True)
class ModelSize:
    """Width and depth multipliers applied to the base channels (64..1024) and depths (3, 6, 6, 3)."""

    width: float
    depth: float
    max_channels: int
    head_channels: int | None = None  # hidden width of both head branches; None: the YOLOv8 rule


#: The sizes of the zoo family.
SIZES: dict[str, ModelSize] = {
    "n": ModelSize(width=0.25, depth=0.34, max_channels=112, head_channels=48),
    "s": ModelSize(width=0.375, depth=0.34, max_channels=192),
}


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → BatchNorm → SiLU, with 'same' padding for odd kernels."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03),
            nn.SiLU(inplace=True),
        )


class Bottleneck(nn.Module):
    """Two 3x3 convolutions with an optional residual connection."""

    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(c, c, 3)
        self.conv2 = ConvBNAct(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block: a 1x1 conv splits the input in two halves, one half runs through ``n`` bottlenecks
    whose every intermediate output is kept, and a 1x1 conv fuses all of them."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.hidden = c_out // 2
        self.conv_in = ConvBNAct(c_in, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))
        self.conv_out = ConvBNAct((2 + n) * self.hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv_in(x).chunk(2, 1)
        outs = [a, b]
        for block in self.blocks:
            b = block(b)
            outs.append(b)
        return self.conv_out(torch.cat(outs, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools, concatenated and fused."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in // 2
        self.conv_in = ConvBNAct(c_in, hidden, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.conv_out = ConvBNAct(4 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.conv_in(x)
        y1 = self.pool(y0)
        y2 = self.pool(y1)
        return self.conv_out(torch.cat([y0, y1, y2, self.pool(y2)], 1))


class Backbone(nn.Module):
    """CSP backbone; returns the P3, P4, P5 feature maps (strides 8, 16, 32)."""

    def __init__(self, ch: list[int], depth: list[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvBNAct(3, ch[0], 3, 2), ConvBNAct(ch[0], ch[1], 3, 2), C2f(ch[1], ch[1], depth[0])
        )
        self.stage3 = nn.Sequential(ConvBNAct(ch[1], ch[2], 3, 2), C2f(ch[2], ch[2], depth[1]))
        self.stage4 = nn.Sequential(ConvBNAct(ch[2], ch[3], 3, 2), C2f(ch[3], ch[3], depth[2]))
        self.stage5 = nn.Sequential(
            ConvBNAct(ch[3], ch[4], 3, 2), C2f(ch[4], ch[4], depth[3]), SPPF(ch[4], ch[4])
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.stage3(self.stem(x))
        p4 = self.stage4(p3)
        return p3, p4, self.stage5(p4)


class Neck(nn.Module):
    """PAN/FPN: a top-down path (upsample + concat) then a bottom-up path (strided conv + concat)."""

    def __init__(self, ch: list[int], n: int) -> None:
        super().__init__()
        c3, c4, c5 = ch[2], ch[3], ch[4]
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.td4 = C2f(c5 + c4, c4, n, shortcut=False)
        self.td3 = C2f(c4 + c3, c3, n, shortcut=False)
        self.down3 = ConvBNAct(c3, c3, 3, 2)
        self.bu4 = C2f(c3 + c4, c4, n, shortcut=False)
        self.down4 = ConvBNAct(c4, c4, 3, 2)
        self.bu5 = C2f(c4 + c5, c5, n, shortcut=False)

    def forward(
        self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3, p4, p5 = feats
        t4 = self.td4(torch.cat([self.up(p5), p4], 1))
        n3 = self.td3(torch.cat([self.up(t4), p3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return n3, n4, n5


class Head(nn.Module):
    """Decoupled head for one level: a box branch (``4 * reg_max`` logits) and a class branch (``nc``)."""

    def __init__(self, c_in: int, c_box: int, c_cls: int, nc: int, reg_max: int) -> None:
        super().__init__()
        self.box = nn.Sequential(
            ConvBNAct(c_in, c_box, 3), ConvBNAct(c_box, c_box, 3), nn.Conv2d(c_box, 4 * reg_max, 1)
        )
        self.cls = nn.Sequential(
            ConvBNAct(c_in, c_cls, 3), ConvBNAct(c_cls, c_cls, 3), nn.Conv2d(c_cls, nc, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.box(x), self.cls(x)], 1)


def make_anchors(feats: list[torch.Tensor], strides: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points of the feature maps ``feats`` (each ``(B, C, H, W)``).

    Returns ``(points, stride)``: ``(N, 2)`` xy cell centres in units of each level's stride and
    ``(N, 1)`` the stride of each point. Built with ``cumsum`` over ``ones_like`` so that H and W stay
    dynamic when the model is traced for ONNX.
    """
    points, stride_col = [], []
    for feat, s in zip(feats, strides, strict=True):
        ones = torch.ones_like(feat[0, 0])  # (H, W)
        gx = ones.cumsum(1) - 0.5
        gy = ones.cumsum(0) - 0.5
        points.append(torch.stack([gx.flatten(), gy.flatten()], 1))
        stride_col.append(ones.flatten()[:, None] * s)
    return torch.cat(points, 0), torch.cat(stride_col, 0)


class Detector(nn.Module):
    """YOLOv8-style anchor-free detector.

    ``forward(images)`` takes ``(B, 3, H, W)`` float RGB scaled to 0-1 (H, W divisible by 32). In
    eval mode it returns ``(B, 4 + nc, N)`` (cx, cy, w, h pixels; sigmoid class scores); in training
    mode the list of per-level raw outputs ``(B, 4 * reg_max + nc, H / s, W / s)``.
    """

    def __init__(
        self, size: str = "n", num_classes: int = NUM_CLASSES, reg_max: int = REG_MAX, imgsz: int = IMGSZ
    ) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
        cfg = SIZES[size]
        ch = [min(cfg.max_channels, _round8(c * cfg.width)) for c in (64, 128, 256, 512, 1024)]
        depth = [max(1, round(d * cfg.depth)) for d in (3, 6, 6, 3)]
        self.size, self.nc, self.reg_max, self.strides = size, num_classes, reg_max, STRIDES
        self.backbone = Backbone(ch, depth)
        self.neck = Neck(ch, depth[0])
        c_box = cfg.head_channels or max(16, ch[2] // 4, 4 * reg_max)
        c_cls = cfg.head_channels or max(ch[2], min(num_classes, 100))
        self.heads = nn.ModuleList(Head(c, c_box, c_cls, num_classes, reg_max) for c in (ch[2], ch[3], ch[4]))
        self.register_buffer("proj", torch.arange(reg_max, dtype=torch.float32).view(1, 1, reg_max, 1), False)
        self._init_biases(imgsz)

    def _init_biases(self, imgsz: int) -> None:
        """Start box logits flat and class scores at a low prior (~5 objects per image)."""
        for head, s in zip(self.heads, self.strides, strict=True):
            assert isinstance(head, Head)
            box_out, cls_out = head.box[-1], head.cls[-1]
            assert isinstance(box_out, nn.Conv2d) and isinstance(cls_out, nn.Conv2d)
            assert box_out.bias is not None and cls_out.bias is not None
            nn.init.constant_(box_out.bias, 1.0)
            nn.init.constant_(cls_out.bias, math.log(5 / self.nc / (imgsz / s) ** 2))

    def forward_raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-level raw head outputs, each ``(B, 4 * reg_max + nc, H / s, W / s)``."""
        feats = self.neck(self.backbone(x))
        return [head(f) for head, f in zip(self.heads, feats, strict=True)]

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Raw head outputs → ``(B, 4 + nc, N)``: cx, cy, w, h in input pixels and sigmoid scores."""
        points, stride = make_anchors(raw, self.strides)  # (N, 2), (N, 1)
        flat = torch.cat([r.flatten(2) for r in raw], 2)  # (B, 4 * reg_max + nc, N)
        box, cls = flat.split([4 * self.reg_max, self.nc], 1)
        dist = box.reshape(box.shape[0], 4, self.reg_max, -1).softmax(2)
        ltrb = (dist * self.proj).sum(2)  # (B, 4, N) distances in strides
        pts, st = points.t().unsqueeze(0), stride.t().unsqueeze(0)  # (1, 2, N), (1, 1, N)
        x1y1, x2y2 = pts - ltrb[:, :2], pts + ltrb[:, 2:]
        cxcy, wh = (x1y1 + x2y2) * 0.5 * st, (x2y2 - x1y1) * st
        return torch.cat([cxcy, wh, cls.sigmoid()], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        raw = self.forward_raw(x)
        return raw if self.training else self.decode(raw)


def _round8(c: float) -> int:
    return max(8, int(math.ceil(c / 8) * 8))


def build_model(size: str = "n", num_classes: int = NUM_CLASSES) -> Detector:
    """Build an untrained detector of ``size`` (``"n"`` or ``"s"``) for ``num_classes`` classes."""
    return Detector(size, num_classes)


def build_n() -> Detector:
    """The zoo's ``n`` detector for the shapes classes (for ``python:cvdeploy.zoo.model:build_n``)."""
    return build_model("n")


def build_s() -> Detector:
    """The zoo's ``s`` detector for the shapes classes (for ``python:cvdeploy.zoo.model:build_s``)."""
    return build_model("s")


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
