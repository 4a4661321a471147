"""Which head limits a trained model: PCK@0.2 on the validation crops of a training config,
decoded with the model's own heads and with some heads replaced by their training targets,
plus the regression error at the true centre cell against a constant (median-pose) guess.

    python benchmarks/head_diagnosis.py configs/lsp_imagenet.yaml runs/lsp_imagenet/best.pt lightning

If "true centre + true regression" scores far above "own heads", the heatmaps are fine and the
regression head is what fails (see docs/training.md, "Where the ImageNet model fails").
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from movenet.checkpoint import load_model
from movenet.config import load_config
from movenet.decode import decode_batch_torch
from movenet.metrics import pck, torso_size
from movenet.samples import build_datasets


def reg_at_center(maps: torch.Tensor, center_cell: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] read at each sample's (y, x) cell -> [N,C]."""
    b = torch.arange(maps.shape[0])
    return maps[b, :, center_cell[:, 0].long(), center_cell[:, 1].long()]


def collect(dataset, limit: int) -> dict[str, torch.Tensor]:
    items = [dataset[i] for i in range(min(limit, len(dataset)))]
    keys = ("image", "center", "center_cell", "regression", "regression_mask", "keypoints")
    return {k: torch.stack([it[k] for it in items]) for k in keys}


def pck_of(pred: torch.Tensor, keypoints: np.ndarray, input_size: int) -> float:
    xy = pred[..., :2].numpy() * input_size
    return pck(xy, keypoints, 0.2 * torso_size(keypoints))[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="training config whose validation split is used")
    parser.add_argument("models", nargs="+", help="checkpoints or lightning/thunder")
    parser.add_argument("--limit", type=int, default=200, help="validation crops (default 200)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = load_config(args.config)
    _, val = build_datasets(cfg.data, cfg.augment, verbose=False)
    if val is None:
        raise SystemExit(f"{args.config}: no validation split")
    d = collect(val, args.limit)
    kpts = d["keypoints"].numpy()
    size = d["image"].shape[-1]
    target = reg_at_center(d["regression"], d["center_cell"])
    mask = reg_at_center(d["regression_mask"], d["center_cell"])
    median = np.nanmedian(np.where(mask.numpy() > 0, target.numpy(), np.nan), axis=0)
    constant = torch.from_numpy(np.nan_to_num(median)).float()
    print(f"{len(kpts)} validation crops of {args.config}; PCK@0.2 (torso) in the crop")
    print(f"regression error at the true centre cell, constant median pose: "
          f"{float(((target - constant).abs() * mask).sum() / mask.sum()):.2f} cells")
    print("| model | own heads | true centre + true regression | true centre | mean regression | "
          "regression error (cells) |")
    print("|---|---:|---:|---:|---:|---:|")
    for spec in args.models:
        model, _ = load_model(spec)
        with torch.no_grad():
            heat, center, reg, off = model(d["image"])
        prior, offset = model.center_prior, float(model.distance_offset)
        own = pck_of(decode_batch_torch(heat, center, reg, off, prior, offset), kpts, size)
        oracle = pck_of(decode_batch_torch(heat, d["center"], d["regression"], off, prior, offset), kpts, size)
        true_center = pck_of(decode_batch_torch(heat, d["center"], reg, off, prior, offset), kpts, size)
        mean_reg = reg.mean(0, keepdim=True).expand_as(reg)
        mean = pck_of(decode_batch_torch(heat, center, mean_reg, off, prior, offset), kpts, size)
        err = float(((reg_at_center(reg, d["center_cell"]) - target).abs() * mask).sum() / mask.sum())
        print(f"| {spec} | {own:.3f} | {oracle:.3f} | {true_center:.3f} | {mean:.3f} | {err:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
