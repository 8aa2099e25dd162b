"""Reused buffers vs a new array per image: page faults and time of the non-model stages of ``predict``.

``Pipeline.predict`` decodes each JPEG into a per-thread buffer, resizes the image part of the letterbox into
another and writes the model input (image part and padding) into a per-thread tensor (``cvdeploy.preprocess.Preprocessor``). The code it
replaced allocated all three per image: ``decode_image`` → ``Preprocessor.resize`` + ``to_tensor``
(OpenCV's ``blobFromImages``), then the same inference and decoding. What a new array costs depends on
the process's history — glibc ``malloc`` maps blocks over its mmap threshold afresh, unmaps them when
freed, raises the threshold after some frees and trims the heap after others — so each candidate runs
in a fresh process of its own, as a user's ``predict`` loop does, and the two alternate ``--rounds``
times (the order swapping each round). Each process loads zoo:n (onnx-fp32, 640, default threads), runs
every image once untimed, then ``--passes`` passes over 8 photographs of 300-1000 px (the ones
``cvdeploy bench`` feeds), and reports minor page faults per image (``getrusage``) and the median
read+decode and preprocess times. Both candidates' tensors are compared once, in the parent.

    python benchmarks/buffers.py [--rounds 4] [--passes 5]

Ends with ``RESULT faults_new=… faults_reused=… prep_ms_new=… prep_ms_reused=… ratio=…`` (ratio: reused /
new, read+decode+preprocess per image, median over rounds; lower is better).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _paths(pipe, pre):  # type: ignore[no-untyped-def]
    from cvdeploy.images import decode_image, read_bytes

    def new_arrays(f: Path) -> tuple[float, float, np.ndarray]:
        t0 = time.perf_counter()
        img = decode_image(read_bytes(f))
        t1 = time.perf_counter()
        resized, geom = pre.resize(img)
        x = pre.to_tensor([resized])
        t2 = time.perf_counter()
        pipe.decode(pipe.infer(x), [geom])
        return t1 - t0, t2 - t1, x

    def reused(f: Path) -> tuple[float, float, np.ndarray]:
        t0 = time.perf_counter()
        x, geoms, read = pipe.load([f])
        t2 = time.perf_counter()
        pipe.decode(pipe.infer(x), geoms)
        return read, t2 - t0 - read, x

    return {"new": new_arrays, "reused": reused}


def _pipeline():  # type: ignore[no-untyped-def]
    from cvdeploy.pipeline import Pipeline
    from cvdeploy.runtimes import RuntimeOptions

    pipe = Pipeline.from_bundle("zoo:n", "onnx-fp32", RuntimeOptions())  # threads: the usable CPUs
    return pipe, pipe.preprocessor


def worker(which: str, folder: Path, passes: int) -> None:
    pipe, pre = _pipeline()
    fn = _paths(pipe, pre)[which]
    files = sorted(folder.glob("*.jpg"))
    for f in files:
        fn(f)
    faults, read, prep = [], [], []
    for _ in range(passes):
        for f in files:
            f0 = _faults()
            r, p, _ = fn(f)
            faults.append(_faults() - f0)
            read.append(r * 1e3)
            prep.append(p * 1e3)
    print(
        json.dumps(
            {"faults": float(np.mean(faults)), "read": float(np.median(read)), "prep": float(np.median(prep))}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--worker", choices=("new", "reused"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.folder), args.passes)
        return
    import cv2

    from cvdeploy.images import sample_images

    with tempfile.TemporaryDirectory(prefix="cvdeploy-buffers-") as tmp:
        folder = Path(tmp)
        for i, img in enumerate(sample_images(8)):
            cv2.imwrite(str(folder / f"{i}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        pipe, pre = _pipeline()
        paths = _paths(pipe, pre)
        for f in sorted(folder.glob("*.jpg")):
            assert np.array_equal(paths["new"](f)[2], paths["reused"](f)[2]), (
                f"the two paths disagree on {f.name}"
            )
        del pipe, pre, paths
        runs: dict[str, list[dict[str, float]]] = {"new": [], "reused": []}
        for r in range(args.rounds):
            for which in ("new", "reused") if r % 2 == 0 else ("reused", "new"):
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    which,
                    "--folder",
                    str(folder),
                    "--passes",
                    str(args.passes),
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                runs[which].append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"8 photographs × {args.passes} passes per process, {args.rounds} processes each, zoo:n onnx-fp32 at 640"
    )
    med = {
        n: {k: float(np.median([run[k] for run in rs])) for k in ("faults", "read", "prep")}
        for n, rs in runs.items()
    }
    for n, label in (("new", "a new array per image"), ("reused", "reused buffers (predict)")):
        per = ", ".join(f"{run['faults']:.0f}" for run in runs[n])
        print(f"{label:<26} page faults/image {med[n]['faults']:7.1f} (per process: {per}); read+decode "
              f"{med[n]['read']:.2f} ms, preprocess {med[n]['prep']:.2f} ms")  # fmt: skip
    ratio = (med["reused"]["read"] + med["reused"]["prep"]) / (med["new"]["read"] + med["new"]["prep"])
    print(f"read+decode+preprocess, reused / new: {ratio:.3f}")
    print(f"RESULT faults_new={med['new']['faults']:.0f} faults_reused={med['reused']['faults']:.0f} "
          f"prep_ms_new={med['new']['prep']:.2f} prep_ms_reused={med['reused']['prep']:.2f} "
          f"read_ms_new={med['new']['read']:.2f} read_ms_reused={med['reused']['read']:.2f} ratio={ratio:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
