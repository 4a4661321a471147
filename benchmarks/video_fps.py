"""End-to-end speed of `movenet video` (decode, crop, inference, smoothing, drawing, mp4v
encoding, JSON lines) per backend, run side by side in interleaved rounds.

    python3 benchmarks/video_fps.py ../shared/data/media/yoga.mp4 --backends torch onnx --threads 1
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from movenet.cli import _predictor
from movenet.errors import script_main
from movenet.video import run_video


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video")
    p.add_argument("--backends", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    p.add_argument("--model", default="lightning")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--multi", action="store_true")
    p.add_argument("--no-track", dest="track", action="store_false")
    args = p.parse_args(argv)

    predictors = {b: _predictor(args.model, b, args.threads) for b in args.backends}
    fps = {b: [] for b in args.backends}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for backend, predictor in predictors.items():
                summary = run_video(args.video, predictor, out=str(Path(tmp) / "v.mp4"),
                                    json_out=str(Path(tmp) / "v.jsonl"), multi=args.multi, track=args.track,
                                    max_frames=args.max_frames, progress=False)
                fps[backend].append(summary["fps"])
    first = args.backends[0]
    print(f"{args.video}: {summary['frames']} frames, {args.model}, {args.threads} thread(s), "
          f"{'multi' if args.multi else 'single'}-person, track={args.track}, {args.rounds} rounds")
    for backend, values in fps.items():
        print(f"{backend:6s} median {np.median(values):6.1f} fps (rounds: {', '.join(f'{v:.1f}' for v in values)})"
              f"  x{np.median(values) / np.median(fps[first]):.2f} vs {first}")
    return 0


if __name__ == "__main__":
    script_main(main)
