"""Tracking crop vs whole-frame inference on small people.

Each LSP person (the whole LSP photo, scaled by ``--scale``) is pasted at a random place of a
grey ``--canvas`` frame and moved a few pixels per frame for ``--frames`` frames (a random
walk), so that the tracker has previous frames. Both methods see the same frames:
- whole frame: ``predictor(frame)`` (pad to a square, one forward pass);
- whole frame + second look: ``predict_person`` (a second pass in a crop around the first
  pose, as ``movenet predict``);
- tracking crop: ``PoseTracker(track=True, refine=False)`` (first frame whole, then the
  tracking crop), with and without One Euro smoothing;
- tracking crop + second look: ``PoseTracker(track=True)``, the default of ``movenet video``
  (the first frame, and any frame after the person is lost, looked at twice).
PCK@0.2 (torso = left shoulder to right hip, 12 limb joints) is reported on the last frame
and over all frames but the first. The reference is one pass over the unscaled LSP photo.

    python3 benchmarks/small_people.py --num 200 --scale 0.333
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
from movenet.tracking import PoseTracker, predict_person

LIMBS = np.arange(5, 17)
DEFAULT_LSP = Path(__file__).resolve().parents[2] / "shared" / "data" / "lsp"


def pck_hits(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.2) -> np.ndarray:
    """[12] bool: limb keypoints within alpha x torso (left shoulder - right hip) of the truth."""
    torso = np.linalg.norm(gt[5, :2] - gt[12, :2])
    return np.linalg.norm(pred[LIMBS, :2] - gt[LIMBS, :2], axis=1) <= alpha * torso


def make_clip(img: np.ndarray, gt: np.ndarray, scale: float, canvas: tuple[int, int], frames: int,
              step: float, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames with the scaled photo at a random walk of positions, and the moved truth."""
    w, h = canvas
    small = cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    x, y = rng.uniform(0, w - sw), rng.uniform(0, h - sh)
    background = np.full((h, w, 3), 118, np.uint8)
    clip, truths = [], []
    for _ in range(frames):
        xi, yi = int(round(x)), int(round(y))
        frame = background.copy()
        frame[yi:yi + sh, xi:xi + sw] = small
        truth = gt.copy()
        truth[:, 0] = gt[:, 0] * sw / img.shape[1] + xi
        truth[:, 1] = gt[:, 1] * sh / img.shape[0] + yi
        clip.append(frame)
        truths.append(truth)
        x = float(np.clip(x + rng.uniform(-step, step), 0, w - sw))
        y = float(np.clip(y + rng.uniform(-step, step), 0, h - sh))
    return clip, truths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lsp", default=str(DEFAULT_LSP), help="LSP folder (joints.mat + images/)")
    p.add_argument("--num", type=int, default=200, help="first N LSP people")
    p.add_argument("--scale", type=float, default=1 / 3)
    p.add_argument("--canvas", default="640x480")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--step", type=float, default=3.0, help="max motion per frame, pixels")
    p.add_argument("--model", default="lightning")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    canvas = tuple(int(v) for v in args.canvas.lower().split("x"))
    paths, joints = read_lsp_joints(args.lsp)
    predictor = create_predictor(args.model, args.backend, args.threads)
    rng = np.random.default_rng(args.seed)
    methods = ["whole frame", "whole frame + second look", "tracking crop", "tracking crop + smoothing",
               "tracking crop + second look", "tracking + second look + smoothing"]
    last = {m: [] for m in methods + ["reference (unscaled photo)"]}
    later = {m: [] for m in methods}
    start = time.perf_counter()
    for i in tqdm(range(min(args.num, len(paths))), desc="people", file=sys.stderr):
        img = read_image(paths[i])
        last["reference (unscaled photo)"].append(pck_hits(predictor(img), joints[i]))
        clip, truths = make_clip(img, joints[i], args.scale, canvas, args.frames, args.step, rng)
        runners = {"whole frame": lambda f, t: predictor(f),
                   "whole frame + second look": lambda f, t: predict_person(predictor, f),
                   "tracking crop": PoseTracker(predictor, track=True, smooth=False, refine=False),
                   "tracking crop + smoothing": PoseTracker(predictor, track=True, smooth=True, refine=False),
                   "tracking crop + second look": PoseTracker(predictor, track=True, smooth=False),
                   "tracking + second look + smoothing": PoseTracker(predictor, track=True, smooth=True)}
        for name, run in runners.items():
            hits = [pck_hits(run(frame, n / 25), truth) for n, (frame, truth) in enumerate(zip(clip, truths))]
            last[name].append(hits[-1])
            later[name].extend(hits[1:])
    elapsed = time.perf_counter() - start
    print(f"\n{len(last['whole frame'])} LSP people scaled by {args.scale:.3f} into {canvas[0]}x{canvas[1]}, "
          f"{args.frames} frames each (motion <= {args.step:g} px/frame), {args.model} ({args.backend}), "
          f"{elapsed:.0f} s")
    print(f"{'method':36s} {'PCK@0.2 last frame':>20s} {'frames 2..N':>12s}")
    for name, hits in last.items():
        rest = f"{np.mean(later[name]):12.4f}" if name in later else f"{'':12s}"
        print(f"{name:36s} {np.mean(hits):20.4f} {rest}")
    return 0


if __name__ == "__main__":
    script_main(main)
