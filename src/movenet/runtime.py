"""Inference as preprocess -> run -> postprocess, independent of the backend.

This module imports only numpy and opencv (and onnxruntime for ``OnnxPredictor``) so a
deployment needs no torch. Backends subclass ``Predictor`` and implement ``run``.
"""
from __future__ import annotations

import numpy as np

from .decode import decode_single, pose_score  # noqa: F401  (pose_score is part of this API)
from .errors import MoveNetError, first_line
from .image import check_rgb_image, crop_and_resize, letterbox, to_image_coords
from .schema import COCO17, KeypointSchema


class Predictor:
    """Base: ``input_size``, decoding constants, the keypoint ``schema`` and ``run`` come from
    the backend."""

    input_size: int
    prior: np.ndarray
    distance_offset: float
    coord_scale: float | None = None
    schema: KeypointSchema = COCO17

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """batch: float32 [N,3,S,S] RGB 0..255 -> (heatmaps, centers, regression, offsets)."""
        raise NotImplementedError

    def preprocess(self, img: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        check_rgb_image(img)
        square, side = letterbox(img, self.input_size)
        return self._to_batch(square), (0.0, 0.0, side, side)

    def preprocess_crop(self, img: np.ndarray, box: tuple[float, float, float, float]):
        check_rgb_image(img)
        try:
            ok = len(box) == 4 and bool(np.isfinite(np.asarray(box, np.float64)).all()) and box[2] > 0 and box[3] > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise MoveNetError(f"box (x0, y0, width, height) needs 4 finite numbers with width, height > 0, "
                               f"got {box!r}")
        x0, y0, w, h = (float(v) for v in box)
        side = max(w, h)  # a person's box grows to a square around its centre: no stretched people
        box = (x0 + (w - side) / 2, y0 + (h - side) / 2, side, side)
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
        only that region is looked at (it may extend past the image), grown to a square around
        its centre where w and h differ."""
        batch, box = self.preprocess(img) if box is None else self.preprocess_crop(img, box)
        return self.postprocess(self.run(batch), box)


def mirror_outputs(outputs, flip_index: np.ndarray):
    """Head outputs of a horizontally mirrored input, expressed in the unmirrored frame: maps
    flipped along x, keypoint channels swapped left <-> right (``flip_index``), regression x
    negated (``keypoint cell - centre cell`` changes sign) and offset x replaced by ``1 - x``
    (a point at ``u`` cells lies at ``W - u`` in the mirror: cell ``W-1-floor(u)``, residual
    ``1 - (u - floor(u))``). Its own inverse. Shapes [N,K,H,W], [N,1,H,W], [N,2K,H,W] x 2."""
    heat, center, reg, off = outputs
    n, k, h, w = heat.shape

    def vectors(v: np.ndarray, x_of) -> np.ndarray:
        v = v.reshape(n, k, 2, h, w)[:, flip_index, :, :, ::-1].copy()
        v[:, :, 1] = x_of(v[:, :, 1])
        return v.reshape(n, 2 * k, h, w)

    return (np.ascontiguousarray(heat[:, flip_index, :, ::-1]), np.ascontiguousarray(center[..., ::-1]),
            vectors(reg, np.negative), vectors(off, lambda x: 1.0 - x))


class FlipTestPredictor(Predictor):
    """Flip test: every input is run as it is and mirrored, and the two sets of head outputs
    (the mirrored one brought back by ``mirror_outputs``) are averaged before decoding. Twice
    the model time; everything that decodes ``run``'s outputs (one person, several, the second
    look, video) gets the averaged maps."""

    def __init__(self, inner: Predictor):
        if isinstance(inner, ReferencePredictor):
            raise MoveNetError(f"{inner.path}: the flip test averages the model's four head outputs; this "
                               "file gives keypoints only (use lightning/thunder, a checkpoint or a "
                               "`movenet export` file)")
        self.inner = inner
        for name in ("input_size", "prior", "distance_offset", "coord_scale", "schema"):
            setattr(self, name, getattr(inner, name))
        self.flip_index = self.schema.flip_index()

    def __getattr__(self, name: str):  # the backend's other attributes (metadata, model, ...)
        if "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    def preprocess(self, img: np.ndarray):
        return self.inner.preprocess(img)

    def preprocess_crop(self, img: np.ndarray, box: tuple[float, float, float, float]):
        return self.inner.preprocess_crop(img, box)

    def run(self, batch: np.ndarray):
        plain = self.inner.run(batch)
        mirrored = mirror_outputs(self.inner.run(np.ascontiguousarray(batch[..., ::-1])), self.flip_index)
        return tuple(0.5 * (a + b) for a, b in zip(plain, mirrored))


class NoMovenetMetadata(MoveNetError):
    """An ONNX file that is not a ``movenet export`` one (Google's graph, say): ``ReferencePredictor``
    may run it."""


class OnnxPredictor(Predictor):
    """onnxruntime backend for models exported by ``movenet export`` (four head outputs,
    input size, schema and decoding constants in the ONNX metadata), fp32 or int8."""

    output_names = ("heatmaps", "centers", "regression", "offsets")

    def __init__(self, path: str, threads: int | None = None, providers: list[str] | None = None,
                 spinning: bool = True):
        """``spinning=False`` makes onnxruntime's threads sleep between runs instead of busy-waiting:
        slower on an idle machine, faster where other processes (or models) share the cores."""
        import json
        from pathlib import Path

        import onnxruntime as ort

        from .schema import KeypointSchema

        if not Path(path).is_file():
            raise MoveNetError(f"{path}: file not found")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise MoveNetError(f"{path}: not a loadable ONNX model ({first_line(e)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "movenet" not in meta:
            raise NoMovenetMetadata(f"{path}: no movenet metadata (export it with `movenet export`)")
        try:
            info = json.loads(meta["movenet"])
            self.input_size = int(info["input_size"])
            graph_size = self.session.get_inputs()[0].shape[-1]
            if isinstance(graph_size, int) and graph_size != self.input_size:
                raise ValueError(f"input_size {self.input_size}, the graph's input {graph_size}")
            self.distance_offset = float(info["distance_offset"])
            self.coord_scale = float(info["coord_scale"])
            self.schema = KeypointSchema.from_dict(info["schema"])
            if int(info.get("num_keypoints", self.schema.num_keypoints)) != self.schema.num_keypoints:
                raise ValueError(f"num_keypoints {info['num_keypoints']}, the schema {self.schema.num_keypoints}")
            grid = self.input_size // 4
            self.prior = np.asarray(info["center_prior"], np.float32).reshape(grid, grid)
            if not (np.isfinite(self.prior).all() and np.isfinite([self.distance_offset, self.coord_scale]).all()):
                raise ValueError("non-finite decoding constants")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise MoveNetError(f"{path}: broken movenet metadata ({type(e).__name__}: {e})") from None
        self.metadata = info
        self.num_keypoints = self.schema.num_keypoints
        self._check_signature(path)
        self.input_name = self.session.get_inputs()[0].name

    def _check_signature(self, path: str) -> None:
        inputs, outputs = self.session.get_inputs(), {o.name: o for o in self.session.get_outputs()}
        missing = [n for n in self.output_names if n not in outputs]
        if missing:
            raise MoveNetError(f"{path}: outputs {sorted(outputs)} lack {missing}; not a movenet export")
        shape = inputs[0].shape if len(inputs) == 1 else []
        s = self.input_size
        if len(shape) != 4 or list(shape[1:]) != [3, s, s] or inputs[0].type != "tensor(float)":
            got = [(i.name, i.type, i.shape) for i in inputs]
            raise MoveNetError(f"{path}: input {got} is not float [N,3,{s},{s}] as the metadata says")
        channels = outputs["heatmaps"].shape[1]
        if isinstance(channels, int) and channels != self.num_keypoints:
            raise MoveNetError(f"{path}: heatmaps have {channels} channels, the schema "
                               f"{self.schema.name} has {self.num_keypoints} keypoints")

    def run(self, batch: np.ndarray):
        return tuple(self.session.run(list(self.output_names), {self.input_name: batch}))


class ReferencePredictor(Predictor):
    """External models in Google's MoveNet SinglePose format: one input [1,S,S,3] NHWC RGB 0..255
    (int32, uint8 or float), one output [1,1,K,3] = (y, x, score) normalised to the input square.
    ``.tflite`` files run in ai-edge-litert (the ``tflite`` extra), anything else in onnxruntime.
    The input size is read from the model; preprocessing is the same as ``Predictor``'s."""

    def __init__(self, path: str, threads: int | None = None):
        from pathlib import Path

        self.path = str(path)
        if not Path(self.path).is_file():
            raise MoveNetError(f"{self.path}: file not found")
        if self.path.lower().endswith(".tflite"):
            self._open_tflite(threads)
        else:
            self._open_onnx(threads)
        if len(self._in_shape) != 4 or self._in_shape[0] != 1 or self._in_shape[3] != 3 \
                or self._in_shape[1] != self._in_shape[2] or not isinstance(self._in_shape[1], int):
            raise MoveNetError(f"{self.path}: input shape {list(self._in_shape)} is not MoveNet's [1,S,S,3]")
        if len(self._out_shape) < 2 or self._out_shape[-1] != 3 or not isinstance(self._out_shape[-2], int):
            raise MoveNetError(f"{self.path}: output shape {list(self._out_shape)} is not MoveNet's [1,1,K,3]")
        self.input_size = int(self._in_shape[1])
        self.num_keypoints = int(self._out_shape[-2])

    def _open_onnx(self, threads: int | None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise MoveNetError(f"{self.path}: not a loadable ONNX model ({first_line(e)})") from None
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        onnx_types = {"tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(float)": np.float32}
        if inp.type not in onnx_types:
            raise MoveNetError(f"{self.path}: unsupported input type {inp.type}")
        self._in_shape, self._out_shape, self._in_dtype = list(inp.shape), list(out.shape), onnx_types[inp.type]
        self._infer = lambda batch: session.run([out.name], {inp.name: batch})[0]

    def _open_tflite(self, threads: int | None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise MoveNetError(f"{self.path}: running .tflite models needs ai-edge-litert "
                               "(pip install 'movenet[tflite]')") from None
        try:
            interp = Interpreter(model_path=self.path, num_threads=threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise MoveNetError(f"{self.path}: not a loadable TFLite model ({first_line(e)})") from None
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        self._in_shape = [int(v) for v in inp["shape"]]
        self._out_shape = [int(v) for v in out["shape"]]
        self._in_dtype = inp["dtype"]
        in_scale, in_zero = inp["quantization"]
        out_scale, out_zero = out["quantization"]

        def infer(batch: np.ndarray) -> np.ndarray:
            if in_scale:  # quantised input: real = scale * (q - zero)
                limits = np.iinfo(self._in_dtype)
                q = np.round(batch.astype(np.float32) / in_scale + in_zero)
                batch = np.clip(q, limits.min, limits.max).astype(self._in_dtype)
            interp.set_tensor(inp["index"], batch)
            interp.invoke()
            result = interp.get_tensor(out["index"]).astype(np.float32)
            return (result - out_zero) * out_scale if out_scale else result

        self._infer = infer

    def _to_batch(self, square: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(square[None]).astype(self._in_dtype)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._infer(batch)

    def postprocess(self, outputs: np.ndarray, box) -> np.ndarray:
        yxs = np.asarray(outputs, np.float32).reshape(-1, 3)
        return to_image_coords(yxs[:, [1, 0, 2]], box)


def model_schema(spec) -> KeypointSchema:
    """The keypoints a model spec predicts, without opening it for inference: a checkpoint's
    own schema, an exported ONNX file's (its movenet metadata); COCO-17 for Google's models,
    external files, and anything unreadable (opening it later says what is wrong)."""
    import json
    from pathlib import Path

    from .schema import get_schema

    try:
        if str(spec).lower().endswith(".onnx") and Path(spec).is_file():
            import onnxruntime as ort
            try:
                meta = ort.InferenceSession(str(spec), providers=["CPUExecutionProvider"]).get_modelmeta()
            except Exception:  # onnxruntime's own error types; opening it for inference says what is wrong
                return COCO17
            info = meta.custom_metadata_map.get("movenet")
            return get_schema(json.loads(info)["schema"]) if info else COCO17
        if ".pt" not in str(spec):
            return COCO17
        from .weights import split_input_size
        path = Path(split_input_size(spec)[0])
        if path.suffix == ".pt" and path.is_file():
            from .checkpoint import read_checkpoint  # torch: a checkpoint needs it anyway
            return get_schema(read_checkpoint(path).get("schema", "coco17"))
    except (MoveNetError, ValueError, KeyError, TypeError, RuntimeError, OSError):
        pass
    return COCO17
