"""Which head limits a trained model: PCK@0.2 on the validation crops of a training config,
decoded with the model's own heads and with some heads replaced by their training targets,
plus the regression error at the true centre cell against a constant (median-pose) guess.

    python benchmarks/head_diagnosis.py configs/lsp_imagenet.yaml runs/lsp_imagenet/best.pt lightning

"true centre + true regression" puts the rough keypoints where the joints are, so it scores
what the heatmaps give near the answer; "heatmaps alone" (each keypoint at its heatmap's
maximum, no centre or regression) says whether the heatmaps themselves find the joints: a model
whose heatmaps score well alone but not with its own heads has a failing regression head, one
whose heatmaps score low alone needs better heatmaps (docs/training.md, "From ImageNet").

``--probe-steps N`` also trains a fresh regression head for N steps on each model's frozen
backbone and neck (training crops of the config, batches of 16, AdamW) and reports its error: it
tells whether the features carry the pose (a fresh head on them learns it) or the head failed.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from movenet.checkpoint import load_model, split_input_size
from movenet.config import load_config
from movenet.decode import decode_batch_torch
from movenet.errors import script_main
from movenet.losses import masked_l1
from movenet.metrics import keypoint_distances, pck, torso_size
from movenet.model import Head
from movenet.samples import build_datasets
from movenet.schema import COCO17
from movenet.train import set_bn_eval


def reg_at_center(maps: torch.Tensor, center_cell: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] read at each sample's (y, x) cell -> [N,C]."""
    b = torch.arange(maps.shape[0])
    return maps[b, :, center_cell[:, 0].long(), center_cell[:, 1].long()]


def collect(dataset, limit: int, indices: list[int] | None = None) -> dict[str, torch.Tensor]:
    indices = indices if indices is not None else range(min(limit, len(dataset)))
    items = [dataset[i] for i in indices]
    keys = ("image", "center", "center_cell", "regression", "regression_mask", "keypoints")
    return {k: torch.stack([it[k] for it in items]) for k in keys}


def regression_error(reg: torch.Tensor, d: dict[str, torch.Tensor]) -> float:
    """Mean L1 (cells) of regression maps against the targets at the true centre cells."""
    cell = d["center_cell"]
    return float(masked_l1(reg_at_center(reg, cell), reg_at_center(d["regression"], cell),
                           reg_at_center(d["regression_mask"], cell)))


def probe_regression(model, train_set, val: dict[str, torch.Tensor], steps: int, lr: float,
                     seed: int = 0) -> float:
    """Error of a fresh regression head trained ``steps`` steps on the frozen rest of ``model``."""
    old = model.regression
    hidden, out = old.conv.pointwise.out_channels, old.out.out_channels
    model.regression = head = Head(old.conv.depthwise.in_channels, hidden, out)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = collect(train_set, 16, torch.randint(len(train_set), (16,), generator=g).tolist())
        model.train()
        set_bn_eval(model)
        reg = model(b["image"])[2]
        loss = masked_l1(reg, b["regression"], b["regression_mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return regression_error(model(val["image"])[2], val)


def heatmap_maxima(heat: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """Each keypoint at its heatmap's maximum plus the offset there -> [N,K,3] (x, y in 0-1)."""
    n, k, h, w = heat.shape
    flat = heat.reshape(n, k, -1).argmax(-1)
    y, x = flat // w, flat % w
    off = off.reshape(n, k, 2, h * w).gather(3, flat[:, :, None, None].expand(n, k, 2, 1))[..., 0]
    score = heat.reshape(n, k, -1).gather(2, flat[..., None])[..., 0]
    return torch.stack([(x + off[..., 1]) / w, (y + off[..., 0]) / h, score], dim=-1)


def pck_of(pred: torch.Tensor, keypoints: np.ndarray, input_size: int) -> float:
    xy = pred[..., :2].numpy() * input_size
    return pck(xy, keypoints, 0.2 * torso_size(keypoints))[1]


def swapped(pred: torch.Tensor, keypoints: np.ndarray, input_size: int) -> float:
    """Share of the joints PCK counts that miss PCK@0.2 but hit their left/right mirror joint."""
    xy = pred[..., :2].numpy() * input_size
    radius = 0.2 * torso_size(keypoints)[:, None]
    dist = keypoint_distances(xy, keypoints)
    mirror = keypoint_distances(xy, keypoints[:, COCO17.flip_index()])
    counted = np.isfinite(dist) & np.isfinite(radius)
    return float((counted & (dist > radius) & (mirror <= radius)).sum() / max(counted.sum(), 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="training config whose validation split is used")
    parser.add_argument("models", nargs="+", help="checkpoints or lightning/thunder")
    parser.add_argument("--limit", type=int, default=200, help="validation crops (default 200)")
    parser.add_argument("--probe-steps", type=int, default=0,
                        help="also train a fresh regression head on the frozen features (0: off)")
    parser.add_argument("--probe-lr", type=float, default=3e-2)
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = load_config(args.config)
    train, val = build_datasets(cfg.data, cfg.augment, verbose=False)
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
          f"{float(masked_l1(constant.expand_as(target), target, mask)):.2f} cells")
    probe = f" fresh head, {args.probe_steps} steps (cells) |" if args.probe_steps else ""
    print("| model | own heads | true centre + true regression | true centre | mean regression | "
          "heatmaps alone | left/right swaps: own heads / heatmaps alone | regression error (cells) |" + probe)
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if probe else ""))
    for spec in args.models:
        model, _ = load_model(spec)
        if model.config.input_size != size:  # run at the config's size (lightning in a 224 config)
            model, _ = load_model(f"{split_input_size(spec)[0]}@{size}")
        with torch.no_grad():
            heat, center, reg, off = model(d["image"])
        prior, offset = model.center_prior, float(model.distance_offset)
        oracle = pck_of(decode_batch_torch(heat, d["center"], d["regression"], off, prior, offset), kpts, size)
        true_center = pck_of(decode_batch_torch(heat, d["center"], reg, off, prior, offset), kpts, size)
        mean_reg = reg.mean(0, keepdim=True).expand_as(reg)
        mean = pck_of(decode_batch_torch(heat, center, mean_reg, off, prior, offset), kpts, size)
        own_pred = decode_batch_torch(heat, center, reg, off, prior, offset)
        alone_pred = heatmap_maxima(heat, off)
        own, alone = pck_of(own_pred, kpts, size), pck_of(alone_pred, kpts, size)
        swaps = f"{swapped(own_pred, kpts, size):.3f} / {swapped(alone_pred, kpts, size):.3f}"
        err = regression_error(reg, d)
        row = (f"| {spec} | {own:.3f} | {oracle:.3f} | {true_center:.3f} | {mean:.3f} | {alone:.3f} | "
               f"{swaps} | {err:.2f} |")
        if args.probe_steps:
            row += f" {probe_regression(model, train, d, args.probe_steps, args.probe_lr):.2f} |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    script_main(main)
