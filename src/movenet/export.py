"""ONNX export of the network (without the argmax decoding) for the torch-free runtime.

The graph takes ``image`` float32 [N,3,S,S] RGB 0..255 (the normalisation is inside the
graph) and returns ``heatmaps``, ``centers`` (both activated, 0..1), ``regression`` and
``offsets``, NCHW, exactly as ``MoveNet.forward``. Everything the runtime needs besides the
graph (input size, keypoint schema, decoding constants) is stored as JSON in the ONNX metadata
under the key ``movenet``, so an exported file is self-contained.

Every export is checked against PyTorch on real images before it is kept.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import MoveNetError, first_line
from .fileio import atomic_path, refuse_stream
from .schema import COCO17, KeypointSchema

INPUT_NAME = "image"
OUTPUT_NAMES = ("heatmaps", "centers", "regression", "offsets")
METADATA_KEY = "movenet"
FORMAT = "movenet-onnx-v1"
# Bumped whenever the exported graph changes, so cached exports are rebuilt.
EXPORT_VERSION = 1
PARITY_TOLERANCE = 1e-4
READ_BACK = "an exported model is read back to check it"
MIN_OPSET = 11  # the oldest opset that holds the model's resize and pads
BUILTIN_IMAGE = Path(__file__).parent / "assets" / "astronaut.jpg"


def export_onnx(model, path: str | os.PathLike, dynamic_batch: bool = False, opset: int = 17,
                verify_images: list[str | os.PathLike] | None = None, *,
                schema: KeypointSchema | None = None, source: str = "") -> Path:
    """Export ``model`` (a ``MoveNet``, or what ``load_model`` opens: a name, a checkpoint) to
    ``path`` and verify it against PyTorch on the built-in photo and ``verify_images``
    (``verify_onnx``: differences <= 1e-4). ``schema``: the model's keypoints (default: those
    of the checkpoint, else COCO17). The file is written only if the check passes. Returns ``path``."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        from .checkpoint import load_model

        source = source or str(model)
        model, own = load_model(model)
        schema = schema or own
    model = getattr(model, "module", model)  # (a DDP or EMA wrapper)
    if not hasattr(model, "config"):
        raise MoveNetError(f"export_onnx takes a MoveNet model or what load_model opens, got {type(model).__name__}")
    schema = schema or COCO17
    k = model.config.num_keypoints
    if schema.num_keypoints != k:
        raise MoveNetError(f"the model predicts {k} keypoints, the schema {schema.name} has {schema.num_keypoints} "
                           "(load_model returns a checkpoint's schema)")
    path = Path(path)
    refuse_stream(path, READ_BACK)
    model = copy.deepcopy(model).float().cpu().eval()
    proto = simplify_graph(_torch_export(model, dynamic_batch, opset))
    _declare_output_shapes(proto, model, dynamic_batch)
    set_metadata(proto, build_metadata(model, schema, source, dynamic_batch, opset))
    onnx.checker.check_model(proto)
    images = [BUILTIN_IMAGE, *(verify_images or [])]
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        verify_onnx(model, tmp, images, batch=dynamic_batch, label=str(path))
    return path


def _torch_export(model, dynamic_batch: bool, opset: int):
    import onnx
    import torch

    newest = _newest_opset()
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise MoveNetError(f"ONNX opset {opset!r}: a whole number, {MIN_OPSET} or newer")
    if opset < MIN_OPSET:  # (the exporter would print its whole graph first)
        raise MoveNetError(f"ONNX opset {opset}: the model needs opset {MIN_OPSET} or newer")
    if newest is not None and opset > newest:
        raise MoveNetError(f"ONNX opset {opset}: this torch exports opsets up to {newest}")
    size = model.config.input_size
    example = torch.full((2 if dynamic_batch else 1, 3, size, size), 127.0)
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that works without extra packages; its
        # deprecation and tracer notices say nothing about this model.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes=axes, do_constant_folding=True,
                              training=torch.onnx.TrainingMode.EVAL)
        except Exception as e:  # the exporter's own error types, many lines of graph dump
            raise MoveNetError(f"ONNX opset {opset}: this torch cannot export the model at it "
                               f"({first_line(e)})") from None
    return onnx.load_from_string(buf.getvalue())


def _declare_output_shapes(proto, model, dynamic_batch: bool) -> None:
    """The outputs' declared shapes, [1 or "batch", C, H, W]: the exporter names their
    dimensions after the first one it meets (height called "batch"), which misleads viewers."""
    import torch

    size = model.config.input_size
    with torch.no_grad():
        shapes = {name: out.shape for name, out in zip(OUTPUT_NAMES, model(torch.zeros(1, 3, size, size)))}
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for i, n in enumerate(shapes[output.name]):
            dim = dims.add()
            if i == 0 and dynamic_batch:
                dim.dim_param = "batch"
            else:
                dim.dim_value = int(n)


def _newest_opset() -> int | None:
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET  # not public; absent in some versions
    except ImportError:
        return None
    return int(ONNX_MAX_OPSET)


# ---------------------------------------------------------------- graph clean-up
def simplify_graph(proto):
    """Fold constant subgraphs, fuse zero ``Pad`` nodes into the following ``Conv`` (TF 'SAME'
    padding becomes the Conv's asymmetric pads) and drop elementwise no-ops."""
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    _fold_constants(proto.graph, opset)
    _fuse_pads(proto.graph)
    _drop_noops(proto.graph)
    _prune(proto.graph)
    return proto


def _fold_constants(graph, opset: int) -> None:
    """Evaluate every node whose inputs are all constant; its outputs become initializers."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    known = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Constant":
            known[node.output[0]] = numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))
            continue
        if node.domain in ("", "ai.onnx") and all(i == "" or i in known for i in node.input):
            ins = [i for i in node.input if i]
            outs = ReferenceEvaluator(node, opsets={"": opset}).run(None, {i: known[i] for i in ins})
            known.update(zip(node.output, (np.asarray(o) for o in outs)))
            continue
        kept.append(node)
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in known.items()
                             if name in used)


def _initializers(graph) -> dict:
    from onnx import numpy_helper
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            out.setdefault(i, []).append(node)
    return out


def _fuse_pads(graph) -> None:
    from onnx import helper

    consts = _initializers(graph)
    users = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    removed = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.output[0] in graph_outputs:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        pads = consts.get(pad.input[1]) if len(pad.input) > 1 else None
        value = consts.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        nexts = users.get(pad.output[0], [])
        if (attrs.get("mode", b"constant") != b"constant" or pads is None or value is None
                or np.any(value != 0) or len(pads) != 8 or np.any(pads[[0, 1, 4, 5]] != 0)
                or len(pad.input) > 3 or len(nexts) != 1 or nexts[0].op_type != "Conv"):
            continue
        conv = nexts[0]
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if conv_attrs.get("auto_pad", b"NOTSET") != b"NOTSET":
            continue
        old = list(conv_attrs.get("pads", [0, 0, 0, 0]))
        new = [old[0] + int(pads[2]), old[1] + int(pads[3]), old[2] + int(pads[6]), old[3] + int(pads[7])]
        for a in list(conv.attribute):
            if a.name == "pads":
                conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        removed.append(pad)
    for node in removed:
        graph.node.remove(node)


def _drop_noops(graph) -> None:
    """Remove ``Sub``/``Add`` of zeros and ``Mul``/``Div`` by ones whose constant does not
    broadcast the other input to a bigger shape (e.g. the zero mean of the normalisation)."""
    consts = _initializers(graph)
    neutral = {"Sub": 0.0, "Add": 0.0, "Mul": 1.0, "Div": 1.0}
    graph_outputs = {o.name for o in graph.output}
    for node in list(graph.node):
        if node.op_type not in neutral or node.output[0] in graph_outputs:
            continue
        c = consts.get(node.input[1])
        if c is None or c.ndim > 4 or np.any(c != neutral[node.op_type]) or c.size > 1 and not _keeps_shape(graph, node.input[0], c.shape):
            continue
        for other in graph.node:
            for j, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[j] = node.input[0]
        graph.node.remove(node)


def _keeps_shape(graph, name: str, const_shape: tuple) -> bool:
    """True if ``name`` (the graph input here) already has every dimension > 1 of the constant."""
    for vi in graph.input:
        if vi.name == name:
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
            aligned = dims[len(dims) - len(const_shape):]
            return len(dims) >= len(const_shape) and all(c == 1 or c == d for c, d in zip(const_shape, aligned))
    return False


def _prune(graph) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


# ---------------------------------------------------------------- metadata
def build_metadata(model, schema: KeypointSchema, source: str, dynamic_batch: bool, opset: int) -> dict:
    from . import __version__

    cfg = model.config
    return {
        "format": FORMAT,
        "exporter": f"movenet {__version__} (export version {EXPORT_VERSION})",
        "input_size": cfg.input_size,
        "num_keypoints": cfg.num_keypoints,
        "schema": schema.to_dict(),
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32", "color": "RGB",
                  "range": [0, 255], "dynamic_batch": dynamic_batch},
        "normalisation": {"inside_graph": True, "mean": list(cfg.norm_mean),
                          "scale": list(cfg.norm_scale), "shift": cfg.norm_shift,
                          "formula": "(image - mean) * scale - shift"},
        "outputs": list(OUTPUT_NAMES),
        "activated": True,
        "distance_offset": float(model.distance_offset),
        "coord_scale": float(model.coord_scale),
        "center_prior": model.center_prior.detach().cpu().numpy().astype(np.float32).tolist(),
        "model_config": cfg.to_dict(),
        "source": source,
        "opset": opset,
    }


def set_metadata(proto, info: dict) -> None:
    for prop in list(proto.metadata_props):
        if prop.key == METADATA_KEY:
            proto.metadata_props.remove(prop)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(info))
    proto.producer_name = "movenet"


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``movenet`` metadata of an exported file (without building a session)."""
    import onnx

    if not Path(path).is_file():
        raise MoveNetError(f"{path}: {'is a folder, not a file' if Path(path).is_dir() else 'file not found'}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's and onnx's own error types
        raise MoveNetError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                info = json.loads(prop.value)
            except json.JSONDecodeError as e:
                raise MoveNetError(f"{path}: broken movenet metadata ({e})") from None
            if not isinstance(info, dict):
                raise MoveNetError(f"{path}: broken movenet metadata (a JSON {type(info).__name__}, not an object)")
            return info
    raise MoveNetError(f"{path}: no movenet metadata (export it with `movenet export`)")


# ---------------------------------------------------------------- verification
def verify_onnx(model, path: str | os.PathLike, images: list, batch: bool = False,
                tolerance: float = PARITY_TOLERANCE, label: str | None = None) -> dict[str, float]:
    """Compare onnxruntime with PyTorch on ``images`` (letterboxed as at inference); raise
    MoveNetError if an output differs by more than ``tolerance`` times its scale
    (max(1, largest magnitude): heatmaps and centres are 0..1, so for them the bound is
    absolute). With ``batch`` all images also run as one batch. Returns, per output, the
    largest difference divided by that scale."""
    import onnxruntime as ort
    import torch

    from .image import letterbox, read_image

    size = model.config.input_size
    samples = [letterbox(read_image(p), size)[0].transpose(2, 0, 1) for p in images]
    batches = [np.ascontiguousarray(s[None], np.float32) for s in samples]
    if batch:
        batches.append(np.ascontiguousarray(np.stack(samples + samples[:1]), np.float32))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    for x in batches:
        with torch.inference_mode():
            ref = [t.numpy() for t in model(torch.from_numpy(x))]
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        for name, r, g in zip(OUTPUT_NAMES, ref, got):
            if r.shape != g.shape:
                raise MoveNetError(f"{label or path}: ONNX output {name} has shape {g.shape}, PyTorch {r.shape}")
            worst[name] = max(worst[name], parity_error(r, g))
    bad = {k: v for k, v in worst.items() if not v <= tolerance}
    if bad:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in bad.items())
        raise MoveNetError(f"{label or path}: ONNX export differs from PyTorch ({diffs} > {tolerance:g}); not written")
    return worst


def parity_error(reference: np.ndarray, other: np.ndarray) -> float:
    """max |other - reference| / max(1, max |reference|). The regression maps reach ~40 grid
    cells, where float32 rounding alone (PyTorch float32 vs float64) moves them by ~5e-4."""
    return float(np.abs(other - reference).max() / max(1.0, float(np.abs(reference).max())))


# ---------------------------------------------------------------- cache
def export_onnx_cached(spec: str | os.PathLike, opset: int = 17, verbose: bool = True) -> Path:
    """The exported ``.onnx`` of ``lightning``/``thunder``, a checkpoint or a TF.js model.json
    (``@SIZE`` for another input size), exported once into ``cache_dir()/onnx`` (keyed by the
    content hash of the weights and the size)."""
    from .weights import cache_dir, split_input_size

    base, size = split_input_size(spec)
    files = _weight_files(base, verbose)
    h = hashlib.sha256()
    for f in files:
        h.update(_file_digest(f).encode())
    sized = "" if size is None else f"-{size}px"
    out = cache_dir() / "onnx" / f"{files[0].stem}{sized}-{h.hexdigest()[:16]}-v{EXPORT_VERSION}-opset{opset}.onnx"
    if out.exists():  # torch-free from here on
        return out
    from .checkpoint import load_model
    from .weights import check_cache_writable

    check_cache_writable(out.parent)

    model, schema = load_model(spec, verbose=verbose)
    if verbose:
        print(f"movenet: exporting {spec} to {out} (once)...", flush=True)
    return export_onnx(model, out, opset=opset, schema=schema, source=str(spec))


def _weight_files(spec: str | os.PathLike, verbose: bool) -> list[Path]:
    from .weights import OFFICIAL, official_checkpoint

    spec_str = str(spec)
    if spec_str in OFFICIAL and not Path(spec_str).exists():
        return [official_checkpoint(spec_str, verbose=verbose)]
    path = Path(spec_str)
    if not path.exists():
        raise MoveNetError(f"{spec_str}: no such model file, and not one of {sorted(OFFICIAL)}")
    if path.suffix == ".json":
        from .weights import tfjs_files

        return tfjs_files(path)
    return [path]


def _file_digest(path: Path) -> str:
    from .weights import sha256

    if not path.exists():
        raise MoveNetError(f"{path}: file not found")
    return sha256(path)
