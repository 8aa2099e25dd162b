"""Pruning of PyTorch detectors.

Structured: torch-pruning's dependency graph (DepGraph) removes whole channels, a ratio of them
or until a target share of MACs is left; the convolutions that produce the outputs (found from
the autograd graph: the last convolutions before the output, as for the float head) are never
pruned on their output side, so the output layout ``(B, 4 + nc, N)`` is kept.

Unstructured: magnitude pruning zeroes the smallest weights. Dense CPU kernels still multiply
the zeros, so it brings no speedup — the sparsity report says so plainly.
"""

from __future__ import annotations

import copy
import logging
import types
from dataclasses import dataclass
from typing import Any

from cvdeploy._deps import require
from cvdeploy.errors import ConfigError, ModelError

log = logging.getLogger("cvdeploy")


def output_convs(model: Any, example: Any) -> list[Any]:
    """Convolutions whose outputs reach the model output without another trainable layer.

    Walks the autograd graph back from the eval-mode output; a convolution with frozen (constant)
    weights, like a DFL projection, is walked through.
    """
    torch = require("torch")
    by_param = {id(m.weight): m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}
    was = model.training
    model.eval()
    with torch.enable_grad():
        out = model(example)
    model.train(was)
    roots = [o for o in (out if isinstance(out, list | tuple) else [out]) if getattr(o, "grad_fn", None)]
    found: dict[int, Any] = {}
    seen: set[int] = set()
    stack = [o.grad_fn for o in roots]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        nexts = [n for n, _ in fn.next_functions if n is not None]
        layer = None
        if fn.name().startswith(("ConvolutionBackward", "AddmmBackward", "MmBackward")):
            for n in nexts:
                var = getattr(n, "variable", None)
                if var is not None and id(var) in by_param:
                    layer = by_param[id(var)]
        if layer is not None:
            found[id(layer)] = layer
            continue
        stack.extend(nexts)
    return list(found.values())


def split_chunked_blocks(model: Any) -> int:
    """Rewrite CSP blocks that ``chunk`` one conv's output into two halves as two convs (same function).

    DepGraph cannot follow channel indices through ``chunk`` followed by ``cat`` (it prunes the
    wrong indices); two separate convs, initialised from the halves of the original, are exactly
    equivalent and prunable. Returns the number of blocks rewritten.
    """
    torch = require("torch")
    count = 0
    for module in list(model.modules()):
        conv_in = getattr(module, "conv_in", None)
        if not (hasattr(module, "blocks") and hasattr(module, "conv_out") and hasattr(module, "hidden")):
            continue
        if not isinstance(conv_in, torch.nn.Sequential) or getattr(module, "_cvdeploy_split", False):
            continue
        h = module.hidden
        halves = []
        for part in (slice(0, h), slice(h, 2 * h)):
            half = copy.deepcopy(conv_in)
            conv, bn = half[0], half[1]
            conv.weight = torch.nn.Parameter(conv.weight.data[part].clone())
            conv.out_channels = h
            if conv.bias is not None:
                conv.bias = torch.nn.Parameter(conv.bias.data[part].clone())
            bn.weight = torch.nn.Parameter(bn.weight.data[part].clone())
            bn.bias = torch.nn.Parameter(bn.bias.data[part].clone())
            bn.running_mean = bn.running_mean[part].clone()
            bn.running_var = bn.running_var[part].clone()
            bn.num_features = h
            halves.append(half)
        module.conv_a, module.conv_b = halves
        del module.conv_in
        module._cvdeploy_split = True
        module.forward = types.MethodType(_split_forward, module)
        count += 1
    return count + _split_ultralytics_blocks(model)


#: Ultralytics CSP blocks whose first conv is chunked in two: C2f-style (every half feeds the concat, the
#: second through the bottlenecks) and C2PSA-style (the second half through attention blocks).
_C2F_STYLE = ("C2f", "C3k2")
_C2PSA_STYLE = ("C2PSA",)


def _split_ultralytics_blocks(model: Any) -> int:
    """The same rewrite for Ultralytics' C2f/C3k2/C2PSA blocks (``cv1`` chunked into halves of ``c``)."""
    count = 0
    for module in list(model.modules()):
        kind = type(module).__name__
        if kind not in _C2F_STYLE + _C2PSA_STYLE or getattr(module, "_cvdeploy_split", False):
            continue
        cv1, h = getattr(module, "cv1", None), getattr(module, "c", None)
        conv, bn = getattr(cv1, "conv", None), getattr(cv1, "bn", None)
        if conv is None or bn is None or not isinstance(h, int) or conv.out_channels != 2 * h:
            continue
        module.cv1a, module.cv1b = (_half(cv1, part) for part in (slice(0, h), slice(h, 2 * h)))
        del module.cv1
        module._cvdeploy_split = True
        forward = _c2f_forward if kind in _C2F_STYLE else _c2psa_forward
        module.forward = types.MethodType(forward, module)
        count += 1
    return count


def _half(block: Any, part: slice) -> Any:
    """A copy of an Ultralytics ``Conv`` (conv + bn + act) keeping only the output channels in ``part``."""
    torch = require("torch")
    half = copy.deepcopy(block)
    conv, bn = half.conv, half.bn
    conv.weight = torch.nn.Parameter(conv.weight.data[part].clone())
    conv.out_channels = conv.weight.shape[0]
    if conv.bias is not None:
        conv.bias = torch.nn.Parameter(conv.bias.data[part].clone())
    bn.weight = torch.nn.Parameter(bn.weight.data[part].clone())
    bn.bias = torch.nn.Parameter(bn.bias.data[part].clone())
    bn.running_mean = bn.running_mean[part].clone()
    bn.running_var = bn.running_var[part].clone()
    bn.num_features = conv.out_channels
    return half


def _c2f_forward(self: Any, x: Any) -> Any:
    torch = require("torch")
    y = [self.cv1a(x), self.cv1b(x)]
    y.extend(m(y[-1]) for m in self.m)
    return self.cv2(torch.cat(y, 1))


def _c2psa_forward(self: Any, x: Any) -> Any:
    torch = require("torch")
    a, b = self.cv1a(x), self.cv1b(x)
    return self.cv2(torch.cat((a, self.m(b)), 1))


def _split_forward(self: Any, x: Any) -> Any:
    torch = require("torch")
    a, b = self.conv_a(x), self.conv_b(x)
    outs = [a, b]
    for block in self.blocks:
        b = block(b)
        outs.append(b)
    return self.conv_out(torch.cat(outs, 1))


@dataclass
class PruneReport:
    """What structured pruning did: MACs and parameters before/after (counted by torch-pruning)."""

    ratio: float
    macs_before: float
    macs_after: float
    params_before: int
    params_after: int
    kept_layers: int  # output convolutions left whole

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_ratio": self.ratio,
            "gmacs_before": round(self.macs_before / 1e9, 3),
            "gmacs_after": round(self.macs_after / 1e9, 3),
            "macs_kept": round(self.macs_after / self.macs_before, 3) if self.macs_before else None,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "output_layers_kept_whole": self.kept_layers,
        }


def prune_channels(
    model: Any, example: Any, ratio: float | None = None, target_macs: float | None = None,
    round_to: int | None = 8,
    steps: int = 10,
) -> PruneReport:  # fmt: skip
    """Remove channels from ``model`` in place: ``ratio`` of them, or until ``target_macs`` (share) is left.

    Channel counts are rounded to multiples of ``round_to``: CPU kernels work on blocks of 8/16
    channels, and odd counts waste the savings — measured on zoo-n at 640 (ONNX Runtime, 1 thread):
    30 % pruning with exact counts kept 48 % of the MACs but ran only 1.05x faster; rounded to 8 it
    kept 36 % and ran 1.7x faster.
    """
    torch = require("torch")
    tp = require("torch_pruning", "structured pruning")
    if (ratio is None) == (target_macs is None):
        raise ConfigError("give either a channel ratio or a target share of MACs to keep")
    if ratio is not None and not 0.0 < ratio < 0.9:
        raise ConfigError(f"channel ratio {ratio} must lie between 0 and 0.9")
    if target_macs is not None and not 0.05 < target_macs < 1.0:
        raise ConfigError(f"target MACs share {target_macs} must lie between 0.05 and 1")
    model.eval()
    split_chunked_blocks(model)
    keep = output_convs(model, example)
    if not keep:
        raise ModelError("cannot find the output convolutions of this model; it cannot be pruned safely")
    # rounding to a multiple of ``round_to`` would take half or all of a narrow layer (16 -> 8):
    # such layers, at the highest resolutions in YOLO-style models, are left whole
    narrow = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and round_to
              and m.out_channels <= 2 * round_to and not any(m is k for k in keep)]  # fmt: skip
    macs0, params0 = tp.utils.count_ops_and_params(model, example)
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    iterative = steps if target_macs is not None else 1
    # attention blocks reshape channels into heads, which DepGraph cannot prune consistently: left whole
    attention = [m for m in model.modules() if type(m).__name__ in ("Attention", "PSABlock", "C2PSA")]
    pruner = tp.pruner.MetaPruner(
        model, example, importance=imp, pruning_ratio=ratio if ratio is not None else 0.8,
        iterative_steps=iterative, ignored_layers=keep + narrow + attention, round_to=round_to,
    )  # fmt: skip
    with torch.no_grad():
        for _ in range(iterative):
            pruner.step()
            if target_macs is not None:
                macs, _ = tp.utils.count_ops_and_params(model, example)
                if macs <= target_macs * macs0:
                    break
    macs1, params1 = tp.utils.count_ops_and_params(model, example)
    return PruneReport(ratio or 0.0, float(macs0), float(macs1), int(params0), int(params1), len(keep))


def magnitude_sparsity(model: Any, amount: float) -> dict[str, Any]:
    """Zero the ``amount`` smallest-magnitude conv/linear weights of each layer; the sparsity report."""
    torch = require("torch")
    if not 0.0 < amount < 1.0:
        raise ConfigError(f"sparsity {amount} must lie between 0 and 1")
    zeros = total = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                w = m.weight
                k = int(amount * w.numel())
                if k:
                    thresh = w.abs().flatten().kthvalue(k).values
                    w.mul_((w.abs() > thresh).to(w.dtype))
                zeros += int((w == 0).sum())
                total += w.numel()
    return {
        "sparsity": round(zeros / max(total, 1), 4),
        "note": "unstructured sparsity: dense CPU kernels (ONNX Runtime, OpenVINO) still multiply the zeros, "
        "so this gives no speedup and no smaller file unless compressed; use structured pruning for speed",
    }
