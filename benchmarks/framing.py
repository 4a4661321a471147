"""Where a whole photo sits in the padded square: PCK@0.2 (torso) and COCO AP of one pass and
of the second look (``movenet predict``'s default) with the image padded at the bottom/right
(every command's one-pass preprocessing, the reference protocol of the LSP scores), centred
(TF.js MoveNet's first frame, ``tracking.full_frame_box``) or padded at the top/left.

    python benchmarks/framing.py [--config configs/lsp_finetune.yaml] [--split val|all]
        [--model lightning --model thunder --model runs/lsp_finetune/final.pt ...]

Against the first framing it also prints the paired count of joints that only one of the two
gets right (a sign test: differences of a few joints are noise).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from movenet.config import load_config
from movenet.datasets import load_keypoint_dataset
from movenet.errors import script_main
from movenet.evaluate import make_samples, open_predictor
from movenet.image import read_image
from movenet.metrics import coco_keypoint_ap, torso_size
from movenet.runtime import pose_score
from movenet.samples import split_image_ids
from movenet.tracking import full_frame_box, look_twice

ROOT = Path(__file__).resolve().parents[1]


def square(width: int, height: int, where: str) -> tuple[float, float, float, float] | None:
    side = float(max(width, height))
    if where == "bottom/right":
        return None  # the predictor's own letterbox
    if where == "centred":
        return full_frame_box(width, height)
    return (width - side, height - side, side, side)  # top/left


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided binomial p of ``wins`` against ``losses`` (ties dropped)."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "lsp_finetune.yaml"))
    ap.add_argument("--split", choices=["val", "all"], default="val")
    ap.add_argument("--model", action="append", dest="models")
    ap.add_argument("--framing", action="append", dest="framings",
                    choices=["bottom/right", "centred", "top/left"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    framings = args.framings or ["bottom/right", "centred", "top/left"]
    cfg = load_config(args.config)
    source = cfg.data.sources[0]
    dataset = load_keypoint_dataset(source["path"], source.get("image_root"))
    samples = make_samples(dataset, "whole")[0]
    if args.split == "val":
        _, val_ids = split_image_ids(dataset, cfg.data.val_fraction, cfg.data.split_seed)
        val_ids = set(val_ids)
        samples = [s for s in samples if s.person.image_id in val_ids]
    coco = dataset.subset([s.person.image_id for s in samples]).coco
    gt = np.stack([s.person.keypoints for s in samples])
    thr = 0.2 * torso_size(gt, dataset.schema)
    labelled = (gt[..., 2] > 0) & np.isfinite(thr)[:, None]
    print(f"{dataset.name}: {len(samples)} images ({args.split}), whole photos, PCK@0.2 of the torso; "
          f"wins / losses = joints only this framing / only {framings[0]} gets right")
    print(f"{'model':36s} {'framing':13s} {'pass':12s} {'PCK':>7s} {'AP':>6s} {'wins/losses':>12s} {'p':>6s}")
    for spec in args.models or ["lightning", "thunder"]:
        predictor = open_predictor(spec, args.threads)
        preds = np.zeros((len(framings), 2, len(samples), gt.shape[1], 3))
        for n, s in enumerate(tqdm(samples, desc=Path(spec).name, leave=False)):
            img = read_image(dataset.images[s.image_index].path)
            for f, where in enumerate(framings):
                box = square(img.shape[1], img.shape[0], where)
                preds[f, 0, n] = predictor(img, box)
                preds[f, 1, n] = look_twice(predictor, img, box, refine=True)[0]
        for look, name in enumerate(["one pass", "second look"]):
            hits = [(np.linalg.norm(preds[f, look, ..., :2] - gt[..., :2], axis=-1) <= thr[:, None]) & labelled
                    for f in range(len(framings))]
            for f, where in enumerate(framings):
                p = preds[f, look]
                results = [{"image_id": s.person.image_id, "score": pose_score(k),
                            "keypoints": [round(float(v), 3) for v in k.reshape(-1)]} for s, k in zip(samples, p)]
                ap_ = coco_keypoint_ap(coco, results, np.asarray(dataset.schema.sigmas))["AP"]
                wins, losses = int((hits[f] & ~hits[0]).sum()), int((hits[0] & ~hits[f]).sum())
                print(f"{spec[-36:]:36s} {where:13s} {name:12s} {hits[f].sum() / labelled.sum():7.4f} {ap_:6.3f} "
                      f"{f'{wins}/{losses}':>12s} {sign_test_p(wins, losses):6.3f}")


if __name__ == "__main__":
    script_main(main)
