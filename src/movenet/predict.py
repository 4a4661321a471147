"""The torch backend of the predictor, and model loading by name/path for any backend.
torch is imported where it is needed: ``create_predictor("model.onnx")`` runs without it."""
from __future__ import annotations

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


def create_predictor(spec: str, backend: str = "torch", threads: int | None = None) -> Predictor:
    """``spec``: ``lightning``/``thunder``, a checkpoint, a TF.js model.json or an exported
    ``.onnx`` file (the latter always runs in onnxruntime)."""
    if str(spec).endswith(".onnx"):
        return OnnxPredictor(spec, threads=threads)
    if backend == "onnx":
        from .export import export_onnx_cached
        return OnnxPredictor(export_onnx_cached(spec), threads=threads)
    import torch

    from .checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    model, schema = load_model(spec)
    return TorchPredictor(model, schema=schema)
