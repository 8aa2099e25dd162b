"""Triton-shaped documents: model configuration and inference statistics, as tritonclient and
perf_analyzer read them (plain functions of a loaded model version; no HTTP here)."""

from __future__ import annotations

from typing import Any

from cvdeploy.runtimes import TensorInfo
from cvdeploy.runtimes.registry import engine
from cvdeploy.serve.repository import ModelVersion
from cvdeploy.serve.tensors import DATATYPES, datatype, dims

_TRITON_TYPES = {v: f"TYPE_{'STRING' if v == 'BYTES' else v}" for v in [*DATATYPES, "BYTES"]}


def tensor_metadata(t: TensorInfo) -> dict[str, Any]:
    return {"name": t.name, "datatype": datatype(t.dtype), "shape": dims(t.shape)}


def triton_config(mv: ModelVersion) -> dict[str, Any]:
    """The model configuration as Triton returns it (what tritonclient and perf_analyzer read)."""
    mbs = mv.max_batch_size

    def tensor(t: TensorInfo) -> dict[str, Any]:
        d = dims(t.shape)[1:] if mbs > 0 else dims(t.shape)
        return {"name": t.name, "data_type": _TRITON_TYPES.get(datatype(t.dtype), "TYPE_INVALID"),
                "dims": d, "is_shape_tensor": False}  # fmt: skip

    cfg = mv.config
    doc: dict[str, Any] = {
        "name": mv.name,
        "platform": mv.platform,
        "backend": engine(mv.artifact.runtime).triton_backend,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": mbs,
        "input": [{**tensor(t), "format": "FORMAT_NONE", "allow_ragged_batch": False, "optional": False}
                  for t in mv.inputs],
        "output": [{**tensor(t), "label_filename": ""} for t in mv.outputs],
        "instance_group": [{"name": f"{mv.name}_0", "kind": "KIND_CPU" if cfg.device == "cpu" else "KIND_GPU",
                            "count": len(mv.pipelines), "gpus": []}],
        "model_transaction_policy": {"decoupled": False},
        "parameters": {
            "cvdeploy_artifact": {"string_value": mv.artifact.name},
            "cvdeploy_task": {"string_value": mv.contract.task},
            "cvdeploy_version": {"string_value": str(mv.version)},
            "cvdeploy_batching": {"string_value": mv.batching.describe()},
        },
    }  # fmt: skip
    if mv.batcher.batching:
        doc["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": int(cfg.max_queue_delay_ms * 1000),
            "preserve_ordering": False,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": int(cfg.timeout_s * 1e6),
                "allow_timeout_override": True,
                "max_queue_size": cfg.queue_size,
            },
        }
    return doc


def model_stats(mv: ModelVersion) -> dict[str, Any]:
    """Inference statistics in Triton's shape, plus cvdeploy's queue counters."""
    st = mv.batcher.stats
    ns = int(st.inference_s * 1e9)
    return {
        "name": mv.name,
        "version": str(mv.version),
        "inference_count": st.rows,
        "execution_count": st.batches,
        "inference_stats": {
            "success": {"count": st.requests - st.dropped - st.timed_out - st.rejected, "ns": 0},
            "fail": {"count": st.timed_out + st.rejected, "ns": 0},
            "compute_infer": {"count": st.batches, "ns": ns},
        },
        "batch_stats": [
            {"batch_size": b, "compute_infer": {"count": c, "ns": 0}}
            for b, c in sorted(st.batch_rows.items())
        ],
        "batching": mv.batching.to_dict(),
        "queue": {"depth": mv.batcher.depth, "rejected": st.rejected, "timed_out": st.timed_out,
                  "dropped": st.dropped, "requests_per_batch": dict(sorted(st.requests_per_batch.items()))},
    }  # fmt: skip
