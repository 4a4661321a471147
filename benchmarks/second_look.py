"""One pass against the second look of ``movenet predict`` (``tracking.predict_person``) on
photos where the person fills less of the frame.

Each held-out LSP photo of a training config is pasted, unscaled, in the middle of a black
square ``--canvas`` times its longer side (1 = the photo itself, padded at the bottom/right as
``movenet eval``'s whole protocol does); the models then see the whole canvas. PCK@0.2 of the
torso over the 12 limb joints, and the time per photo with the ratio of the two:

    python benchmarks/second_look.py [--config configs/lsp_finetune.yaml] \\
        [--model lightning --model thunder --model runs/lsp_finetune/final.pt] [--canvas 1 2 3]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from movenet.errors import script_main
from movenet.evaluate import config_split, make_samples, model_labels, open_predictor
from movenet.image import read_image
from movenet.metrics import pck, torso_size
from movenet.tracking import predict_person

ROOT = Path(__file__).resolve().parents[1]


def on_canvas(img: np.ndarray, factor: float) -> tuple[np.ndarray, tuple[int, int]]:
    """``img`` in the middle of a black square ``factor`` times its longer side -> (canvas,
    (x0, y0) of the photo in it)."""
    if factor == 1:
        return img, (0, 0)
    h, w = img.shape[:2]
    side = round(max(h, w) * factor)
    y0, x0 = (side - h) // 2, (side - w) // 2
    canvas = np.zeros((side, side, 3), img.dtype)
    canvas[y0:y0 + h, x0:x0 + w] = img
    return canvas, (x0, y0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "lsp_finetune.yaml"))
    ap.add_argument("--model", action="append", dest="models")
    ap.add_argument("--canvas", nargs="+", type=float, default=[1.0, 2.0, 3.0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = args.models or ["lightning", "thunder"]
    dataset = config_split(args.config)
    samples, _ = make_samples(dataset, "whole")
    truth = np.stack([s.person.keypoints for s in samples])
    threshold = 0.2 * torso_size(truth, dataset.schema)
    images = [read_image(dataset.images[s.image_index].path) for s in samples]
    predictors = {label: open_predictor(spec, args.threads) for label, spec in zip(model_labels(specs), specs)}
    print(f"{dataset.name}: {len(samples)} people, whole photos on canvases of {args.canvas} x their longer side")
    print(f"{'model':40s} {'canvas':>6s} {'one pass':>9s} {'second look':>12s} {'ms one':>7s} {'ms two':>7s} {'ratio':>6s}")
    for label, predictor in predictors.items():
        for factor in args.canvas:
            pcks, ms = [], []
            for refine in (False, True):
                preds, seconds = [], 0.0
                for img in tqdm(images, desc=f"{label[-20:]} x{factor:g}", leave=False):
                    canvas, (x0, y0) = on_canvas(img, factor)
                    start = time.perf_counter()
                    kpts = predict_person(predictor, canvas, refine=refine)
                    seconds += time.perf_counter() - start
                    preds.append(kpts - np.array([x0, y0, 0], np.float32))
                pcks.append(pck(np.stack(preds), truth, threshold)[1])
                ms.append(1000 * seconds / len(images))
            print(f"{label[-40:]:40s} {factor:6g} {pcks[0]:9.4f} {pcks[1]:12.4f} {ms[0]:7.1f} {ms[1]:7.1f} "
                  f"{ms[1] / ms[0]:6.2f}", flush=True)


if __name__ == "__main__":
    script_main(main)
