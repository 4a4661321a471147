"""Where the flip test's second view stands on whole photos: PCK@0.2 of each view alone on the
validation images of a training config (whole image padded to a square, LSP-style data):

- ``plain``: the image padded at the right/bottom (every command's preprocessing);
- ``plain, padded left``: the same pixels with the padding at the left instead;
- ``mirrored square``: the padded square mirrored, the outputs brought back with
  ``runtime.mirror_outputs`` (the flip test's second view: mirrored content, padding at the left);
- ``mirrored, padded right``: the image mirrored before padding, keypoints mirrored back;
- ``flip test``: ``plain`` and ``mirrored square`` averaged before decoding (``--flip``).

    python benchmarks/flip_views.py [--config configs/lsp_finetune.yaml]
        [--model lightning --model thunder --model runs/lsp_finetune/final.pt ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from movenet.config import load_config
from movenet.datasets import load_keypoint_dataset
from movenet.errors import script_main
from movenet.evaluate import make_samples, open_predictor
from movenet.image import read_image
from movenet.metrics import pck, torso_size
from movenet.runtime import FlipTestPredictor, mirror_outputs
from movenet.samples import split_image_ids

ROOT = Path(__file__).resolve().parents[1]
VIEWS = ("plain", "plain, padded left", "mirrored square", "mirrored, padded right", "flip test")


def padded(img: np.ndarray, left: bool) -> tuple[np.ndarray, int]:
    h, w = img.shape[:2]
    side = max(h, w)
    pad_left = side - w if left else 0
    return cv2.copyMakeBorder(img, 0, side - h, pad_left, side - w - pad_left, cv2.BORDER_CONSTANT), pad_left


def views(predictor, flip_test: FlipTestPredictor, img: np.ndarray) -> list[np.ndarray]:
    """[K,3] keypoints in image pixels for each of VIEWS."""
    w = img.shape[1]
    flip_index = predictor.schema.flip_index()
    plain = predictor(img)
    square, shift = padded(img, left=True)
    left = predictor(square) - np.array([shift, 0.0, 0.0])
    batch, box = predictor.preprocess(img)
    mirrored = predictor.postprocess(mirror_outputs(predictor.run(np.ascontiguousarray(batch[..., ::-1])),
                                                    flip_index), box)
    before = predictor(np.ascontiguousarray(img[:, ::-1]))[flip_index]
    before[:, 0] = w - before[:, 0]
    return [plain, left, mirrored, before, flip_test(img)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "lsp_finetune.yaml"))
    ap.add_argument("--model", action="append", dest="models")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    source = cfg.data.sources[0]
    dataset = load_keypoint_dataset(source["path"], source.get("image_root"))
    _, val_ids = split_image_ids(dataset, cfg.data.val_fraction, cfg.data.split_seed)
    val_ids = set(val_ids)
    samples = [s for s in make_samples(dataset, "whole")[0] if s.person.image_id in val_ids]
    gt = np.stack([s.person.keypoints for s in samples])
    thr = 0.2 * torso_size(gt, dataset.schema)
    print(f"{dataset.name}: {len(samples)} validation images, whole protocol, PCK@0.2 of the torso")
    print(f"{'model':40s} " + " ".join(f"{v:>22s}" for v in VIEWS))
    for spec in args.models or ["lightning", "thunder"]:
        predictor = open_predictor(spec, args.threads)
        flip_test = FlipTestPredictor(predictor)
        preds = np.stack([views(predictor, flip_test, read_image(dataset.images[s.image_index].path))
                          for s in tqdm(samples, desc=Path(spec).name, leave=False)], 1)
        scores = [pck(p[..., :2], gt, thr)[1] for p in preds]
        print(f"{spec[-40:]:40s} " + " ".join(f"{s:22.4f}" for s in scores))


if __name__ == "__main__":
    script_main(main)
