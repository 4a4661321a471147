"""Frame-to-frame jitter of video keypoints with and without tracking crop and smoothing.

Jitter = mean keypoint acceleration magnitude |p[t+1] - 2 p[t] + p[t-1]| in pixels per
frame^2 over keypoints scoring > 0.3 in the three frames (``tracking.keypoint_jitter``); a
still point has 0, real motion also contributes. "shift" is the mean distance to the raw
whole-frame keypoints (what smoothing costs in lag).

    python3 benchmarks/video_jitter.py ../shared/data/media/yoga.mp4
"""
from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

from movenet.predict import create_predictor
from movenet.tracking import TFJS_ONE_EURO_2023, PoseTracker, keypoint_jitter

CONFIGS = {
    "whole frame": dict(track=False, smooth=False),
    "whole frame + One Euro (TF.js defaults)": dict(track=False, smooth=True),
    "whole frame + One Euro (TF.js 2023)": dict(track=False, smooth=True, filter_params=TFJS_ONE_EURO_2023),
    "tracking crop": dict(track=True, smooth=False),
    "tracking crop + One Euro (TF.js defaults)": dict(track=True, smooth=True),
    "tracking crop + One Euro (TF.js 2023)": dict(track=True, smooth=True, filter_params=TFJS_ONE_EURO_2023),
}


def read_frames(path: str) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            return frames, fps
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video")
    p.add_argument("--model", default="lightning")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    frames, fps = read_frames(args.video)
    predictor = create_predictor(args.model, args.backend, args.threads)
    start = time.perf_counter()
    tracks = {}
    for name, cfg in CONFIGS.items():
        tracker = PoseTracker(predictor, **cfg)
        tracks[name] = np.stack([tracker(f, i / fps) for i, f in enumerate(frames)])
    raw = tracks["whole frame"]
    print(f"{args.video}: {len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]}, {fps:g} fps; "
          f"{args.model} ({args.backend}); {time.perf_counter() - start:.0f} s")
    print(f"{'':44s} {'jitter px/frame^2':>18s} {'shift px':>9s} {'mean score':>11s}")
    for name, k in tracks.items():
        shift = np.linalg.norm(k[..., :2] - raw[..., :2], axis=-1)[(raw[..., 2] > 0.3)].mean()
        print(f"{name:44s} {keypoint_jitter(k):18.3f} {shift:9.2f} {k[..., 2].mean():11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
