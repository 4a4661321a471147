"""PCK@0.2 (torso) on LSP for our port of Lightning/Thunder beside Google's reference graphs,
measured in the same run on the same preprocessed images.

    python benchmarks/pck_lsp.py [--lsp ../shared/data/lsp] [--limit N] [--tflite]

LSP protocol of ../shared/README.md: the whole image padded to a square at the bottom/right,
resized bilinearly, one forward pass; PCK@0.2 of the torso (left shoulder - right hip) over the
12 limb joints (COCO 5..16). Also prints the largest keypoint difference to the reference.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from movenet.datasets import read_lsp_joints
from movenet.errors import script_main
from movenet.image import read_image
from movenet.metrics import pck, torso_size
from movenet.predict import create_predictor
from movenet.runtime import ReferencePredictor
from movenet.schema import COCO17

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lsp", default=str(ROOT.parent / "shared" / "data" / "lsp"))
    ap.add_argument("--reference", default=str(ROOT.parent / "shared" / "reference"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--tflite", action="store_true", help="also Google's int8 .tflite (needs ai-edge-litert)")
    args = ap.parse_args()

    ref = Path(args.reference)
    models = {
        "lightning (ours, torch)": create_predictor("lightning"),
        "lightning (Google, onnx)": ReferencePredictor(str(ref / "movenet_lightning.onnx")),
        "thunder (ours, torch)": create_predictor("thunder"),
        "thunder (Google, onnx)": ReferencePredictor(str(ref / "movenet_thunder.onnx")),
    }
    if args.tflite:
        models["lightning int8 (Google, tflite)"] = ReferencePredictor(str(ref / "movenet_lightning_int8.tflite"))
    paths, gt = read_lsp_joints(args.lsp)
    if args.limit:
        paths, gt = paths[: args.limit], gt[: args.limit]
    preds = {name: np.zeros((len(paths), 17, 3), np.float32) for name in models}
    for i, path in enumerate(tqdm(paths, desc="LSP", unit="img")):
        img = read_image(path)
        for name, predictor in models.items():
            preds[name][i] = predictor(img)

    limbs = gt.copy()
    limbs[:, :5, 2] = 0  # LSP has no face points: the 12 limb joints count
    thresholds = 0.2 * torso_size(limbs, COCO17)
    print(f"\nPCK@0.2 torso on {len(paths)} LSP images")
    print(f"{'model':34s} {'PCK@0.2':>8s} {'max |Δ| px vs Google':>22s}")
    for name, p in preds.items():
        _, overall = pck(p[..., :2], limbs, thresholds)
        twin = name.replace("ours, torch", "Google, onnx")
        delta = f"{np.abs(p[..., :2] - preds[twin][..., :2]).max():.4f}" if twin != name and twin in preds else ""
        print(f"{name:34s} {overall:8.4f} {delta:>22s}")


if __name__ == "__main__":
    script_main(main)
