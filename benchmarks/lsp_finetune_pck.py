"""PCK@0.2 (torso) on LSP of Google's models and our trained checkpoints, on the validation
split of a training config and on all images, with both evaluation protocols of ``movenet eval``:

- ``whole``: the whole image padded to a square (the reference protocol of ../shared/README.md);
- ``topdown``: a square crop around the ground-truth box (side 1.25 x its longer side).

    python benchmarks/lsp_finetune_pck.py [--config configs/lsp_finetune.yaml]
        [--model lightning --model thunder --model runs/lsp_finetune/final.pt ...] [--flip]

The split is the training config's (``data.val_fraction``, ``data.split_seed``, by image), so
the "val" column holds images no checkpoint trained on. Also prints COCO keypoint AP (OKS with
COCO's sigmas over the 12 labelled limb joints) for the validation images. ``--flip`` adds a
row per model with the flip test (``movenet eval --flip``), measured in the same run.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from movenet.config import load_config
from movenet.datasets import load_keypoint_dataset
from movenet.errors import script_main
from movenet.evaluate import evaluate
from movenet.metrics import coco_keypoint_ap, pck, torso_size
from movenet.runtime import pose_score
from movenet.samples import split_image_ids

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "lsp_finetune.yaml"))
    ap.add_argument("--model", action="append", dest="models")
    ap.add_argument("--protocol", action="append", dest="protocols", choices=["whole", "topdown"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--flip", action="store_true", help="also score every model with the flip test")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = args.models or ["lightning", "thunder", str(ROOT / "runs" / "lsp_finetune" / "final.pt")]
    cfg = load_config(args.config)
    source = cfg.data.sources[0]
    dataset = load_keypoint_dataset(source["path"], source.get("image_root"))
    _, val_ids = split_image_ids(dataset, cfg.data.val_fraction, cfg.data.split_seed)
    val_ids = set(val_ids)
    print(f"{dataset.name}: {len(dataset)} images, validation split {len(val_ids)} "
          f"(val_fraction {cfg.data.val_fraction}, split_seed {cfg.data.split_seed})")
    for protocol in args.protocols or ["whole", "topdown"]:
        t0 = time.perf_counter()
        runs = [evaluate(dataset, models, protocol, threads=args.threads, progress=True, flip=flip)
                for flip in ([False, True] if args.flip else [False])]
        run = runs[0]
        gt = np.stack([s.person.keypoints for s in run.samples])
        in_val = np.array([s.person.image_id in val_ids for s in run.samples])
        thr = 0.2 * torso_size(gt, dataset.schema)
        print(f"\nprotocol {protocol} ({time.perf_counter() - t0:.0f} s)")
        print(f"{'model':48s} {'PCK val':>8s} {'PCK all':>8s} {'AP val':>7s} {'ms/person':>9s}")
        val_coco = dataset.subset(val_ids).coco
        for result, flip in [(r, flip) for flip, one in enumerate(runs) for r in one.models]:
            p = result.predictions
            _, pck_val = pck(p[in_val], gt[in_val], thr[in_val])
            _, pck_all = pck(p, gt, thr)
            results = [{"image_id": s.person.image_id, "score": pose_score(k),
                        "keypoints": [round(float(v), 3) for v in k.reshape(-1)]}
                       for s, k, v in zip(run.samples, p, in_val) if v]
            ap_val = coco_keypoint_ap(val_coco, results, np.asarray(dataset.schema.sigmas))["AP"]
            label = result.label + (" + flip" if flip else "")
            print(f"{label[-48:]:48s} {pck_val:8.4f} {pck_all:8.4f} {ap_val:7.4f} "
                  f"{1000 * result.seconds / len(run.samples):9.1f}")


if __name__ == "__main__":
    script_main(main)
