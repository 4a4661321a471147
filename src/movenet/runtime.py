"""Inference as preprocess -> run -> postprocess, independent of the backend.

This module imports only numpy and opencv (and onnxruntime for ``OnnxPredictor``) so a
deployment needs no torch. Backends subclass ``Predictor`` and implement ``run``.
"""
from __future__ import annotations

import numpy as np

from .decode import center_prior, decode_single
from .image import crop_and_resize, letterbox, to_image_coords

# TF.js MoveNet: keypoints scoring above this count towards the pose score.
POSE_SCORE_KEYPOINT_THRESHOLD = 0.2


def pose_score(keypoints: np.ndarray, threshold: float = POSE_SCORE_KEYPOINT_THRESHOLD) -> float:
    """Mean score of the keypoints above ``threshold`` (0 if none), as TF.js MoveNet."""
    s = keypoints[:, 2]
    good = s > threshold
    return float(s[good].mean()) if good.any() else 0.0


class Predictor:
    """Base: ``input_size``, decoding constants and ``run`` come from the backend."""

    input_size: int
    prior: np.ndarray
    distance_offset: float
    coord_scale: float | None = None

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """batch: float32 [N,3,S,S] RGB 0..255 -> (heatmaps, centers, regression, offsets)."""
        raise NotImplementedError

    def preprocess(self, img: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        square, side = letterbox(img, self.input_size)
        return self._to_batch(square), (0.0, 0.0, side, side)

    def preprocess_crop(self, img: np.ndarray, box: tuple[float, float, float, float]):
        return self._to_batch(crop_and_resize(img, box, self.input_size)), box

    @staticmethod
    def _to_batch(square: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(square.transpose(2, 0, 1)[None], dtype=np.float32)

    def postprocess(self, outputs, box) -> np.ndarray:
        heat, center, reg, off = (o[0] for o in outputs)
        kpts = decode_single(heat, center, reg, off, self.prior, self.distance_offset, self.coord_scale)
        return to_image_coords(kpts, box)

    def __call__(self, img: np.ndarray, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
        """RGB uint8 image -> [K,3] (x, y, score) in image pixels. With ``box`` = (x0, y0, w, h)
        only that region is looked at (it may extend past the image)."""
        batch, box = self.preprocess(img) if box is None else self.preprocess_crop(img, box)
        return self.postprocess(self.run(batch), box)


class OnnxPredictor(Predictor):
    """onnxruntime backend for models exported by ``movenet export`` (four head outputs,
    input size, schema and decoding constants in the ONNX metadata)."""

    def __init__(self, path: str, threads: int | None = None, providers: list[str] | None = None):
        import json

        import onnxruntime as ort

        from .errors import MoveNetError

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise MoveNetError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:120]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "movenet" not in meta:
            raise MoveNetError(f"{path}: no movenet metadata (export it with `movenet export`)")
        info = json.loads(meta["movenet"])
        self.metadata = info
        self.input_size = int(info["input_size"])
        self.distance_offset = float(info["distance_offset"])
        self.coord_scale = float(info.get("coord_scale", 4.0 / self.input_size))
        grid = self.input_size // 4
        prior = info.get("center_prior")
        self.prior = (np.asarray(prior, np.float32).reshape(grid, grid) if prior is not None
                      else center_prior(grid, self.distance_offset))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()][:4]

    def run(self, batch: np.ndarray):
        return tuple(self.session.run(self.output_names, {self.input_name: batch}))
