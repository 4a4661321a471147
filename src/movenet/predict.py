"""The torch backend of the predictor, and model loading by name/path for any backend.
torch is imported where it is needed: ``create_predictor("model.onnx")`` runs without it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .runtime import OnnxPredictor, Predictor
from .schema import COCO17, KeypointSchema

if TYPE_CHECKING:
    from .model import MoveNet


class TorchPredictor(Predictor):
    def __init__(self, model: MoveNet, device: str = "cpu", schema: KeypointSchema = COCO17):
        self.model = model.eval().to(device)
        self.schema = schema
        self.device = device
        self.input_size = model.config.input_size
        self.prior = model.center_prior.cpu().numpy()
        self.distance_offset = float(model.distance_offset)
        self.coord_scale = float(model.coord_scale)

    def run(self, batch: np.ndarray):
        import torch

        with torch.inference_mode():
            outs = self.model(torch.from_numpy(batch).to(self.device))
            return tuple(o.float().cpu().numpy() for o in outs)


EXPORTED = (".onnx", ".tflite")  # files that run in their own runtime


def file_predictor(spec: str, threads: int | None = None, spinning: bool = True) -> Predictor:
    """An exported model file in its own runtime: a ``movenet export`` ``.onnx`` (its metadata
    tells), else Google's MoveNet-format ``.onnx`` / ``.tflite`` (keypoints only)."""
    from .errors import MoveNetError
    from .runtime import NoMovenetMetadata, ReferencePredictor

    if Path(spec).suffix.lower() == ".onnx":
        try:
            return OnnxPredictor(spec, threads=threads, spinning=spinning)
        except NoMovenetMetadata:
            pass
    try:
        return ReferencePredictor(spec, threads=threads)
    except MoveNetError as e:
        if Path(spec).suffix.lower() != ".onnx":
            raise
        reason = str(e).removeprefix(f"{spec}: ")
        raise MoveNetError(f"{spec}: neither a `movenet export` file (no movenet metadata) nor a model in "
                           f"Google's MoveNet format ({reason})") from None


def create_predictor(spec: str | os.PathLike, backend: str = "torch", threads: int | None = None) -> Predictor:
    """A predictor for what ``--model`` takes: ``lightning``/``thunder``, a checkpoint, a TF.js
    model.json (``NAME@SIZE`` for another input size; ``backend`` torch, or onnx: exported once
    into the cache), an ``.onnx`` from ``movenet export``, or Google's MoveNet-format ``.onnx`` /
    ``.tflite`` (keypoints only: ``ReferencePredictor``). Files always run in their own runtime;
    nothing but the torch backend needs torch. ``threads``: onnxruntime's threads for this
    predictor; with the torch backend, ``torch.set_num_threads`` (for the whole process)."""
    from .errors import MoveNetError

    if backend not in ("torch", "onnx"):
        raise MoveNetError(f"backend {backend!r}: torch or onnx")
    spec = str(spec)
    if Path(spec).suffix.lower() in EXPORTED:
        return file_predictor(spec, threads=threads)
    if backend == "onnx":
        from .export import export_onnx_cached  # torch only for the first, exporting call
        return OnnxPredictor(str(export_onnx_cached(spec)), threads=threads)
    import torch

    from .checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    model, schema = load_model(spec)
    return TorchPredictor(model, schema=schema)
