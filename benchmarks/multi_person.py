"""How well multi-person decoding of the single-pose heads finds several people.

LSP photos (one annotated person each) are scaled to the same height and pasted side by side,
``--people`` per canvas (a list: one table each); every canvas is decoded with
``predict_people`` once without and once with ``refine`` (the second, top-down look at each
candidate). Each annotated person is matched one-to-one (greedily, by PCK) to a decoded
person; a match needs PCK@0.2 >= 0.5 over the 12 limb joints. Reported per person-score
threshold: precision (decoded people that match someone), recall (annotated people found) and
PCK@0.2 over all annotated people (0 for the missed), against one pass over each photo alone;
and the time and forward passes per canvas. LSP photos also show unannotated bystanders: one
that is found counts as a false positive, so precision is a lower bound. With
``--track-frames N`` each canvas is also shown N times to ``MultiPoseTracker`` (tracking on,
smoothing off) with and without refine: precision and recall on the first and last frames and
forward passes per frame.

    python3 benchmarks/multi_person.py --canvases 100 --people 2,3,4
    python3 benchmarks/multi_person.py --canvases 30 --people 3 --track-frames 4
    python3 benchmarks/multi_person.py --canvases 50 --people 3 --flip   # with the flip test
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from movenet.datasets import read_lsp_joints
from movenet.errors import script_main
from movenet.image import read_image
from movenet.predict import create_predictor
from movenet.tracking import MIN_PERSON_SCORE, MultiPoseTracker, predict_people

LIMBS = np.arange(5, 17)
DEFAULT_LSP = Path(__file__).resolve().parents[2] / "shared" / "data" / "lsp"


def pck(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.2) -> float:
    torso = np.linalg.norm(gt[5, :2] - gt[12, :2])
    return float((np.linalg.norm(pred[LIMBS, :2] - gt[LIMBS, :2], axis=1) <= alpha * torso).mean())


def compose(images: list[np.ndarray], joints: list[np.ndarray], height: int):
    """Photos scaled to ``height`` side by side, and their keypoints moved accordingly."""
    tiles, truths, x = [], [], 0
    for img, gt in zip(images, joints):
        s = height / img.shape[0]
        tile = cv2.resize(img, (max(1, round(img.shape[1] * s)), height), interpolation=cv2.INTER_AREA)
        truth = gt.copy()
        truth[:, 0] = gt[:, 0] * tile.shape[1] / img.shape[1] + x
        truth[:, 1] = gt[:, 1] * s
        tiles.append(tile)
        truths.append(truth)
        x += tile.shape[1]
    return np.concatenate(tiles, axis=1), truths


def match(preds: np.ndarray, truths: list[np.ndarray], min_pck: float = 0.5) -> tuple[list[float], int]:
    """Greedy one-to-one matching by PCK: each truth's PCK (0 when unmatched), number of
    matched predictions."""
    table = np.array([[pck(p, t) for p in preds] for t in truths]).reshape(len(truths), len(preds))
    result, used = [0.0] * len(truths), set()
    for flat in np.argsort(-table, axis=None, kind="stable"):
        t, p = divmod(int(flat), max(len(preds), 1))
        if table[t, p] < min_pck:
            break
        if result[t] == 0.0 and p not in used:
            result[t] = table[t, p]
            used.add(p)
    return result, len(used)


class CountingRuns:
    """Counts the forward passes of a predictor (wraps its ``run``)."""

    def __init__(self, predictor):
        self.calls = 0
        self.run = predictor.run
        predictor.run = self

    def __call__(self, batch):
        self.calls += 1
        return self.run(batch)


def measure(predictor, counter: CountingRuns, canvas: np.ndarray, truths: list[np.ndarray], people: int,
            refine: bool, thresholds: list[float], stats: dict) -> None:
    calls, start = counter.calls, time.perf_counter()
    kpts, scores, _ = predict_people(predictor, canvas, max_people=2 * people + 2, min_score=min(thresholds),
                                     refine=refine)
    stats["seconds"] += time.perf_counter() - start
    stats["passes"] += counter.calls - calls
    for t in thresholds:
        keep = kpts[scores >= t]
        hits, matched = match(keep, truths)
        stats[t]["pck"] += hits
        stats[t]["tp"] += matched
        stats[t]["n_pred"] += len(keep)
        stats[t]["found"] += sum(h > 0 for h in hits)


def measure_tracker(predictor, counter: CountingRuns, canvas: np.ndarray, truths: list[np.ndarray], people: int,
                    refine: bool, frames: int, stats: dict) -> None:
    tracker = MultiPoseTracker(predictor, smooth=False, refine=refine, max_people=2 * people + 2)
    calls = counter.calls
    for n in range(frames):
        kpts, _, _ = tracker(canvas, n / 25)
        for key in [k for k, at in (("first", 0), ("last", frames - 1)) if n == at]:
            hits, matched = match(kpts, truths)
            stats[key]["tp"] += matched
            stats[key]["n_pred"] += len(kpts)
            stats[key]["found"] += sum(h > 0 for h in hits)
    stats["passes"] += counter.calls - calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lsp", default=str(DEFAULT_LSP))
    ap.add_argument("--canvases", type=int, default=100)
    ap.add_argument("--people", default="2,3,4", help="people per canvas (comma-separated list)")
    ap.add_argument("--height", type=int, default=256, help="height of every photo on the canvas")
    ap.add_argument("--thresholds", default="0.2,0.3,0.4", help="person-score thresholds")
    ap.add_argument("--model", default="lightning")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--track-frames", type=int, default=0, help="also MultiPoseTracker over this many frames")
    ap.add_argument("--flip", action="store_true", help="with the flip test (runtime.FlipTestPredictor)")
    args = ap.parse_args(argv)

    thresholds = [float(t) for t in args.thresholds.split(",")]
    paths, joints = read_lsp_joints(args.lsp)
    predictor = create_predictor(args.model, args.backend, args.threads)
    if args.flip:
        from movenet.runtime import FlipTestPredictor
        predictor = FlipTestPredictor(predictor)
    counter = CountingRuns(predictor)
    for people in [int(n) for n in args.people.split(",")]:
        rng = np.random.default_rng(args.seed)
        reference, n_truth = [], 0
        stats = {refine: {"seconds": 0.0, "passes": 0, **{t: {"pck": [], "tp": 0, "n_pred": 0, "found": 0}
                                                          for t in thresholds}} for refine in (False, True)}
        tracked = {refine: {"passes": 0, **{k: {"tp": 0, "n_pred": 0, "found": 0} for k in ("first", "last")}}
                   for refine in (False, True)}
        for _ in tqdm(range(args.canvases), desc=f"{people} people", file=sys.stderr):
            idx = rng.choice(len(paths), people, replace=False)
            photos = [read_image(paths[i]) for i in idx]
            reference += [pck(predictor(img), joints[i]) for img, i in zip(photos, idx)]
            canvas, truths = compose(photos, [joints[i] for i in idx], args.height)
            n_truth += len(truths)
            for refine in (False, True):
                measure(predictor, counter, canvas, truths, people, refine, thresholds, stats[refine])
                if args.track_frames:
                    measure_tracker(predictor, counter, canvas, truths, people, refine, args.track_frames,
                                    tracked[refine])
        print(f"\n{args.canvases} canvases of {people} LSP photos (height {args.height}) side by side, "
              f"{args.model} ({args.backend}, {args.threads} thread(s)); "
              f"each photo alone: PCK@0.2 {np.mean(reference):.4f}")
        print(f"{'':10s} {'min score':>9s} {'people/canvas':>14s} {'precision':>10s} {'recall':>8s} {'PCK@0.2':>8s} "
              f"{'ms/canvas':>10s} {'passes':>7s}")
        for refine, st in stats.items():
            for t in thresholds:
                r = st[t]
                precision = r["tp"] / r["n_pred"] if r["n_pred"] else 0.0
                print(f"{'refine' if refine else 'one pass':10s} {t:9.2f} {r['n_pred'] / args.canvases:14.2f} "
                      f"{precision:10.3f} {r['found'] / n_truth:8.3f} {np.mean(r['pck']):8.4f} "
                      f"{1000 * st['seconds'] / args.canvases:10.1f} {st['passes'] / args.canvases:7.2f}")
        if args.track_frames:
            print(f"MultiPoseTracker, {args.track_frames} frames per canvas (min score {MIN_PERSON_SCORE}):")
            for refine, st in tracked.items():
                cells = []
                for key in ("first", "last"):
                    r = st[key]
                    cells.append(f"{key} frame P {r['tp'] / max(r['n_pred'], 1):.3f} R {r['found'] / n_truth:.3f}")
                print(f"{'refine' if refine else 'one pass':10s} {'; '.join(cells)}; "
                      f"{st['passes'] / (args.canvases * args.track_frames):.2f} passes/frame")
    return 0


if __name__ == "__main__":
    script_main(main)
