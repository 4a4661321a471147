"""Width of a model's heatmap peaks against the training targets of a config: the mean value on
rings at distance 0..5 cells around each labelled keypoint's peak (the model's peak within 3
cells of the true cell), on the validation crops of the config.

    python benchmarks/heatmap_profile.py configs/lsp_finetune.yaml lightning runs/lsp_finetune/last.pt \
        [--set data.sigma_factor=0.028]

Fine-tuning first spends its steps reshaping the peaks when the targets are wider or narrower
than what the starting model draws; choose ``data.sigma_factor`` so that the two profiles agree
(docs/training.md, "Kernel width").
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from movenet.checkpoint import load_model
from movenet.config import load_config
from movenet.errors import script_main
from movenet.samples import build_datasets

RINGS = 6


def ring_profile(maps: np.ndarray, truth: np.ndarray, align: bool) -> np.ndarray:
    """Mean ring values [RINGS] of ``maps`` [N,C,H,W] around the peaks of ``truth`` (the
    target maps; peak value 1 where a keypoint is labelled), each ring normalised by the peak."""
    n, c, h, w = maps.shape
    yy, xx = np.mgrid[0:h, 0:w]
    rows = []
    for i in range(n):
        for k in range(c):
            if truth[i, k].max() < 0.99:
                continue
            y, x = np.unravel_index(truth[i, k].argmax(), (h, w))
            m = maps[i, k]
            if align:
                near = (np.abs(yy - y) <= 3) & (np.abs(xx - x) <= 3)
                y, x = np.unravel_index(np.where(near, m, -1.0).argmax(), (h, w))
            d = np.hypot(yy - y, xx - x)
            rows.append([m[(d >= r - 0.5) & (d < r + 0.5)].mean() for r in range(RINGS)])
    prof = np.asarray(rows).mean(axis=0)
    return prof / prof[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="training config: its validation crops and targets")
    parser.add_argument("models", nargs="*", help="checkpoints or lightning/thunder")
    parser.add_argument("--limit", type=int, default=200, help="validation crops (default 200)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the targets, e.g. data.sigma_factor=0.028")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = load_config(args.config, args.set)
    _, val = build_datasets(cfg.data, cfg.augment, verbose=False)
    if val is None:
        raise SystemExit(f"{args.config}: no validation split")
    items = [val[i] for i in range(min(args.limit, len(val)))]
    images = torch.stack([it["image"] for it in items])
    heat_t = torch.stack([it["heatmaps"] for it in items]).numpy()
    center_t = torch.stack([it["center"] for it in items]).numpy()
    print(f"{len(items)} validation crops of {args.config}; mean value on rings 0..{RINGS - 1} cells "
          f"around the peaks, relative to the peak")
    print("| maps | keypoints | centre |")
    print("|---|---|---|")
    fmt = lambda p: " ".join(f"{v:.2f}" for v in p)  # noqa: E731
    print(f"| targets (sigma_factor {cfg.data.sigma_factor}) | {fmt(ring_profile(heat_t, heat_t, False))} "
          f"| {fmt(ring_profile(center_t, center_t, False))} |")
    for spec in args.models:
        model, _ = load_model(spec)
        with torch.no_grad():
            heat, center, _, _ = model(images)
        print(f"| {spec} | {fmt(ring_profile(heat.numpy(), heat_t, True))} "
              f"| {fmt(ring_profile(center.numpy(), center_t, True))} |", flush=True)
    return 0


if __name__ == "__main__":
    script_main(main)
