"""Checkpoints: one ``.pt`` file holds the weights and everything needed to rebuild the model
(its config, keypoint schema, and for training runs the run config and optimiser state)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from .config import config_changes
from .errors import DataWarning, MoveNetError, some_of
from .fileio import atomic_path, shared_files
from .model import ModelConfig, MoveNet
from .schema import COCO17, KeypointSchema, get_schema
from .weights import split_input_size  # noqa: F401  (torch-free; part of this module's API)

FORMAT = "movenet-checkpoint-v1"


def save_checkpoint(path: str | os.PathLike, model: MoveNet, schema: KeypointSchema = COCO17,
                    extra: dict | None = None) -> None:
    model = getattr(model, "module", model)  # unwrap DDP
    payload = {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "schema": schema.to_dict(),
        "state_dict": model.state_dict(),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


# Checkpoints are read without running code (torch.load's weights_only): tensors, containers and
# numbers, plus the numpy arrays of the training state's random states. Older torch has no
# allow-list to add them to and reads them as pickles.
_SAFE_LOAD = hasattr(torch.serialization, "safe_globals")


def _numpy_allowed():
    if not _SAFE_LOAD:
        return contextlib.nullcontext()
    import numpy as np

    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")] if hasattr(np, "dtypes") else []
    # numpy 1.x pickles arrays through numpy.core, numpy 2 through numpy._core: a run's last.pt
    # must resume across that upgrade (and back), so both names mean this numpy's function.
    # (Named entries came with torch 2.6; before it, only this numpy's own name is allowed.)
    named = torch.__version__ >= "2.6"
    aliases = [(reconstruct, f"numpy.{core}.multiarray._reconstruct") for core in ("core", "_core")] if named else []
    return torch.serialization.safe_globals([reconstruct, np.ndarray, np.dtype, *dtypes, *aliases])


def read_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise MoveNetError(f"{path}: file not found")
    if path.suffix.lower() in (".onnx", ".tflite"):
        raise MoveNetError(f"{path}: an exported model, not a PyTorch checkpoint; this command takes "
                           "lightning, thunder, a .pt checkpoint or a TF.js model.json")
    try:
        with warnings.catch_warnings(), _numpy_allowed():
            warnings.simplefilter("ignore")  # (a TorchScript file: refused below, in one line)
            ckpt = torch.load(path, map_location="cpu", weights_only=_SAFE_LOAD)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)|but got (<[^>]*>)", str(e))
        if found is None:  # (a damaged file)
            raise MoveNetError(f"{path}: not a readable checkpoint (UnpicklingError)") from None
        raise MoveNetError(f"{path}: holds {found.group(1) or found.group(2)}, which a checkpoint does not "
                           "(loading it could run code); not a movenet checkpoint") from None
    except Exception as e:  # torch raises many types for a bad file
        if "TorchScript" in str(e):
            raise MoveNetError(f"{path}: a TorchScript archive, not a movenet checkpoint") from None
        raise MoveNetError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MoveNetError(f"{path}: not a movenet checkpoint (no '{FORMAT}' format tag)")
    checkpoint_schema(ckpt, path)  # (for every reader: init and teachers take it from the dict too)
    return ckpt


def checkpoint_schema(ckpt: dict, path: str | os.PathLike = "checkpoint") -> KeypointSchema:
    """The keypoint schema a checkpoint dict names (COCO's 17 where it names none)."""
    try:
        return get_schema(ckpt.get("schema", "coco17"))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise MoveNetError(f"{path}: bad keypoint schema in checkpoint ({e})") from None


def model_from_checkpoint(ckpt: dict, path: str | os.PathLike = "checkpoint") -> tuple[MoveNet, KeypointSchema]:
    try:
        cfg = ModelConfig.from_dict(ckpt["model_config"])
        model = MoveNet(cfg)
    except (ValueError, TypeError, KeyError) as e:
        raise MoveNetError(f"{path}: bad model config in checkpoint ({e})") from None
    weights = ckpt.get("state_dict")
    misfit = weights_misfit(model.state_dict(), weights) if isinstance(weights, dict) else "no weights"
    if misfit:
        raise MoveNetError(f"{path}: weights do not fit the {cfg.backbone} architecture ({misfit})")
    check_finite_weights(weights, path)
    schema = checkpoint_schema(ckpt, path)
    if schema.num_keypoints != cfg.num_keypoints:
        raise MoveNetError(f"{path}: its keypoint schema {schema.name} has {schema.num_keypoints} keypoints, "
                           f"its model {cfg.num_keypoints}")
    model.load_state_dict(weights)
    return model.eval(), schema


def check_finite_weights(state: dict, path: str | os.PathLike) -> None:
    """A one-line error for weights holding NaN or infinity (a training that diverged): such a
    model runs, and gives no keypoints or nonsense."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise MoveNetError(f"{path}: {len(bad)} of its {len(state)} weight tensors hold NaN or infinite values "
                           f"(first: {bad[0]}); a training that diverged?")


def weights_misfit(own: dict, given: dict, shown: int = 2) -> str:
    """What keeps ``given`` tensors from loading into a model whose state dict is ``own``, in
    a few words ("" when they fit): missing and unexpected names, or the first shapes that differ."""
    def few(names: list[str]) -> str:
        return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")

    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    parts = [f"{len(missing)} of its {len(own)} tensors missing: {few(missing)}"] if missing else []
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {few(unexpected)}")
    if parts:
        return "; ".join(parts)
    shapes = [f"{k} {list(getattr(given[k], 'shape', []))} in the file, {list(own[k].shape)} in the model"
              for k in own if tuple(getattr(given[k], "shape", ())) != tuple(own[k].shape)]
    return few(shapes)


def checkpoint_file(spec: str | os.PathLike, verbose: bool = False) -> Path:
    """A ``.pt`` path, or ``lightning``/``thunder``: the file of Google's converted weights
    (fetched and converted on first use)."""
    from . import weights

    if str(spec) in weights.OFFICIAL and not Path(spec).exists():
        return Path(weights.official_checkpoint(str(spec), verbose=verbose))
    return Path(spec)


# Decoding constants stored with the weights: a mean of two was chosen by no one.
NOT_AVERAGED = ("distance_offset",)


def weighted_state(states: list[dict], weights: list[float]) -> dict:
    """sum_i weights[i] x states[i] for floating-point tensors (computed in float64); other
    tensors (batch-norm counters) and the decoding offset are the first state's. States of one
    architecture."""
    return {k: sum(s[k].double() * w for s, w in zip(states, weights)).to(v.dtype)
            if v.is_floating_point() and k not in NOT_AVERAGED else v.clone() for k, v in states[0].items()}


def average_checkpoints(specs: list[str | os.PathLike], weights: list[float] | None = None) -> dict:
    """The (weighted) mean of several checkpoints' weights: runs of one recipe with other seeds
    ("model soup"), or a fine-tuned model and the one it started from (``lightning``; weight-space
    interpolation). Same architecture and keypoint schema required; ``weights`` are normalised
    to sum 1 (default: equal). Integer buffers (batch-norm counters) are the first file's. The
    result is a model checkpoint without training state that records what it was made from."""
    if len(specs) < 2:
        raise MoveNetError(f"averaging needs at least two checkpoints, got {len(specs)}")
    weights = [1.0] * len(specs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(specs):
        raise MoveNetError(f"{len(weights)} weights for {len(specs)} checkpoints")
    if any(not 0 <= w < float("inf") for w in weights) or sum(weights) <= 0:
        raise MoveNetError(f"weights must be >= 0 with a positive sum, got {weights}")
    weights = [w / sum(weights) for w in weights]
    paths = [str(s) for s in specs]
    first = _read_at_size(paths[0])
    states = [first["state_dict"]]
    schema = get_schema(first.get("schema", "coco17"))
    holders: list[set[str]] = [set(schema.keypoints)]  # per model, the keypoints it has weights for
    notes: list[str] = []
    for path in paths[1:]:
        ckpt = _read_at_size(path)
        changes = [c for c in config_changes(first.get("model_config") or {}, ckpt.get("model_config") or {})
                   if not c.startswith("num_keypoints ")]  # (keypoints: below)
        if changes:
            raise MoveNetError(f"{path}: another model than {paths[0]} ({'; '.join(changes)}); only models of "
                               "the same architecture and input size can be averaged")
        ckpt, has = _same_keypoints(ckpt, path, first, paths[0], notes)
        holders.append(has)
        state = ckpt["state_dict"]
        if state.keys() != first["state_dict"].keys():
            raise MoveNetError(f"{path}: other weight names than {paths[0]}")
        for k, v in first["state_dict"].items():
            if v.is_floating_point() and state[k].shape != v.shape:
                raise MoveNetError(f"{path}: {k} has shape {tuple(state[k].shape)}, "
                                   f"{paths[0]} {tuple(v.shape)}")
        states.append(state)
    state = weighted_state(states, weights)
    from .pretrained import keypoint_output_keys, take_keypoint_channels

    by_holders: dict[tuple[int, ...], list[int]] = {}  # a keypoint some lack: the mean of those that have it
    for i, name in enumerate(schema.keypoints):
        by_holders.setdefault(tuple(m for m, has in enumerate(holders) if name in has), []).append(i)
    for have, keypoints in by_holders.items():
        if len(have) < len(states):
            total = sum(weights[m] for m in have)  # (0: only models weighted 0 have it; from them, equally)
            heads = weighted_state([{k: states[m][k] for k in keypoint_output_keys() if k in states[m]} for m in have],
                                   [weights[m] / total if total else 1 / len(have) for m in have])
            take_keypoint_channels(state, heads, [(i, i) for i in keypoints])
    offsets = [float(s["distance_offset"]) for s in states if "distance_offset" in s]
    if len(set(offsets)) > 1:  # (a setting: that of the checkpoint weighted most, the first of equals)
        main = max(range(len(states)), key=lambda i: (weights[i], -i))
        state["distance_offset"] = states[main]["distance_offset"].clone()
        warnings.warn(f"the checkpoints decode with other distance offsets ({', '.join(f'{o:g}' for o in offsets)}); "
                      f"that of {paths[main]} ({offsets[main]:g}), weighted most, is kept: movenet calibrate "
                      "chooses one for the average", DataWarning, stacklevel=2)
    keep = ("format", "model_config", "schema", "config")
    return {**{k: first[k] for k in keep if k in first}, "state_dict": state,
            "averaged_from": [{"checkpoint": str(s), "weight": w} for s, w in zip(specs, weights)],
            **({"keypoint_notes": notes} if notes else {})}


def _same_keypoints(ckpt: dict, path: str, first: dict, first_path: str, notes: list[str]) -> tuple[dict, set[str]]:
    """(``ckpt`` with the keypoints of ``first``, the names of those it has weights for): as it is
    when they are the same; else its keypoint heads' channels taken by name (``lightning`` beside a
    model of some of COCO's keypoints), or as the first's run started them (``init_keypoints``,
    where ``path`` is that run's ``init``). A keypoint it lacks is averaged over the models that
    have it (as ``final.pt`` keeps a fresh keypoint's trained channels); one the first lacks is left
    out, with a warning. What was done goes into ``notes``. Other schema settings (skeleton,
    torso, sigmas) are the first's, with a warning."""
    from .schema import matching_names

    ours, theirs = get_schema(first.get("schema", "coco17")), get_schema(ckpt.get("schema", "coco17"))
    if theirs.keypoints == ours.keypoints:
        if theirs != ours:
            warnings.warn(f"{path}: the same keypoints as {first_path}, but another skeleton, torso, flip pairs or "
                          f"sigmas; the average keeps {first_path}'s", DataWarning, stacklevel=3)
        return ckpt, set(ours.keypoints)
    run = first.get("config") or {}
    init = str(run.get("init", ""))
    base = split_input_size(path)[0]
    its_init = bool(init) and (base == init or bool(shared_files([base], [init])))  # (a run started from it)
    mapped = {k: theirs.spelling(v) for k, v in (run.get("init_keypoints") or {}).items()
              if its_init and k in ours.keypoints and theirs.spelling(v)}  # (as load_matching: l_ankle too)
    found = matching_names(ours.keypoints, theirs.keypoints) | mapped
    if not found:
        raise MoveNetError(f"{path}: predicts none of {first_path}'s keypoints ({ours.name}: "
                           f"{some_of(ours.keypoints)}); only models of shared keypoints can be averaged")
    extra = [n for n in theirs.keypoints if n not in found.values()]
    if extra and not its_init:  # (a run of some of its init's keypoints leaves the others out on purpose)
        warnings.warn(f"{path}: its {some_of(extra)} {'is' if len(extra) == 1 else 'are'} left out: the average "
                      f"has the keypoints of {first_path}, listed first (list this one first to keep them)",
                      DataWarning, stacklevel=3)
    from .pretrained import load_matching

    model = MoveNet(ModelConfig.from_dict(first["model_config"]))
    load_matching(model, {**ckpt, "model_config": {**ckpt["model_config"], "num_keypoints": ours.num_keypoints}},
                  path, ours, mapped)
    if mapped:
        starts = ", ".join(f"{k} from {path}'s {v}" for k, v in mapped.items())
        notes.append(f"{starts} (the run's init_keypoints)")
    lacking = [n for n in ours.keypoints if n not in found]
    if lacking:
        notes.append(f"{some_of(lacking)}, which {path} lacks, from the others")
    return ({**ckpt, "schema": first.get("schema"), "state_dict": model.state_dict(),
             "model_config": {**ckpt["model_config"], "num_keypoints": ours.num_keypoints}}, set(found))


def _read_at_size(spec: str) -> dict:
    """The checkpoint of ``spec`` (``NAME@SIZE`` allowed: its weights in a model of that input
    size), its weights checked against their own architecture."""
    base, size = split_input_size(spec)
    path = checkpoint_file(base)
    ckpt = read_checkpoint(path)
    model, _ = model_from_checkpoint(ckpt, path)
    if size is not None:
        model = resize_model(model, size)
        ckpt = {**ckpt, "model_config": model.config.to_dict(), "state_dict": model.state_dict()}
    return ckpt


def resize_model(model: MoveNet, input_size: int) -> MoveNet:
    """The same weights in a model of another input size (the grid's decoding constants, the
    centre prior and the cells -> 0..1 scale, follow the new size)."""
    from .pretrained import load_matching

    if input_size == model.config.input_size:
        return model
    resized = MoveNet(dataclasses.replace(model.config, input_size=input_size))
    load_matching(resized, {"state_dict": model.state_dict(), "model_config": model.config.to_dict()},
                  f"input size {input_size}")
    return resized.eval()


def load_model(spec: str | os.PathLike, verbose: bool = True) -> tuple[MoveNet, KeypointSchema]:
    """``lightning``/``thunder`` (Google's weights), a ``.pt`` checkpoint or a TF.js
    ``model.json``, each optionally with ``@SIZE`` (run at that input size, see
    ``split_input_size``). Returns the model in eval mode and its keypoint schema."""
    from . import weights

    base, size = split_input_size(spec)
    if base.endswith(".json"):
        model, schema = weights.convert_tfjs(base), COCO17
    else:
        path = checkpoint_file(base, verbose)
        if not path.exists():
            raise MoveNetError(f"{base}: no such model file, and not one of {sorted(weights.OFFICIAL)}")
        try:
            model, schema = model_from_checkpoint(read_checkpoint(path), path)
        except MoveNetError as e:
            if base not in weights.OFFICIAL:
                raise
            raise MoveNetError(f"{e} (the cached weights are damaged: delete {path} and run again to "
                               "convert them anew)") from None
    return (model if size is None else resize_model(model, size)), schema
