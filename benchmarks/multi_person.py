"""How well multi-person decoding of the single-pose heads finds several people.

LSP photos (one annotated person each) are scaled to the same height and pasted side by side,
``--people`` per canvas; the canvas is decoded once with ``decode_multi`` (whole canvas padded
to a square). Each annotated person is matched one-to-one (greedily, by PCK) to a decoded
person; a match needs PCK@0.2 >= 0.5 over the 12 limb joints. Reported per person-score
threshold: precision (decoded people that match someone), recall (annotated people found) and
PCK@0.2 over all annotated people (0 for the missed), against one pass over each photo alone.

    python3 benchmarks/multi_person.py --canvases 100 --people 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from movenet.datasets import read_lsp_joints
from movenet.image import read_image
from movenet.predict import create_predictor
from movenet.tracking import predict_people

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lsp", default=str(DEFAULT_LSP))
    ap.add_argument("--canvases", type=int, default=100)
    ap.add_argument("--people", type=int, default=2, help="people per canvas")
    ap.add_argument("--height", type=int, default=256, help="height of every photo on the canvas")
    ap.add_argument("--thresholds", default="0.1,0.2,0.3,0.4", help="person-score thresholds")
    ap.add_argument("--center-threshold", type=float, default=0.1, help="centre peaks above this")
    ap.add_argument("--model", default="lightning")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    thresholds = [float(t) for t in args.thresholds.split(",")]
    paths, joints = read_lsp_joints(args.lsp)
    predictor = create_predictor(args.model, args.backend, args.threads)
    rng = np.random.default_rng(args.seed)
    reference, per_thr = [], {t: {"pck": [], "tp": 0, "n_pred": 0, "found": 0} for t in thresholds}
    n_truth = 0
    for _ in tqdm(range(args.canvases), desc="canvases", file=sys.stderr):
        idx = rng.choice(len(paths), args.people, replace=False)
        photos = [read_image(paths[i]) for i in idx]
        reference += [pck(predictor(img), joints[i]) for img, i in zip(photos, idx)]
        canvas, truths = compose(photos, [joints[i] for i in idx], args.height)
        kpts, scores, _ = predict_people(predictor, canvas, max_people=2 * args.people + 2,
                                         center_threshold=args.center_threshold)
        n_truth += len(truths)
        for t in thresholds:
            keep = kpts[scores >= t]
            hits, matched = match(keep, truths)
            per_thr[t]["pck"] += hits
            per_thr[t]["tp"] += matched
            per_thr[t]["n_pred"] += len(keep)
            per_thr[t]["found"] += sum(h > 0 for h in hits)
    print(f"\n{args.canvases} canvases of {args.people} LSP photos (height {args.height}) side by side, "
          f"{args.model} ({args.backend}), centre threshold {args.center_threshold}")
    print(f"single person, each photo alone: PCK@0.2 {np.mean(reference):.4f}")
    print(f"{'min score':>9s} {'people/canvas':>14s} {'precision':>10s} {'recall':>8s} {'PCK@0.2':>8s}")
    for t, r in per_thr.items():
        precision = r["tp"] / r["n_pred"] if r["n_pred"] else 0.0
        print(f"{t:9.2f} {r['n_pred'] / args.canvases:14.2f} {precision:10.3f} "
              f"{r['found'] / n_truth:8.3f} {np.mean(r['pck']):8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
