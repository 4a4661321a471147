"""`movenet eval`: accuracy of one or more models on a keypoint data set, side by side.

Protocols (one prediction per evaluated person):
- ``whole``: the whole image, letterboxed, on images with exactly one annotated person
  (not crowd, at least one labelled keypoint); other images are left out and counted.
- ``topdown``: one square crop per annotated person on its ground-truth box (centre kept,
  side = 1.25 x the longer box side), predicted through ``Predictor(img, box)``.

Every model sees the same samples in one pass (each image is read once). Metrics are those of
``metrics``: PCK@0.2 torso, PCK at a fixed number of pixels at the input resolution, PCKh@0.5
where the data has head sizes, and COCO keypoint AP/AR (pycocotools). The report folder
(``report.md``, ``report.json``, PNG plots) is written into a temporary folder and moved into
place only when complete.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .datasets import KeypointDataset, PersonAnnotation, far_outside_image
from .errors import DataWarning, MoveNetError, counted, some_of
from .image import read_image, size_mismatch
from .metrics import (coco_keypoint_ap, fixed_px_thresholds, head_size, oks, pck, pck_curve,
                      torso_size)
from .runtime import Predictor, model_schema, pose_score
from .schema import COCO17, KeypointSchema, matching_names, with_sigmas

PROTOCOLS = ("whole", "topdown")
TOPDOWN_BOX_SCALE = 1.25
TORSO_ALPHA = 0.2
HEAD_ALPHA = 0.5
CURVE_ALPHAS = np.round(np.linspace(0.0, 0.5, 51), 4)


@dataclass
class Sample:
    """One evaluated person: its image (index into the data set's images) and, top-down, the
    square crop (x0, y0, side, side) it is predicted from (None: the whole image)."""

    image_index: int
    person: PersonAnnotation
    box: tuple[float, float, float, float] | None


@dataclass
class ModelResult:
    label: str
    spec: str
    input_size: int
    predictions: np.ndarray  # [N,K,3] x, y, score in image pixels, one row per evaluated sample
    seconds: float  # time inside the predictor (preprocess + inference + decoding)
    metrics: dict = field(default_factory=dict)
    oks: np.ndarray | None = None  # [N] per sample, for ranking the worst


@dataclass
class EvalRun:
    dataset: KeypointDataset
    protocol: str
    samples: list[Sample]  # the evaluated ones (images that could not be read are dropped)
    excluded_images: int  # images the protocol does not apply to
    skipped: list[str]  # one line per unreadable image
    crop_sides: np.ndarray  # [N] side of the square the model saw, in image pixels
    models: list[ModelResult]
    settings: dict
    left_out: dict[str, list[str]] = field(default_factory=dict)  # keypoints not scored -> the models lacking them
    # With keypoints left out, PCK's unit is still the whole data's torso: that schema, and the
    # unit of each person (by id).
    unit_schema: KeypointSchema | None = None
    units: dict[int, float] | None = None


# ---------------------------------------------------------------- models
def open_predictor(spec: str, threads: int | None = None) -> Predictor:
    """``predict.create_predictor`` with the torch backend (kept for the benchmarks' scripts)."""
    from .predict import create_predictor

    return create_predictor(spec, threads=threads)


def model_labels(specs: list[str]) -> list[str]:
    """Short unique names: the built-in name or the file stem, with its ``@SIZE``; files whose
    stems collide all get their folder (runs/a/final.pt and runs/b/final.pt: a/final, b/final),
    else the file name (lightning.onnx beside lightning), else ``#2``..."""
    from .weights import split_input_size

    parsed = []
    for spec in specs:
        name, size = split_input_size(spec)
        parsed.append((Path(name), "" if size is None else f"@{size}"))
    short = Counter((path.stem if path.suffix else str(path)) + at for path, at in dict.fromkeys(parsed))
    bare = {str(path) + at for path, at in parsed if not path.suffix}  # built-in names (lightning)
    labels: list[str] = []
    file_names: dict[str, str] = {}  # label -> the file name it was made from
    for path, at in parsed:
        stem = (path.stem if path.suffix else str(path)) + at
        candidates = [stem]
        if path.suffix and path.parent.name and short[stem] > 1:
            candidates = [f"{path.parent.name}/{path.stem}{at}"]
        elif path.suffix and stem in bare:  # lightning.onnx beside lightning, in either order
            candidates = [path.name + at]
        elif path.suffix and file_names.get(stem) != path.name:  # l.pt and l.json
            candidates.append(path.name + at)
        base = next((c for c in candidates if c not in labels), candidates[-1])
        file_names.setdefault(base, path.name)
        label, n = base, 2
        while label in labels:
            label, n = f"{base}#{n}", n + 1
        labels.append(label)
    return labels


def predicted_names(predictor: Predictor, label: str, dataset: KeypointDataset) -> dict[str, str]:
    """Each of the data's keypoints that the model predicts -> its name among the model's, in
    any order and among others (``schema.matching_names``: Lightning's 17 for a schema of some of
    COCO's). Checked on a blank image, which also warms the model up."""
    k = predictor(np.zeros((predictor.input_size, predictor.input_size, 3), np.uint8)).shape[0]
    ours, theirs = list(dataset.schema.keypoints), list(predictor.schema.keypoints)
    if k != len(theirs):  # (a file of Google's format whose outputs are not COCO's 17)
        raise MoveNetError(f"{label}: predicts {k} keypoints, the data has {len(ours)} ({dataset.schema.name})")
    return matching_names(ours, theirs)


def shared_keypoints(dataset: KeypointDataset, predictors: dict[str, Predictor], specs: list[str]
                     ) -> tuple[KeypointDataset, dict[str, list[str]], list[np.ndarray]]:
    """(the data with the keypoints that every model predicts, {each keypoint left out: the
    labels of the models that lack it}, per model where the data's keypoints are among its own).
    Models side by side are scored on the same keypoints: where one lacks some of the data's
    (Lightning beside a model trained with a new keypoint), all are scored on the others, with a
    warning. A model that predicts none of them is an error."""
    labels = list(predictors)
    found = [predicted_names(p, spec, dataset) for p, spec in zip(predictors.values(), specs)]
    ours = dataset.schema.keypoints
    for p, spec, f in zip(predictors.values(), specs, found):
        if not f:
            raise MoveNetError(f"{spec}: predicts the {counted(p.schema.num_keypoints, 'keypoints')} of "
                               f"{p.schema.name}, none of the data's {dataset.schema.name} ({some_of(ours)})")
    left_out = {name: [label for label, f in zip(labels, found) if name not in f] for name in ours}
    left_out = {name: who for name, who in left_out.items() if who}
    if left_out:
        shared = [name for name in ours if name not in left_out]
        if not shared:
            raise MoveNetError(f"{dataset.name}: the models share none of the data's {dataset.schema.name} keypoints "
                               f"({some_of(ours)}); evaluate them one by one")
        lacking = [(spec, [n for n in ours if n not in f]) for spec, f in zip(specs, found)]
        said = "; ".join(f"{spec} lacks {some_of(names)}" for spec, names in lacking if names)
        warnings.warn(f"{dataset.name}: {said} of the data's {len(ours)} keypoints ({dataset.schema.name}); "
                      + (f"all models are scored on the other {len(shared)} (a model evaluated alone is scored on "
                         "all of its keypoints that the data has)" if len(labels) > 1 else
                         f"it is scored on the other {len(shared)}"), DataWarning, stacklevel=3)
        from .datasets import keep_keypoints

        dataset = keep_keypoints(dataset, shared)
    picks = [np.array([list(p.schema.keypoints).index(f[name]) for name in dataset.schema.keypoints])
             for p, f in zip(predictors.values(), found)]
    return dataset, left_out, picks


# ---------------------------------------------------------------- samples
def person_crop_box(bbox: tuple[float, float, float, float], scale: float = TOPDOWN_BOX_SCALE
                    ) -> tuple[float, float, float, float]:
    """Square (x0, y0, side, side) with the box's centre and ``scale`` x its longer side."""
    x, y, w, h = bbox
    side = scale * max(w, h)
    return (x + w / 2 - side / 2, y + h / 2 - side / 2, side, side)


def scored_people(entry) -> list:
    """An image's people that are scored: not crowds, with a labelled keypoint."""
    return [p for p in entry.people if not p.iscrowd and p.num_labelled > 0]


def make_samples(dataset: KeypointDataset, protocol: str) -> tuple[list[Sample], int]:
    """-> (samples, number of images the protocol leaves out)."""
    if protocol not in PROTOCOLS:
        raise MoveNetError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    samples, excluded = [], 0
    for i, entry in enumerate(dataset.images):
        people = scored_people(entry)
        if protocol == "whole":
            if len(people) == 1:
                samples.append(Sample(i, people[0], None))
            else:
                excluded += 1
            continue
        people = [p for p in people if max(p.bbox[2], p.bbox[3]) > 0]
        samples += [Sample(i, p, person_crop_box(p.bbox)) for p in people]
        excluded += not people
    return samples, excluded


# ---------------------------------------------------------------- the pass over the data
def run_models(dataset: KeypointDataset, samples: list[Sample], predictors: dict[str, Predictor],
               progress: bool = True, refine: bool = False, picks: list[np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Predict every sample with every model, reading each image once; with ``refine`` each
    with ``tracking.predict_person``'s second look (what ``movenet predict`` outputs). ``picks``:
    per model, the data's keypoints among its own (``shared_keypoints``; default the same).
    Returns (predictions [M,N,K,3], crop sides [N], seconds per model [M], kept mask [N],
    skipped lines)."""
    from tqdm import tqdm

    from .tracking import predict_person

    k = dataset.schema.num_keypoints
    preds = np.full((len(predictors), len(samples), k, 3), np.nan)
    sides = np.full(len(samples), np.nan)
    seconds = np.zeros(len(predictors))
    kept = np.ones(len(samples), bool)
    skipped: list[str] = []
    by_image: dict[int, list[int]] = {}
    for n, s in enumerate(samples):
        by_image.setdefault(s.image_index, []).append(n)
    for image_index, rows in tqdm(by_image.items(), desc="eval", unit="img", file=sys.stderr,
                                  disable=not progress or len(by_image) < 2):
        entry = dataset.images[image_index]
        try:
            img = read_image(entry.path)
        except MoveNetError as e:
            skipped.append(str(e))
            kept[rows] = False
            continue
        problem = size_mismatch(entry.path, img.shape, entry.width, entry.height)
        if problem:
            warnings.warn(problem, DataWarning, stacklevel=2)
        for n in rows:
            box = samples[n].box
            sides[n] = box[2] if box is not None else max(img.shape[:2])
            for m, predictor in enumerate(predictors.values()):
                start = time.perf_counter()
                pose = predict_person(predictor, img, box, refine)
                preds[m, n] = pose[picks[m]] if picks is not None else pose
                seconds[m] += time.perf_counter() - start
    return preds, sides, seconds, kept, skipped


def evaluate(dataset: KeypointDataset, specs: list[str] | str, protocol: str = "whole", threads: int | None = None,
             px: float = 5.0, px_size: int | None = None, progress: bool = True, refine: bool = False,
             flip: bool = False) -> EvalRun:
    """Load the models (``specs``: one or a list of what ``--model`` takes), check them against
    the data's schema, run the pass and the metrics (``flip``: each model through ``FlipTestPredictor``)."""
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    if not isinstance(specs, (list, tuple)) or not specs:
        raise MoveNetError(f"no model to evaluate (give a model or a list of them, got {specs!r})")
    specs = [str(s) for s in specs]
    samples, excluded = make_samples(dataset, protocol)
    if not samples:
        raise MoveNetError(f"{dataset.name}: no person to evaluate with the {protocol} protocol")
    boxless = sum(len(scored_people(e)) for e in dataset.images) - len(samples) if protocol == "topdown" else 0
    if boxless:  # one labelled keypoint and no bbox: nothing to crop around
        warnings.warn(f"{dataset.name}: {boxless} labelled people have no box (no bbox, labelled keypoints at one "
                      "spot); the topdown protocol leaves them out", DataWarning, stacklevel=2)
    flat = sum(1 for s in samples if not s.person.area > 0)
    if flat:  # (see ap_ground_truth)
        warnings.warn(f"{dataset.name}: {flat} labelled people have no area (no bbox, keypoints at one spot or in a "
                      "line); COCO AP leaves them out, PCK scores them", DataWarning, stacklevel=2)
    entries = dataset.images
    far = sum(int(far_outside_image(s.person.keypoints, entries[s.image_index].width,
                                    entries[s.image_index].height).sum()) for s in samples)
    if far:  # scored as they are: no model can find them
        warnings.warn(f"{dataset.name}: {far} labelled keypoints lie more than an image's size outside their "
                      "image (annotation errors?); they are scored as they are", DataWarning, stacklevel=2)
    labels = model_labels(specs)
    predictors = {label: open_predictor(spec, threads) for label, spec in zip(labels, specs)}
    if flip:
        from .runtime import FlipTestPredictor
        predictors = {label: FlipTestPredictor(p) for label, p in predictors.items()}
    full = dataset
    dataset, left_out, picks = shared_keypoints(dataset, predictors, specs)
    if left_out:  # (people labelled only on the keypoints left out are not scored)
        samples, excluded = make_samples(dataset, protocol)
        if not samples:
            raise MoveNetError(f"{dataset.name}: no person to evaluate with the {protocol} protocol on the "
                               f"{dataset.schema.num_keypoints} keypoints that every model predicts")
    # One resolution for the fixed-pixel PCK keeps the column comparable across models.
    px_size = px_size or min(p.input_size for p in predictors.values())
    preds, sides, seconds, kept, skipped = run_models(dataset, samples, predictors, progress, refine, picks)
    if not kept.any():  # a report of no people would only say n/a
        raise MoveNetError(f"{dataset.name}: none of its {len(skipped)} images to evaluate could be read "
                           f"(first: {skipped[0]})")
    samples = [s for s, keep in zip(samples, kept) if keep]
    run = EvalRun(dataset, protocol, samples, excluded, skipped, sides[kept], [],
                  {"protocol": protocol, "refine": refine, "flip": flip, "px": px, "px_size": px_size,
                   "threads": threads, "topdown_box_scale": TOPDOWN_BOX_SCALE, "torso_alpha": TORSO_ALPHA,
                   "head_alpha": HEAD_ALPHA}, left_out)
    if left_out:
        people = [p for e in full.images for p in e.people]
        run.unit_schema = full.schema
        run.units = dict(zip((p.id for p in people), torso_size(np.stack([p.keypoints for p in people]), full.schema)))
    for m, (label, spec) in enumerate(zip(labels, specs)):
        result = ModelResult(label, str(spec), int(predictors[label].input_size), preds[m][kept], float(seconds[m]))
        score_model(run, result)
        run.models.append(result)
    return run


# ---------------------------------------------------------------- metrics
def score_model(run: EvalRun, result: ModelResult) -> None:
    """Fill ``result.metrics`` and ``result.oks``."""
    schema = run.dataset.schema
    gt = np.stack([s.person.keypoints for s in run.samples]) if run.samples else np.zeros((0, schema.num_keypoints, 3))
    pred = result.predictions
    torso = np.zeros(0) if not len(gt) else torso_size(gt, schema) if run.units is None else \
        np.array([run.units[s.person.id] for s in run.samples])
    annotations = _annotation_dicts(run)
    heads = head_size(annotations)
    px_size = run.settings["px_size"]

    def summary(per_keypoint: np.ndarray, overall: float) -> dict:
        return {"overall": _num(overall),
                "per_keypoint": {name: _num(v) for name, v in zip(schema.keypoints, per_keypoint)}}

    m = {"pck_torso": summary(*pck(pred, gt, TORSO_ALPHA * torso)),
         "pck_px": summary(*pck(pred, gt, fixed_px_thresholds(run.crop_sides, run.settings["px"], px_size))),
         "pckh": summary(*pck(pred, gt, HEAD_ALPHA * heads)) if np.isfinite(heads).any() else None,
         "pck_torso_curve": [_num(v) for v in pck_curve(pred, gt, torso, CURVE_ALPHAS)],
         "labelled_keypoints": int((gt[..., 2] > 0).sum()),
         "samples_with_torso": int(np.isfinite(torso).sum())}
    # OKS needs per-keypoint sigmas: a schema without them has no COCO AP.
    m["coco"] = ({k: _num(v) for k, v in coco_keypoint_ap(*ap_ground_truth(run, pred), np.asarray(schema.sigmas)
                                                          ).items()} if schema.sigmas else None)
    m["ms_per_person"] = _num(1000.0 * result.seconds / max(len(run.samples), 1))
    result.metrics = m
    # Without sigmas the worst samples are ranked with COCO's body-part average.
    sigmas = schema.sigmas or np.full(schema.num_keypoints, np.mean(COCO17.sigmas))
    result.oks = np.array([oks(p, s.person.keypoints, max(s.person.area, 1.0), sigmas)
                           for s, p in zip(run.samples, pred)])


def ap_ground_truth(run: EvalRun, pred: np.ndarray) -> tuple[dict, list[dict]]:
    """(COCO ground truth, results) for AP over the images of the samples. People the protocol
    leaves out (topdown: no box), and people whose area is 0 (no bbox, keypoints at one spot or
    in a line: OKS has no scale, so nothing but the exact point could match them), are not scored:
    no result, and their ground truth marked as pycocotools ignores it (num_keypoints 0)."""
    scored = {s.person.id for s in run.samples if s.person.area > 0}
    results = [{"image_id": s.person.image_id, "keypoints": [round(float(v), 3) for v in p.reshape(-1)],
                "score": pose_score(p)} for s, p in zip(run.samples, pred) if s.person.id in scored]
    truth = run.dataset.subset({s.person.image_id for s in run.samples}).coco
    annotations = [a if a["id"] in scored else {**a, "num_keypoints": 0} for a in truth["annotations"]]
    return {**truth, "annotations": annotations}, results


def _annotation_dicts(run: EvalRun) -> list[dict]:
    by_id = {a["id"]: a for a in run.dataset.coco["annotations"]}
    return [by_id.get(s.person.id, {}) for s in run.samples]


def _num(v) -> float | None:
    """JSON-friendly number: nan (nothing to measure) becomes None."""
    v = float(v)
    return round(v, 6) if np.isfinite(v) else None


# ---------------------------------------------------------------- report
def report_dict(run: EvalRun, data: str) -> dict:
    return {
        "data": str(data),
        "dataset": run.dataset.name,
        "schema": run.dataset.schema.name,
        "torso": torso_text(run.unit_schema or run.dataset.schema),
        "keypoints_left_out": run.left_out,
        "protocol": run.protocol,
        "images": len({s.image_index for s in run.samples}),
        "people": len(run.samples),
        "excluded_images": run.excluded_images,
        "skipped": run.skipped,
        "settings": run.settings,
        "pck_curve_alphas": CURVE_ALPHAS.tolist(),
        "models": {r.label: {"spec": r.spec, "input_size": r.input_size, "seconds": round(r.seconds, 3),
                             **r.metrics} for r in run.models},
    }


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def torso_text(schema: KeypointSchema) -> str:
    """What PCK@0.2 is relative to for ``schema`` (``metrics.torso_size``)."""
    pair = schema.torso_pair()
    if pair is None:
        return "the longer side of the box of that person's labelled keypoints (the schema names no torso)"
    a, b = (schema.keypoints[i].replace("_", " ") for i in pair)
    return f"distance({a}, {b}) of that person"


def report_markdown(report: dict, plots: dict[str, str]) -> str:
    from .tracking import SECOND_LOOK_EXPANSION

    models = report["models"]
    px = report["settings"]["px"]
    refine, flip = report["settings"].get("refine"), report["settings"].get("flip")
    lines = [f"# Evaluation on {report['dataset']} ({report['protocol']} protocol"
             f"{', second look' if refine else ''}{', flip test' if flip else ''})", "",
             f"Data: `{report['data']}`: {report['people']} people in {report['images']} images"
             f" ({report['excluded_images']} images left out by the protocol,"
             f" {len(report['skipped'])} unreadable).", ""]
    left_out = report.get("keypoints_left_out") or {}
    if left_out:
        lacking = {}
        for name, models_lacking in left_out.items():
            lacking.setdefault(", ".join(f"`{m}`" for m in models_lacking), []).append(f"`{name}`")
        said = "; ".join(f"{', '.join(names)} ({who} {'does' if ', ' not in who else 'do'} not predict "
                         f"{'it' if len(names) == 1 else 'them'})" for who, names in lacking.items())
        lines += [f"Not scored: {said}. Every model is scored on the keypoints that all of them predict.", ""]
    px_size = report["settings"]["px_size"]
    lines += [f"| model | input | PCK@0.2 torso | PCK@{px:g}px@{px_size} | PCKh@0.5 | AP | AP50 | AP75 | AR | ms/person |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for label, m in models.items():
        pckh = m["pckh"]["overall"] if m["pckh"] else None
        c = m["coco"] or {}
        lines.append(f"| {label} | {m['input_size']} | {_fmt(m['pck_torso']['overall'])} | "
                     f"{_fmt(m['pck_px']['overall'])} | {_fmt(pckh)} | {_fmt(c.get('AP'))} | {_fmt(c.get('AP50'))} | "
                     f"{_fmt(c.get('AP75'))} | {_fmt(c.get('AR'))} | {_fmt(m['ms_per_person'], 1)} |")
    labels = list(models)
    lines += ["", "## PCK@0.2 torso per keypoint", "", "| keypoint | " + " | ".join(labels) + " |",
              "|---|" + "---|" * len(labels)]
    first = models[labels[0]]["pck_torso"]["per_keypoint"]
    for name in first:
        lines.append(f"| {name} | " + " | ".join(_fmt(models[lb]["pck_torso"]["per_keypoint"][name])
                                                 for lb in labels) + " |")
    lines += ["", f"![PCK per keypoint]({plots['per_keypoint']})", "",
              f"![PCK against threshold]({plots['curve']})", "", "## Worst predictions", "",
              "Lowest OKS first; ground truth on the left, prediction on the right.", ""]
    lines += [f"### {label}\n\n![worst {label}]({plots['worst'][label]})\n" for label in labels]
    if report["skipped"]:
        lines += ["## Skipped images", ""] + [f"- {s}" for s in report["skipped"]] + [""]
    lines += ["## Definitions", "",
              "- Only keypoints labelled in the data count (v > 0); keypoints never labelled show n/a.",
              f"- PCK@0.2 torso: error <= 0.2 x "
              f"{report.get('torso', 'distance(left shoulder, right hip) of that person')}.",
              f"- PCK@{px:g}px@{px_size}: error <= {px:g} px at an input resolution of {px_size} "
              f"(threshold = {px:g} x crop side / {px_size} image pixels).",
              "- PCKh@0.5: error <= 0.5 x head size (0.6 x head box diagonal, or neck to head top); "
              "n/a where the data has no head annotation (COCO).",
              "- AP/AR: pycocotools keypoint evaluation (OKS), person score = mean of keypoint scores > 0.2. "
              "Where the data has no real segment areas (LSP), the area is that of the keypoints' box.",
              "- ms/person: time inside the predictor (preprocessing, inference, decoding) per person.",
              "- Second look: " + (f"each person predicted again in a square crop {SECOND_LOOK_EXPANSION:g} x "
                                   "the box of its first pose's keypoints (two passes, as `movenet predict`)."
                                   if refine else
                                   "none (one pass; `movenet eval --refine` scores the two passes of "
                                   "`movenet predict`)."),
              "- Flip test: " + ("each input also run mirrored, the two head outputs averaged before decoding "
                                 "(twice the model time)." if flip else
                                 "none (`movenet eval --flip` averages each input with its mirror image)."), ""]
    return "\n".join(lines)


def _file_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def _worst_files(labels: list[str]) -> dict[str, str]:
    """A gallery file per model label, unique also where two labels make the same file name
    (lightning@224 and lightning_224.pt)."""
    files: dict[str, str] = {}
    for label in labels:
        name, n = f"worst_{_file_label(label)}", 2
        while f"{name}.png" in files.values():
            name, n = f"worst_{_file_label(label)}_{n}", n + 1
        files[label] = f"{name}.png"
    return files


def plot_per_keypoint(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    models = report["models"]
    names = list(next(iter(models.values()))["pck_torso"]["per_keypoint"])
    labelled = [n for n in names if any(m["pck_torso"]["per_keypoint"][n] is not None for m in models.values())]
    fig = Figure(figsize=(max(6, 0.6 * len(labelled) + 2), 4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(models)
    x = np.arange(len(labelled))
    for i, (label, m) in enumerate(models.items()):
        values = [m["pck_torso"]["per_keypoint"][n] or 0.0 for n in labelled]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, [n.replace("_", " ") for n in labelled], rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("PCK@0.2 torso")
    ax.set_title(f"{report['dataset']}: PCK per keypoint ({report['protocol']})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=100)


def plot_pck_curves(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    for label, m in report["models"].items():
        ax.plot(report["pck_curve_alphas"], [v if v is not None else np.nan for v in m["pck_torso_curve"]],
                label=label)
    ax.axvline(TORSO_ALPHA, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("threshold (fraction of torso size)")
    ax.set_ylabel("PCK")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, CURVE_ALPHAS[-1])
    ax.set_title(f"{report['dataset']}: PCK against threshold")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)


def plot_worst(run: EvalRun, result: ModelResult, path: Path, count: int = 8, tile: int = 200) -> None:
    """Gallery of the ``count`` samples with the lowest OKS: ground truth | prediction."""
    from matplotlib.figure import Figure

    from .draw import draw_pose
    from .image import crop_and_resize

    order = np.argsort(np.nan_to_num(result.oks, nan=2.0), kind="stable")[:count]
    cols = min(4, max(len(order), 1))
    rows = max(1, -(-len(order) // cols))
    fig = Figure(figsize=(cols * 4.0, rows * 2.25), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for ax in axes:
        ax.axis("off")
    for ax, n in zip(axes, order):
        sample = run.samples[n]
        entry = run.dataset.images[sample.image_index]
        img = read_image(entry.path)
        gt = sample.person.keypoints.astype(np.float32).copy()
        gt[:, 2] = gt[:, 2] > 0
        view = _view_box(sample, img.shape)
        crop = crop_and_resize(img, view, tile)
        left = draw_pose(crop, _to_tile(gt, view, tile), run.dataset.schema, threshold=0.5)
        right = draw_pose(crop, _to_tile(result.predictions[n], view, tile), run.dataset.schema, threshold=0.0)
        ax.imshow(np.concatenate([left, np.full((tile, 4, 3), 255, np.uint8), right], axis=1))
        ax.set_title(f"{entry.path.name}  OKS {result.oks[n]:.2f}", fontsize=8)
    fig.suptitle(f"{result.label}: worst {len(order)} ({run.protocol})", fontsize=10)
    _save_palette_png(fig, path, dpi=90)


def _save_palette_png(fig, path: Path, dpi: int) -> None:
    """A photo gallery as a 256-colour PNG: about a third of the size, fine for viewing."""
    import io

    from PIL import Image  # a dependency of matplotlib

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    image = Image.open(buf).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def _view_box(sample: Sample, shape: tuple[int, ...]) -> tuple[float, float, float, float]:
    if sample.box is not None:
        return sample.box
    return person_crop_box(sample.person.bbox, 1.5) if max(sample.person.bbox[2:]) > 0 \
        else (0.0, 0.0, float(max(shape[:2])), float(max(shape[:2])))


def _to_tile(keypoints: np.ndarray, box, size: int) -> np.ndarray:
    """Image pixels -> pixels of the ``size`` x ``size`` tile cut at ``box`` (inverse of
    ``to_image_coords`` after scaling)."""
    out = np.array(keypoints, np.float32, copy=True)
    out[:, 0] = (out[:, 0] - box[0]) * size / box[2]
    out[:, 1] = (out[:, 1] - box[1]) * size / box[3]
    return out


def check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier report, or one that holds more than
    what a report writes (the whole folder is replaced: a model or data kept there would go)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").exists())):
        raise MoveNetError(f"{out}: exists and is not an earlier eval report; choose another --out")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir()
                        if not (p.is_file() and (p.name in ("report.json", "report.md") or p.suffix == ".png")))
        if others:
            raise MoveNetError(f"{out}: holds files an eval report does not write ({some_of(others)}), which "
                               "replacing it would delete; choose another --out")
    from .fileio import check_writable

    check_writable(out.parent, folder=True)  # the report is made beside it and renamed
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):  # (moving a folder rewrites it; its files go)
        raise MoveNetError(f"{out}: cannot replace this report (permission denied); choose another --out")


def write_report(run: EvalRun, data: str, out: str | os.PathLike) -> Path:
    """Write report.md, report.json and the PNGs into ``out`` as a whole (temp folder, rename)."""
    from .fileio import make_folder, write_errors_named

    out = Path(out)
    check_out_dir(out)
    make_folder(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with write_errors_named(out):  # (the plots are written by matplotlib and PIL)
            _write_report_files(run, data, tmp)
            os.chmod(tmp, 0o777 & ~_umask())
            _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _write_report_files(run: EvalRun, data: str, folder: Path) -> None:
    from .fileio import write_json_atomic, write_text_atomic

    report = report_dict(run, data)
    plots = {"per_keypoint": "pck_per_keypoint.png", "curve": "pck_curve.png",
             "worst": _worst_files([r.label for r in run.models])}
    plot_per_keypoint(report, folder / plots["per_keypoint"])
    plot_pck_curves(report, folder / plots["curve"])
    for r in run.models:
        plot_worst(run, r, folder / plots["worst"][r.label])
    write_json_atomic(folder / "report.json", report)
    write_text_atomic(folder / "report.md", report_markdown(report, plots))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(new: Path, out: Path) -> None:
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    try:
        os.replace(out, old / out.name)
    except OSError as e:
        old.rmdir()
        raise MoveNetError(f"{out}: cannot replace this report ({e.strerror}); choose another --out") from None
    os.replace(new, out)
    shutil.rmtree(old)


# ---------------------------------------------------------------- command line
def is_config(data: str | os.PathLike) -> bool:
    return Path(data).suffix.lower() in (".yaml", ".yml")


def config_split(path: str | os.PathLike, split: str | None = None) -> KeypointDataset:
    """The images of one side of a training config's split (``val``: the held-out images, the
    default; ``train``: those it trains on), split as ``movenet train`` splits them."""
    from .config import load_config, require_sources
    from .datasets import concat_datasets
    from .samples import split_sources

    split = split or "val"
    if split not in ("val", "train"):
        raise ValueError(f"split must be 'val' or 'train', got {split!r}")
    cfg = require_sources(load_config(path), path)
    train_parts, val_parts = split_sources(cfg.data, cfg.keypoint_schema())
    parts = val_parts if split == "val" else train_parts
    if not parts:
        raise MoveNetError(f"{path}: no validation images (the config sets neither data.val_fraction "
                           "nor data.val_sources)")
    dataset = concat_datasets(parts)
    dataset.name = f"{dataset.name} ({split} split of {Path(path).name})"
    return dataset


def warn_other_splits(config: str | os.PathLike, specs: list[str]) -> None:
    """A warning for each checkpoint whose training run split the same data sources so that some
    of ``config``'s held-out images were among its training images: another ``split_seed``, or a
    smaller share held out (``samples.split_image_ids`` ranks the images once per seed; a larger
    share or fewer training images only moves the line between the sides)."""
    from .checkpoint import read_checkpoint, split_input_size
    from .config import load_config

    own = load_config(config).to_dict()["data"]
    if own.get("val_sources"):  # (held-out files of their own: no split of the sources)
        return
    for spec in specs:
        path = Path(split_input_size(spec)[0])
        if path.suffix.lower() != ".pt" or not path.is_file():
            continue
        theirs = (read_checkpoint(path).get("config") or {}).get("data")
        if not isinstance(theirs, dict) or theirs.get("sources") != own.get("sources"):  # (other data: unknown)
            continue
        held_out = 0.0 if theirs.get("val_sources") else float(theirs.get("val_fraction") or 0.0)
        why = []
        if theirs.get("split_seed", 0) != own.get("split_seed", 0) and held_out > 0:
            why.append(f"data.split_seed {theirs.get('split_seed', 0)}, this config's {own.get('split_seed', 0)}")
        certain = held_out < own.get("val_fraction", 0.0)
        if certain:
            why.append("data.val_sources, not data.val_fraction" if theirs.get("val_sources") else
                       f"data.val_fraction {held_out:g}, this config's {own.get('val_fraction', 0.0):g}")
        if why:
            run_config = path.parent / "config.yaml"
            own_split = f"; {run_config} holds its own" if run_config.is_file() else ""
            warnings.warn(f"{spec}: trained on another split than {config}'s ({'; '.join(why)}): some of these "
                          f"held-out images {'are' if certain else 'may be'} among its training images{own_split}",
                          DataWarning, stacklevel=2)


def load_data(data: str | os.PathLike, image_root: str | os.PathLike | None = None,
              split: str | None = None, schema: KeypointSchema = COCO17) -> KeypointDataset:
    """Labelled images to score on: any source ``datasets.load_keypoint_dataset`` reads (with
    the keypoints of ``schema``), or a training config (.yaml) for the images of its split
    (``config_split``; its own schema)."""
    from .datasets import load_keypoint_dataset

    if is_config(data):
        if image_root:
            raise MoveNetError("--images does not apply to a training config (its sources say where "
                               "their images are)")
        return config_split(data, split)
    if split:
        raise MoveNetError(f"--split applies to a training config (.yaml), not to {data}")
    return load_keypoint_dataset(data, image_root=image_root, schema=schema)


def load_data_for(args, specs: list[str]) -> KeypointDataset:
    """The data, read with the keypoints of the model with the most keypoints whose keypoints it
    has (so that a model's extra keypoint is not dropped for Lightning's 17; a model that lacks
    some is scored on the others, ``shared_keypoints``); see ``load_data_as``."""
    schemas: dict[KeypointSchema, None] = {}  # (in order, each once)
    for spec in specs:
        schemas.setdefault(model_schema(spec))
    return load_data_as(args.data, args.images, args.split, sorted(schemas, key=lambda s: -s.num_keypoints))


def load_data_as(data: str | os.PathLike, image_root: str | os.PathLike | None, split: str | None,
                 schemas: list[KeypointSchema]) -> KeypointDataset:
    """``load_data`` with the first of ``schemas`` whose keypoints the data has; a file of other
    keypoints (ankles named feet) with its own, where a schema has some of them (OKS with COCO's
    sigmas for COCO's keypoints, ``with_sigmas``); else the first error. A config: its own."""
    first = None
    for schema in schemas:
        try:
            return load_data(data, image_root, split, schema)
        except MoveNetError as e:
            first = first or e
    if not is_config(data):
        try:
            dataset = load_data(data, image_root, split, None)
        except MoveNetError:
            raise first from None
        if any(matching_names(dataset.schema.keypoints, s.keypoints) for s in schemas):
            return replace(dataset, schema=with_sigmas(dataset.schema))
    raise first


def cmd_eval(args) -> int:
    """``movenet eval``: 0 when every image was read, 1 when some were skipped."""
    out = Path(args.out)
    check_out_dir(out)
    for name, value in (("--limit", args.limit), ("--px", args.px), ("--px-size", args.px_size)):
        if value is not None and not 0 < value < float("inf"):  # (the parser checks them; a caller may not)
            raise MoveNetError(f"{name} must be a finite number > 0, got {value}")
    specs = args.models or ["lightning"]
    dataset = load_data_for(args, specs)
    if is_config(args.data) and (args.split or "val") == "val":
        warn_other_splits(args.data, specs)
    if args.limit is not None:
        dataset = dataset.subset([e.id for e in dataset.images[:args.limit]])
    start = time.perf_counter()
    run = evaluate(dataset, specs, args.protocol, args.threads, args.px, args.px_size, refine=args.refine,
                   flip=args.flip)
    for line in run.skipped:
        print(f"movenet: skipped {line}", file=sys.stderr)
    write_report(run, args.data, out)
    print(f"{dataset.name}: {len(run.samples)} people, {args.protocol} protocol"
          f"{' with a second look' if args.refine else ''}{' and the flip test' if args.flip else ''}, "
          f"{time.perf_counter() - start:.1f} s")
    for r in run.models:
        m = r.metrics
        print(f"  {r.label:<24} PCK@0.2 {_fmt(m['pck_torso']['overall'])}  "
              f"PCK@{args.px:g}px@{run.settings['px_size']} {_fmt(m['pck_px']['overall'])}  AP {_fmt((m['coco'] or {}).get('AP'))}  "
              f"{_fmt(m['ms_per_person'], 1)} ms/person")
    print(f"wrote {out}/report.md")
    if run.skipped:
        print(f"movenet: error: {len(run.skipped)} unreadable images skipped", file=sys.stderr)
        return 1
    return 0
