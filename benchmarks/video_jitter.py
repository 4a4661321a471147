"""Jitter against lag of video keypoints: tracking crop and One Euro smoothing, TF.js' values
against ours.

Three measurements:
1. jitter = mean keypoint acceleration |p[t+1] - 2 p[t] + p[t-1]| (px/frame^2) over keypoints
   scoring > 0.3 in the three frames (``tracking.keypoint_jitter``); real motion counts too;
2. error (px) to a pseudo ground truth: the ``--reference`` model (Thunder) on every whole
   frame, smoothed without delay (centred Gaussian, sigma ``--sigma`` frames);
3. lag (frames): the time shift s that makes the track closest to the pseudo ground truth
   delayed by s (each keypoint's mean offset removed first, so the bias between two models
   does not count); ``whole frame`` shows what 0 reads as.
The clip is measured as it is and, with ``--small``, at half size on a grey 640x480 frame
(where the tracking crop is used). A synthetic test follows, where the truth is known:
smooth random trajectories at 0.5 to 10 px/frame on a 360 px frame at 25 fps plus Gaussian
noise (``--noise`` px). ``--sweep`` prints the One Euro grid (whole-frame keypoints of the
clip, filtered in numpy) from which the defaults were chosen.

    python3 benchmarks/video_jitter.py ../shared/data/media/yoga.mp4 --small
"""
from __future__ import annotations

import argparse
import itertools
import time

import cv2
import numpy as np

from movenet.errors import MoveNetError, script_main
from movenet.predict import create_predictor
from movenet.tracking import (ONE_EURO, TFJS_CROP, TFJS_ONE_EURO, TFJS_ONE_EURO_2023, PoseTracker,
                              keypoint_filter, keypoint_jitter)
from movenet.video import open_source

SMOOTHERS = {"no smoothing": None, "One Euro TF.js": TFJS_ONE_EURO, "One Euro TF.js 2023": TFJS_ONE_EURO_2023,
             "One Euro default": ONE_EURO}
CONFIGS = {
    # one pass per frame (refine=False): the whole frame as the model sees it, and TF.js' loop
    **{f"whole frame, {s}": dict(track=False, smooth=p is not None, filter_params=p, refine=False)
       for s, p in SMOOTHERS.items()},
    "TF.js crop, no smoothing": dict(track=True, smooth=False, refine=False, **TFJS_CROP),
    "TF.js crop, One Euro TF.js (TF.js' loop)": dict(track=True, filter_params=TFJS_ONE_EURO, refine=False,
                                                     **TFJS_CROP),
    "tracking crop, no smoothing": dict(track=True, smooth=False),
    "tracking crop, One Euro default (default)": dict(track=True),
}
SPEEDS = (0.5, 2.0, 5.0, 10.0)  # px/frame on a 360 px frame at 25 fps


def read_frames(path: str) -> tuple[list[np.ndarray], float]:
    source = open_source(path)  # a missing or unreadable video: one line
    fps = source.fps
    frames = []
    try:
        while (bgr := source.read()) is not None:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        source.capture.release()
    if not frames:
        raise MoveNetError(f"{path}: no frame could be read")
    return frames, fps


def on_canvas(frame: np.ndarray, scale: float, canvas: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = np.full((canvas[1], canvas[0], 3), 118, np.uint8)
    out[at[1]:at[1] + small.shape[0], at[0]:at[0] + small.shape[1]] = small
    return out


def zero_phase_smooth(track: np.ndarray, sigma: float) -> np.ndarray:
    """Centred Gaussian smoothing of a [T,K,3] track over time (x, y only; reflected ends)."""
    r = max(1, int(3 * sigma + 0.5))
    w = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    w /= w.sum()
    padded = np.pad(track[..., :2], [(r, r), (0, 0), (0, 0)], mode="reflect")
    out = track.copy()
    out[..., :2] = sum(wj * padded[j:j + len(track)] for j, wj in enumerate(w))
    return out


def delayed(track: np.ndarray, s: float) -> np.ndarray:
    """x, y of a [T,K,>=2] track at time t - s (linear interpolation, ends held)."""
    t = np.arange(len(track), dtype=np.float64)
    flat = track[..., :2].reshape(len(track), -1)
    return np.stack([np.interp(t - s, t, flat[:, i]) for i in range(flat.shape[1])], 1).reshape(track[..., :2].shape)


def lag_frames(track: np.ndarray, truth: np.ndarray, mask: np.ndarray, shifts=np.arange(-2, 5.01, 0.1),
               edge: int = 8) -> float:
    """The delay s (frames) minimising the squared distance between ``track`` and ``truth``
    delayed by s, over ``mask`` [T,K], after removing each keypoint's mean offset."""
    costs = []
    for s in shifts:
        d = np.where(mask[..., None], track[..., :2] - delayed(truth, s), np.nan)[edge:-edge]
        costs.append(np.nansum((d - np.nanmean(d, axis=0)) ** 2))
    return float(shifts[int(np.argmin(costs))])


def mean_error(track: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    return float(np.linalg.norm(track[..., :2] - truth[..., :2], axis=-1)[mask].mean())


def smooth_offline(track: np.ndarray, params: dict | None, fps: float, width: int, height: int) -> np.ndarray:
    """``track`` [T,K,3] through a fresh keypoint filter (None: unchanged)."""
    if params is None:
        return track
    f = keypoint_filter(width, height, **params)
    out = track.copy()
    for i, k in enumerate(track):
        out[i, :, :2] = f(k[:, :2], i / fps)
    return out


def synthetic(speed: float, noise: float, frames: int = 250, size: int = 360, seed: int = 0):
    """Truth and noisy [T,17,3] tracks: three random sinusoids (0.2-1.5 Hz at 25 fps) per
    coordinate, scaled to a mean speed of ``speed`` px/frame, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None, None]
    freqs = rng.uniform(0.2, 1.5, (3, 17, 2))
    truth = sum(rng.uniform(0.5, 1.0, (17, 2)) * np.sin(2 * np.pi * f * t / 25 + rng.uniform(0, 2 * np.pi, (17, 2)))
                for f in freqs)
    truth = size / 2 + truth * speed / np.linalg.norm(np.diff(truth, axis=0), axis=-1).mean()
    scores = np.full((frames, 17, 1), 0.8)
    noisy = truth + rng.normal(0, noise, truth.shape)
    return np.concatenate([truth, scores], -1), np.concatenate([noisy, scores], -1)


def print_rows(rows: dict[str, np.ndarray], truth: np.ndarray) -> None:
    mask = (truth[..., 2] > 0.3)
    print(f"  {'':44s} {'jitter':>7s} {'error px':>9s} {'lag fr':>7s} {'score':>6s}")
    for name, k in rows.items():
        m = mask & (k[..., 2] > 0.3)
        print(f"  {name:44s} {keypoint_jitter(k):7.3f} {mean_error(k, truth, m):9.2f} "
              f"{lag_frames(k, truth, m):7.1f} {k[..., 2].mean():6.3f}")


def measure_clip(name: str, frames: list[np.ndarray], fps: float, predictor, truth: np.ndarray) -> np.ndarray:
    rows = {}
    for label, cfg in CONFIGS.items():
        tracker = PoseTracker(predictor, **cfg)
        rows[label] = np.stack([tracker(f, i / fps) for i, f in enumerate(frames)])
    h, w = frames[0].shape[:2]
    print(f"{name}: {len(frames)} frames, {w}x{h}")
    print_rows(rows, truth)
    return rows["whole frame, no smoothing"]


def measure_synthetic(noise: float) -> None:
    print(f"synthetic: 17 keypoints, 250 frames at 25 fps, 360 px frame, noise {noise:g} px; "
          "jitter as a ratio to the noisy input, RMS error to the truth (px), lag (frames)")
    print(f"  {'':22s}" + "".join(f"{f'{v:g} px/frame':>24s}" for v in SPEEDS))
    print(f"  {'':22s}" + f"{'jitter  rmse   lag':>24s}" * len(SPEEDS))
    tracks = {v: synthetic(v, noise) for v in SPEEDS}
    for label, params in SMOOTHERS.items():
        cells = []
        for truth, noisy in tracks.values():
            out = smooth_offline(noisy, params, 25.0, 360, 360)
            rmse = np.sqrt(((out[20:, :, :2] - truth[20:, :, :2]) ** 2).sum(-1).mean())
            lag = lag_frames(out, truth, np.ones(truth.shape[:2], bool))
            cells.append(f"{keypoint_jitter(out) / keypoint_jitter(noisy):10.2f} {rmse:6.2f} {lag:5.1f}")
        print(f"  {label:22s}" + "".join(f"{c:>24s}" for c in cells))


def sweep(raw: np.ndarray, truth: np.ndarray, fps: float, width: int, height: int, noise: float) -> None:
    """One Euro grid on the whole-frame keypoints; the Pareto front of jitter vs the synthetic
    RMS error at 5 px/frame."""
    mask = (truth[..., 2] > 0.3) & (raw[..., 2] > 0.3)
    truth5, noisy5 = synthetic(5.0, noise)
    rows = []
    for mc, beta, dc in itertools.product([1.5, 2, 3, 4, 6], [0, 10, 20, 30, 40, 60, 100, 300], [1.5, 2.5, 4.77]):
        params = {**TFJS_ONE_EURO, "min_cutoff": mc, "beta": beta, "derivative_cutoff": dc}
        out = smooth_offline(raw, params, fps, width, height)
        syn = smooth_offline(noisy5, params, 25.0, 360, 360)
        rmse5 = float(np.sqrt(((syn[20:, :, :2] - truth5[20:, :, :2]) ** 2).sum(-1).mean()))
        rows.append((keypoint_jitter(out), mean_error(out, truth, mask), lag_frames(out, truth, mask), rmse5,
                     mc, beta, dc))
    print(f"One Euro sweep ({len(rows)} settings), Pareto front of clip jitter vs synthetic RMS error at 5 px/frame:")
    print(f"  {'min_cutoff':>10s} {'beta':>6s} {'d_cutoff':>8s} {'jitter':>7s} {'error px':>9s} {'lag fr':>7s} "
          f"{'rmse@5':>7s}")
    best = np.inf
    for jit, err, lag, rmse5, mc, beta, dc in sorted(rows):
        if rmse5 < best:
            best = rmse5
            print(f"  {mc:10g} {beta:6g} {dc:8g} {jit:7.3f} {err:9.2f} {lag:7.1f} {rmse5:7.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video")
    p.add_argument("--model", default="lightning")
    p.add_argument("--reference", default="thunder", help="model whose smoothed keypoints are the pseudo truth")
    p.add_argument("--sigma", type=float, default=1.5, help="pseudo truth smoothing, frames")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--small", action="store_true", help="also the clip at half size on a 640x480 frame")
    p.add_argument("--noise", type=float, default=0.5, help="synthetic noise, px (per axis)")
    p.add_argument("--sweep", action="store_true", help="print the One Euro parameter sweep")
    args = p.parse_args(argv)

    start = time.perf_counter()
    frames, fps = read_frames(args.video)
    h, w = frames[0].shape[:2]
    reference = create_predictor(args.reference, args.backend, args.threads)
    truth = zero_phase_smooth(np.stack([reference(f) for f in frames]), args.sigma)
    predictor = create_predictor(args.model, args.backend, args.threads)
    print(f"{args.video}: {fps:g} fps; {args.model} ({args.backend}); pseudo truth: {args.reference}, "
          f"whole frames, Gaussian sigma {args.sigma:g} frames")
    raw = measure_clip("as it is", frames, fps, predictor, truth)
    if args.small:
        scale, at = 0.5, (250, 150)
        small_truth = truth.copy()
        small_truth[..., :2] = truth[..., :2] * scale + at
        small = [on_canvas(f, scale, (640, 480), at) for f in frames]
        measure_clip(f"at {scale:g} size on a grey 640x480 frame", small, fps, predictor, small_truth)
    measure_synthetic(args.noise)
    if args.sweep:
        sweep(raw, truth, fps, w, h, args.noise)
    print(f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    script_main(main)
