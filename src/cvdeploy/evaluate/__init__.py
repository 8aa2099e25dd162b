"""Evaluation: datasets, metrics, validation and label-free fidelity.

- :mod:`~cvdeploy.evaluate.datasets` — YOLO (``data.yaml``), COCO json and ImageNet-style folder readers
- :mod:`~cvdeploy.evaluate.metrics` — COCO mAP of per-image arrays, top-k accuracy
- :mod:`~cvdeploy.evaluate.validate` — ``validate(bundle, data, ...)``: one artifact on a labelled dataset
- :mod:`~cvdeploy.evaluate.fidelity` — ``fidelity(bundle, data, artifact, against, ...)``: one artifact
  scored against another's outputs, no labels needed

The functions are not re-exported here so that ``evaluate.validate`` stays the module.
"""
