"""The same weights at several input sizes: PCK@0.2 and AP on the held-out images of a training
config (whole-image protocol), and the forward pass's time at each size.

A MoveNet is fully convolutional: a model trained at 192 runs at 224 or 256 with a finer grid
(the centre prior and the grid scale follow the size: ``checkpoint.resize_model``, what the
``NAME@SIZE`` model names of the command line do, and ``model.overrides.input_size`` in a
training config). This measures what the resolution alone gives before training at it:

    python benchmarks/input_size.py [--config configs/lsp_finetune.yaml] \\
        [--model lightning --model runs/lsp_finetune/final.pt] [--sizes 192 224 256]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from movenet.checkpoint import load_model, resize_model
from movenet.errors import script_main
from movenet.evaluate import config_split, make_samples, model_labels, run_models
from movenet.metrics import coco_keypoint_ap, pck, torso_size
from movenet.predict import TorchPredictor
from movenet.runtime import pose_score

ROOT = Path(__file__).resolve().parents[1]


def at_size(spec: str, size: int) -> torch.nn.Module:
    return resize_model(load_model(spec, verbose=False)[0], size)


def forward_ms(model: torch.nn.Module, size: int, runs: int = 30) -> float:
    x = torch.rand(1, 3, size, size) * 255
    times = []
    with torch.inference_mode():
        for i in range(runs + 3):
            start = time.perf_counter()
            model(x)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "lsp_finetune.yaml"))
    ap.add_argument("--model", action="append", dest="models")
    ap.add_argument("--sizes", nargs="+", type=int, default=[192, 224, 256])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = args.models or ["lightning"]
    dataset = config_split(args.config)
    samples, _ = make_samples(dataset, "whole")
    truth = np.stack([s.person.keypoints for s in samples])
    threshold = 0.2 * torso_size(truth, dataset.schema)
    sigmas = np.asarray(dataset.schema.sigmas)
    print(f"{dataset.name}: {len(samples)} people, whole-image protocol")
    print(f"{'model':32s} {'input':>5s} {'PCK@0.2':>8s} {'AP':>6s} {'forward ms':>10s} {'ratio':>6s}")
    for label, spec in zip(model_labels(specs), specs):
        models = {size: at_size(spec, size) for size in args.sizes}
        preds, *_ = run_models(dataset, samples, {s: TorchPredictor(m) for s, m in models.items()}, progress=False)
        # interleaved, so that every size sees the same machine load
        ms = {s: [] for s in args.sizes}
        for _ in range(5):
            for s, m in models.items():
                ms[s].append(forward_ms(m, s, runs=10))
        first = float(np.median(ms[args.sizes[0]]))
        for i, size in enumerate(args.sizes):
            results = [{"image_id": s.person.image_id, "score": pose_score(k),
                        "keypoints": [round(float(v), 3) for v in k.reshape(-1)]} for s, k in zip(samples, preds[i])]
            ap_value = coco_keypoint_ap(dataset.coco, results, sigmas)["AP"]
            t = float(np.median(ms[size]))
            print(f"{label[-32:]:32s} {size:5d} {pck(preds[i], truth, threshold)[1]:8.4f} {ap_value:6.3f} "
                  f"{t:10.2f} {t / first:6.2f}", flush=True)


if __name__ == "__main__":
    script_main(main)
