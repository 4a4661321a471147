"""Keypoint accuracy metrics (numpy; COCO AP through pycocotools).

Conventions: predictions are [N,K,2+] (x, y[, score]) and ground truth [N,K,3] (x, y, v) in
the same pixels; only ground-truth keypoints with v > 0 count. A sample whose normaliser is
missing (nan, e.g. no torso labelled) counts for nothing.

- PCK@a torso: correct if the distance <= a * torso size, torso = left shoulder to right hip
  (the LSP protocol; COCO indices 5 and 12; a schema's own ``torso`` pair where it has one).
- PCKh@a: correct if the distance <= a * head size; head size = 0.6 x the head box diagonal
  where the data has MPII-style ``head_box``, else the neck to head-top distance where it has
  ``neck`` and ``head_top`` (LSP). COCO has neither, so PCKh is unavailable there.
- PCK@p px: correct if the distance, measured at an input resolution (the model's), is <= p px,
  i.e. the threshold in image pixels is p * crop side / input size.
- COCO AP: OKS-based AP/AR of pycocotools. Each predicted person needs a ``score``; we use
  ``runtime.pose_score`` (mean of keypoint scores > 0.2, as TF.js MoveNet).
"""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from .errors import MoveNetError
from .schema import COCO17, KeypointSchema

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
MPII_HEAD_BOX_FACTOR = 0.6


def keypoint_distances(pred_xy: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[N,K] Euclidean distances; nan where the ground truth is unlabelled (v == 0), inf where
    the prediction is not a finite point (a miss, not an unlabelled keypoint)."""
    pred_xy, gt = np.asarray(pred_xy, np.float64), np.asarray(gt, np.float64)
    with np.errstate(invalid="ignore"):
        d = np.linalg.norm(pred_xy[..., :2] - gt[..., :2], axis=-1)
    d = np.where(np.isfinite(d), d, np.inf)
    return np.where(gt[..., 2] > 0, d, np.nan)


def pck(pred_xy: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, float]:
    """Percentage of correct keypoints. ``thresholds`` [N] in pixels (nan drops the sample).
    Returns (per keypoint [K], nan where nothing is labelled; overall over all counted
    keypoints, nan if none)."""
    dist = keypoint_distances(pred_xy, gt)
    thr = np.asarray(thresholds, np.float64).reshape(-1, 1)
    counted = ~np.isnan(dist) & np.isfinite(thr) & (thr >= 0)
    correct = counted & (dist <= thr)
    n = counted.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_keypoint = np.where(n > 0, correct.sum(axis=0) / np.maximum(n, 1), np.nan)
    total = counted.sum()
    return per_keypoint, float(correct.sum() / total) if total else float("nan")


def pck_curve(pred_xy: np.ndarray, gt: np.ndarray, norm: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Overall PCK at each ``alphas[i] * norm`` (norm [N], e.g. torso sizes)."""
    return np.array([pck(pred_xy, gt, a * np.asarray(norm, np.float64))[1] for a in alphas])


def torso_size(gt: np.ndarray, schema: KeypointSchema = COCO17) -> np.ndarray:
    """[N] the PCK's unit: distance left shoulder - right hip (the schema's ``torso_pair``);
    nan where either is unlabelled. A schema without a torso: the longer side of the labelled
    keypoints' box (nan with fewer than two)."""
    gt = np.asarray(gt, np.float64)
    pair = schema.torso_pair()
    if pair is None:
        labelled = gt[..., 2] > 0
        lo = np.where(labelled[..., None], gt[..., :2], np.inf).min(axis=1)
        hi = np.where(labelled[..., None], gt[..., :2], -np.inf).max(axis=1)
        with np.errstate(invalid="ignore"):
            size = (hi - lo).max(axis=1)
        return np.where((labelled.sum(axis=1) >= 2) & (size > 0), size, np.nan)
    a, b = gt[:, pair[0]], gt[:, pair[1]]
    size = np.linalg.norm(a[:, :2] - b[:, :2], axis=-1)
    return np.where((a[:, 2] > 0) & (b[:, 2] > 0) & (size > 0), size, np.nan)


def head_size(annotations: list[dict]) -> np.ndarray:
    """[N] PCKh normaliser per COCO annotation dict: 0.6 x diagonal of ``head_box`` [x, y, w, h]
    (MPII), else |``neck`` - ``head_top``| (LSP head segment), else nan (not available)."""
    out = np.full(len(annotations), np.nan)
    for i, ann in enumerate(annotations):
        if "head_box" in ann:
            w, h = ann["head_box"][2:4]
            out[i] = MPII_HEAD_BOX_FACTOR * float(np.hypot(w, h))
        elif "neck" in ann and "head_top" in ann:
            out[i] = float(np.hypot(*(np.subtract(ann["neck"][:2], ann["head_top"][:2]))))
    return np.where(out > 0, out, np.nan)


def fixed_px_thresholds(crop_sides: np.ndarray, px: float, input_size: int) -> np.ndarray:
    """Image-pixel thresholds equivalent to ``px`` pixels at the model input resolution."""
    return px * np.asarray(crop_sides, np.float64) / float(input_size)


def oks(pred_xy: np.ndarray, gt: np.ndarray, area: float, sigmas: np.ndarray | None = None) -> float:
    """Object keypoint similarity of one person (COCO's formula, as pycocotools):
    mean over labelled keypoints of exp(-d^2 / (2 * area * (2 sigma)^2)). nan if none labelled."""
    sigmas = np.asarray(COCO17.sigmas if sigmas is None else sigmas, np.float64) / 10.0
    d = keypoint_distances(np.asarray(pred_xy)[None], np.asarray(gt)[None])[0]
    labelled = ~np.isnan(d)  # inf (no finite prediction) scores 0
    if not labelled.any():
        return float("nan")
    e = d[labelled] ** 2 / (2.0 * (2.0 * sigmas[labelled]) ** 2 * (area + np.spacing(1)))
    return float(np.exp(-e).mean())


def _checked_result(n: int, result: dict, k: int, image_ids: set) -> dict:
    """A result row as pycocotools reads it (keypoints flat), or a one-line error: pycocotools
    scores a short row as no match and fails on an unknown image by assertion."""
    try:
        keypoints = np.asarray(result.get("keypoints", ()), np.float64).ravel()
        score = float(result["score"])
        known = result.get("image_id") in image_ids
    except (KeyError, TypeError, ValueError) as e:
        raise MoveNetError(f"result {n}: needs image_id, keypoints and a score ({type(e).__name__}: {e})") from None
    if keypoints.size != 3 * k:
        raise MoveNetError(f"result {n}: {keypoints.size} keypoint values, expected {3 * k} "
                           f"(x, y, score for each of {k} keypoints)")
    if not known:
        raise MoveNetError(f"result {n}: image_id {result.get('image_id')!r} is not an image of the ground truth")
    return {**result, "keypoints": keypoints.tolist(), "score": score}


def coco_keypoint_ap(coco_gt: dict, results: list[dict], sigmas: np.ndarray | None = None) -> dict:
    """COCO keypoint AP/AR of ``results`` (dicts with ``image_id``, ``keypoints`` [3K flat:
    x, y, score], ``score``; ``category_id`` defaults to the person category) against the COCO
    dict ``coco_gt``, over all its images. ``sigmas`` as in the schema (COCO's by default).
    Returns {AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl}; nan where pycocotools has no
    ground truth for an entry (e.g. no medium-sized people)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if sigmas is not None and len(sigmas) == 0:  # OKS needs a sigma per keypoint
        return {name: float("nan") for name in COCO_STAT_NAMES}
    k = len(sigmas) if sigmas is not None else COCO17.num_keypoints
    truth_k = next((len(a["keypoints"]) // 3 for a in coco_gt.get("annotations", []) if "keypoints" in a), k)
    if truth_k != k:
        raise MoveNetError(f"the ground truth has {truth_k} keypoints per person, the sigmas {k}")
    image_ids = {im["id"] for im in coco_gt.get("images", [])}
    results = [_checked_result(n, r, k, image_ids) for n, r in enumerate(results)]
    # A prediction that is not a finite point is no detection (pycocotools would score NaN as a match).
    results = [r for r in results if np.isfinite(np.asarray(r["keypoints"], np.float64)).all()
               and np.isfinite(r["score"])]
    if not results:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    category_id = coco_gt["categories"][0]["id"]
    results = [{"category_id": category_id, **r} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        # pycocotools 2.0.9 and 2.0.10 read 'info' unconditionally in loadRes
        gt.dataset = {"info": {}, **copy.deepcopy(coco_gt)}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64) / 10.0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: (float(v) if v >= 0 else float("nan")) for name, v in zip(COCO_STAT_NAMES, ev.stats)}
