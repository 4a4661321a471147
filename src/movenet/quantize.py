"""Static int8 quantization of an exported model (onnxruntime, QDQ, per-channel weights), with
an accuracy check against the float model on labelled images.

Calibration images go through exactly the inference preprocessing (``Predictor.preprocess``:
pad to a square, resize). The accuracy check is PCK@0.2 of the torso (left shoulder to right
hip) over the 12 limb joints (COCO 5..16), one whole-image pass per image, as on LSP.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from tqdm import tqdm

from .errors import DataWarning, MoveNetError
from .fileio import atomic_path
from .image import list_images, read_image
from .runtime import OnnxPredictor, Predictor, model_schema
from .schema import COCO17, KeypointSchema

LIMB_JOINTS = slice(5, 17)  # COCO shoulders .. ankles: the joints LSP labels
PCK_ALPHA = 0.2
DEFAULT_MAX_DROP = 0.01  # one PCK point
# Images per calibration chunk: onnxruntime holds all activations of a chunk (~50 MB per
# Lightning image) in memory.
CALIBRATION_CHUNK = 16


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize. ``keep_float``: prefixes of node names (the exported graph names nodes
    after the PyTorch modules) kept in float; the default is the stem (the first conv and the
    first inverted-residual block, at 96x96, of MobileNetV2; ``stem`` and ``blocks.0`` of the
    MobileNetV3s, ShuffleNetV2's ``stem``): quantized, it moved keypoints most on LSP and ran
    slower than in float (see docs/deploy.md). The Sigmoid of the heatmaps and centres is always
    kept in float."""

    method: str = "minmax"  # minmax | entropy | percentile
    percentile: float = 99.999
    per_channel: bool = True
    reduce_range: bool = False
    activation_type: str = "uint8"  # uint8 | int8
    keep_float: tuple[str, ...] = ("/backbone/conv1/", "/backbone/stem/", "/backbone/blocks.0/")
    quant_format: str = "QDQ"  # QDQ | QOperator
    preprocess: bool = True  # onnxruntime's quant_pre_process (shape inference, fusions)
    # Cross-layer equalisation strength (0 = off): channel c of a tensor between two convs is
    # divided by (range_c / max range) ** alpha and the next conv's weights multiplied by it.
    equalize_alpha: float = 0.5
    equalize_images: int = 64


DEFAULT_CONFIG = QuantConfig()


class ImageCalibrationReader(CalibrationDataReader):
    """Calibration batches from image files, preprocessed like inference. ``set_range`` lets
    onnxruntime calibrate in chunks (it keeps every activation of a chunk in memory)."""

    def __init__(self, images: list[str | os.PathLike], input_size: int, input_name: str = "image"):
        self.images = [str(p) for p in images]
        self.input_size = input_size
        self.input_name = input_name
        self._range = (0, len(self.images))
        self._next = 0
        self._bar: tqdm | None = None  # shown from the first image read, not while equalisation runs

    def get_next(self) -> dict | None:
        if self._next >= self._range[1]:
            return None
        if self._bar is None:
            self._bar = tqdm(total=len(self.images), desc="calibrate", unit="img", file=sys.stderr)
        img = read_image(self.images[self._next])
        self._next += 1
        self._bar.update()
        if self._next == len(self.images):
            self.close()
        return {self.input_name: preprocess_image(img, self.input_size)}

    def close(self) -> None:
        """Ends the progress bar (also when calibration stopped on an error)."""
        if self._bar is not None:
            self._bar.close()

    def set_range(self, start_index: int, end_index: int) -> None:
        self._range = (start_index, min(end_index, len(self.images)))
        self._next = start_index

    def rewind(self) -> None:
        self._next = self._range[0]

    def __len__(self) -> int:
        return len(self.images)


def chunk_size(n: int, most: int = CALIBRATION_CHUNK) -> int:
    """Largest divisor of ``n`` up to ``most`` (onnxruntime wants equal chunks)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def preprocess_image(img: np.ndarray, input_size: int) -> np.ndarray:
    """The float32 [1,3,S,S] batch the runtime feeds for a whole image."""
    probe = Predictor()
    probe.input_size = input_size
    return probe.preprocess(img)[0]


def calibration_images(sources: list[str], limit: int | None = None) -> list[str]:
    """Image files from files/folders/globs (an LSP folder means its ``images/``)."""
    expanded = []
    for src in sources:
        p = Path(src)
        expanded.append(str(p / "images") if (p / "images").is_dir() and (p / "joints.mat").exists() else src)
    images = [p for p in list_images(expanded) if Path(p).is_file()]
    if not images:
        raise MoveNetError(f"{' '.join(sources)}: no calibration images found")
    return images[:limit] if limit else images


def quantize_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  calib_images: list[str | os.PathLike], config: QuantConfig = QuantConfig()) -> Path:
    """Write a static int8 version of the exported ``fp32_path`` calibrated on ``calib_images``;
    the movenet metadata is carried over (with the quantization settings added)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from .export import read_metadata, set_metadata

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    info = read_metadata(fp32_path)
    reader = ImageCalibrationReader(calib_images, int(info["input_size"]))
    with tempfile.TemporaryDirectory(prefix="movenet-quant-") as tmp, contextlib.closing(reader):
        source = Path(tmp) / "prepared.onnx"
        if config.preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process
            quant_pre_process(str(fp32_path), str(source), skip_symbolic_shape=True)
        else:
            source = fp32_path
        model = onnx.load(str(source))
        _name_unnamed_nodes(model)
        equalized = []
        if config.equalize_alpha > 0:
            equalized = equalize_channels(model, reader.images[:config.equalize_images],
                                          int(info["input_size"]), config.equalize_alpha)
        source = Path(tmp) / "named.onnx"
        onnx.save(model, str(source))
        exclude = excluded_nodes(model, config.keep_float)
        if config.keep_float and not any(n.name.startswith(tuple(config.keep_float)) for n in model.graph.node):
            warnings.warn(f"keep_float {list(config.keep_float)} names no node of {fp32_path}: all of its backbone "
                          "is quantized", DataWarning, stacklevel=2)
        act = QuantType.QUInt8 if config.activation_type == "uint8" else QuantType.QInt8
        with atomic_path(out_path) as tmp_out:
            quantize_static(
                str(source), str(tmp_out), reader,
                quant_format=QuantFormat.QDQ if config.quant_format == "QDQ" else QuantFormat.QOperator,
                per_channel=config.per_channel, reduce_range=config.reduce_range,
                activation_type=act, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                calibrate_method=_calibration_method(config.method),
                extra_options=_extra_options(config, len(reader)))
            quantized = onnx.load(str(tmp_out))
            info = {**info, "quantization": {**asdict(config), "calibration_images": len(reader.images),
                                             "excluded_nodes": exclude, "equalized": equalized}}
            set_metadata(quantized, info)
            onnx.save(quantized, str(tmp_out))
    return out_path


def _extra_options(config: QuantConfig, num_images: int) -> dict:
    options = {"CalibStridedMinMax": chunk_size(num_images)}  # chunks for every method
    if config.method == "percentile":
        options["CalibPercentile"] = config.percentile
    return options


def _calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if name not in methods:
        raise MoveNetError(f"unknown calibration method {name!r}; known: {sorted(methods)}")
    return methods[name]


# ---------------------------------------------------------------- equalisation
def equalizable_pairs(model) -> list[tuple]:
    """(first conv, second conv, tensor between) where rescaling the tensor's channels is exact:
    the tensor is the first conv's output or its ReLU (ReLU(x / s) = ReLU(x) / s for s > 0),
    nothing else reads it, the second conv is a dense one (group 1) and both convs own their
    weights. ReLU6 is not scale
    invariant, so MobileNet's depthwise -> project pairs are not among them."""
    producers = {o: n for n in model.graph.node for o in n.output}
    initializers = {init.name for init in model.graph.initializer}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    pairs = []
    for second in model.graph.node:
        if second.op_type != "Conv" or _attr(second, "group", 1) != 1:
            continue
        tensor = second.input[0]
        mid = producers.get(tensor)
        if mid is None or readers.get(tensor) != 1:
            continue
        if mid.op_type == "Relu" and readers.get(mid.input[0]) == 1:
            mid = producers.get(mid.input[0])
        if mid is None or mid.op_type != "Conv":  # (a HardSwish, an SE block's Mul: not rescalable)
            continue
        weights = [mid.input[1], *mid.input[2:], second.input[1]]
        if all(w in initializers and readers.get(w) == 1 for w in weights if w):
            pairs.append((mid, second, tensor))
    return pairs


def _attr(node, name: str, default):
    from onnx import helper
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def equalize_channels(model, images: list[str], input_size: int, alpha: float = 0.5) -> list[str]:
    """Cross-layer equalisation in place: for every ``equalizable_pairs`` tensor, divide channel c
    by s_c = (range_c / max range) ** alpha (first conv's weights and bias) and multiply the
    second conv's input channel c by s_c. The float model computes the same function; the
    per-tensor int8 activation grid then fits the small channels better. Ranges are the largest
    magnitudes over ``images``. Returns the names of the rescaled tensors."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    pairs = equalizable_pairs(model)
    if not pairs:
        return []
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    tensors = [t for _, _, t in pairs]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    ranges = [np.zeros(0, np.float32)] * len(tensors)
    for path in images:
        outs = session.run(tensors, {input_name: preprocess_image(read_image(path), input_size)})
        ranges = [np.maximum(r, np.abs(o).max(axis=(0, 2, 3))) if r.size else np.abs(o).max(axis=(0, 2, 3))
                  for r, o in zip(ranges, outs)]
    inits = {init.name: init for init in model.graph.initializer}

    def scale(name: str, factor: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(
            (numpy_helper.to_array(inits[name]) * factor).astype(np.float32), name))

    for (first, second, _), r in zip(pairs, ranges):
        r = np.maximum(r, 1e-6 * r.max())  # dead channels keep a finite scale
        s = (r / r.max()) ** alpha
        scale(first.input[1], 1 / s.reshape(-1, 1, 1, 1))
        if len(first.input) > 2 and first.input[2]:
            scale(first.input[2], 1 / s)
        scale(second.input[1], s.reshape(1, -1, 1, 1))
    return tensors


def _name_unnamed_nodes(model) -> None:
    """Nodes are excluded from quantization by name, and quant_pre_process leaves the nodes it
    inlines (HardSwish -> HardSigmoid, Mul) without one: each gets the scoped name of its output,
    else of its input (``/backbone/stem/...``), so that keep_float's prefixes reach them."""
    taken = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if node.name:
            continue
        scope = next((t for t in [*node.output, *node.input] if t.startswith("/")), f"/unnamed_{i}")
        name = f"{scope}/{node.op_type}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)


def excluded_nodes(model, prefixes: tuple[str, ...]) -> list[str]:
    """Names of the nodes kept in float: those whose name starts with one of ``prefixes``, and
    the nodes between each graph output and the last Conv before it (the output Sigmoids)."""
    names = [n.name for n in model.graph.node if n.name.startswith(tuple(prefixes))]
    producers = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        node = producers[out.name]
        while node.op_type != "Conv":
            names.append(node.name)
            node = producers[node.input[0]]
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------- accuracy check
def load_labelled(source: str | os.PathLike, indices: slice | list[int] | None = None,
                  schema: KeypointSchema = COCO17) -> tuple[list[tuple[Path, tuple | None]], np.ndarray]:
    """([(image path, box)], [N,K,3] keypoints) of ``labelled_data``."""
    return labelled_data(source, indices, schema)[:2]


def labelled_data(source: str | os.PathLike, indices: slice | list[int] | None = None,
                  schema: KeypointSchema = COCO17
                  ) -> tuple[list[tuple[Path, tuple | None]], np.ndarray, KeypointSchema]:
    """([(image path, box)], [N,K,3] keypoints, their schema): each labelled person of a labelled
    set (LSP folder, COCO json..., or a training config for its held-out images; see
    ``evaluate.load_data``), looked at as ``movenet eval`` does: the whole image where it holds
    one person (box None), a crop around each person's box where it holds several. A file is read
    with ``schema``'s keypoints where it has them, else with its own (a config: with its own)."""
    from .evaluate import load_data_as, make_samples, person_crop_box

    data = load_data_as(source, None, None, [schema])
    whole, _ = make_samples(data, "whole")
    single = {s.image_index for s in whole}
    crops = [s for s in make_samples(data, "topdown")[0] if s.image_index not in single]
    samples = sorted(whole + crops, key=lambda s: s.image_index)
    if indices is not None:
        samples = samples[indices] if isinstance(indices, slice) else [samples[i] for i in indices]
    if not samples:
        raise MoveNetError(f"{source}: no labelled people to check accuracy on")
    views = [(data.images[s.image_index].path, None if s.image_index in single else person_crop_box(s.person.bbox))
             for s in samples]
    return views, np.stack([s.person.keypoints for s in samples]).astype(np.float32), data.schema


def scored_keypoints(data: KeypointSchema, model: KeypointSchema, label: str, warn: bool = True
                     ) -> tuple[list[int], list[int]]:
    """(the data's keypoints the check scores, the model's keypoints for them), by name as ``movenet
    eval`` takes them: for COCO's 17 the 12 limb joints (LSP labels no face), else every keypoint
    of the data's that the model predicts (those it lacks are left out, with a warning)."""
    from .errors import some_of
    from .schema import matching_names

    found = matching_names(data.keypoints, model.keypoints)
    if not found:
        raise MoveNetError(f"{label}: none of its keypoints ({some_of(data.keypoints)}) is among the model's "
                           f"({model.name}: {some_of(model.keypoints)})")
    lacking = [n for n in data.keypoints if n not in found]
    if lacking and warn:
        warnings.warn(f"{label}: the model lacks {some_of(lacking)} of the data's {data.num_keypoints} keypoints "
                      f"({data.name}); the check scores the other {len(found)}", DataWarning, stacklevel=3)
    names = list(data.keypoints)
    coco = matching_names(names, COCO17.keypoints)  # (COCO's keypoints in any order or spelling: its limb joints)
    limbs = [n for n in names if coco.get(n) in COCO17.keypoints[LIMB_JOINTS]]
    joints = limbs if len(coco) == len(names) and limbs else names
    ours = [i for i, n in enumerate(names) if n in joints and n in found]
    return ours, [model.keypoints.index(found[names[i]]) for i in ours]


def predict_all(predictor: Predictor, views: list[tuple[Path, tuple | None]], desc: str = "evaluate") -> np.ndarray:
    """[N,K,3] keypoints of each (image, box) view (box None: the whole image)."""
    return np.stack([predictor(read_image(path), box) for path, box in
                     tqdm(views, desc=desc, unit="view", file=sys.stderr, disable=len(views) < 20)])


def limb_pck(pred: np.ndarray, gt: np.ndarray, alpha: float = PCK_ALPHA, schema: KeypointSchema = COCO17,
             scored: list[int] | None = None) -> float:
    """PCK@alpha with the schema's unit (``metrics.torso_size`` of the labels) over the keypoints
    ``scored`` (default: the 12 limb joints of COCO's 17, every keypoint of other schemas)."""
    from .metrics import pck, torso_size

    if scored is None:
        scored = list(range(17)[LIMB_JOINTS]) if schema.keypoints == COCO17.keypoints else list(range(len(gt[0])))
    return pck(pred[:, scored], gt[:, scored], alpha * torso_size(gt, schema))[1]


@dataclass
class AccuracyCheck:
    fp32_pck: float
    int8_pck: float
    people: int
    max_drop: float

    @property
    def drop(self) -> float:
        return self.fp32_pck - self.int8_pck

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop

    def __str__(self) -> str:
        return (f"PCK@{PCK_ALPHA} on {self.people} people: fp32 {self.fp32_pck:.4f}, int8 "
                f"{self.int8_pck:.4f} (drop {100 * self.drop:.2f} points, budget {100 * self.max_drop:.2f})")


def check_accuracy(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, labelled: str | os.PathLike,
                   max_drop: float = DEFAULT_MAX_DROP, indices=None, threads: int | None = None,
                   warn: bool = True) -> AccuracyCheck:
    """``limb_pck`` of the fp32 and int8 models on ``labelled``, on the keypoints of
    ``scored_keypoints`` (``warn``: say which of the data's keypoints the model lacks)."""
    fp32_model = OnnxPredictor(str(fp32_path), threads=threads)
    views, gt, schema = labelled_data(labelled, indices, fp32_model.schema)
    ours, theirs = scored_keypoints(schema, fp32_model.schema, str(labelled), warn)

    def score(model: OnnxPredictor, desc: str) -> float:
        pred = np.full(gt.shape, np.nan, np.float32)  # (in the data's order)
        pred[:, ours] = predict_all(model, views, desc)[:, theirs]
        return limb_pck(pred, gt, schema=schema, scored=ours)

    return AccuracyCheck(score(fp32_model, "check fp32"),
                         score(OnnxPredictor(str(int8_path), threads=threads), "check int8"), len(views), max_drop)


def _warn_shared_images(calib_images: list, check_images: list, labelled) -> None:
    from .fileio import shared_files

    shared = shared_files(set(check_images), calib_images)  # (an image holds several checked people)
    if shared:
        import warnings

        from .errors import DataWarning
        warnings.warn(f"{labelled}: {len(shared)} of the checked images are calibration images too: "
                      "the check is kinder than new images would be", DataWarning, stacklevel=3)


def quantize_checked(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib_images: list,
                     labelled: str | os.PathLike | None, config: QuantConfig = QuantConfig(),
                     max_drop: float = DEFAULT_MAX_DROP, check_indices=None,
                     threads: int | None = None) -> AccuracyCheck | None:
    """``quantize_onnx`` then ``check_accuracy`` on ``labelled`` (skipped if None); MoveNetError
    if the int8 model loses more than ``max_drop``. ``out_path`` is written only once the model
    has passed (a file already there stays as it was otherwise)."""
    from .export import READ_BACK
    from .fileio import atomic_path, refuse_stream

    out_path = Path(out_path)
    refuse_stream(out_path, READ_BACK)
    if labelled is not None:  # a bad labelled set fails before the long part
        model = model_schema(fp32_path)
        views, _, schema = labelled_data(labelled, check_indices, model)
        scored_keypoints(schema, model, str(labelled))  # (data of other keypoints: said now)
        _warn_shared_images(calib_images, [path for path, _ in views], labelled)
    with atomic_path(out_path) as tmp:
        quantize_onnx(fp32_path, tmp, calib_images, config)
        try:
            OnnxPredictor(str(tmp), threads=1)  # every file kept loads in the runtime
        except MoveNetError as e:
            reason = str(e).removeprefix(f"{tmp}: ").replace(str(tmp), str(out_path))
            raise MoveNetError(f"{out_path}: {reason}; not written") from None
        if labelled is None:
            return None
        result = check_accuracy(fp32_path, tmp, labelled, max_drop, check_indices, threads, warn=False)
        if not result.passed:
            raise MoveNetError(f"{out_path}: int8 model fails its accuracy budget ({result}); not written")
    return result
