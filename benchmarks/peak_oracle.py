"""How much a better choice among a model's heatmap peaks could give: held-out whole-image PCK@0.2
(LSP's 12 limb joints) of the model's own decoding, of an oracle that takes, per joint, the
peak nearest the truth among the heatmap's M highest local maxima, and of a decoding that
chooses the peaks jointly under a tree-shaped pose prior (Gaussian limb vectors fitted on the
config's training poses, left/right mirrored) instead of the centre's regression.

    python benchmarks/peak_oracle.py --config configs/lsp_imagenet.yaml --model runs/lsp_imagenet/last.pt

The oracle bounds every decoder that only picks among the peaks (a pose prior, a left/right
check): what it does not reach, the heatmaps do not hold (docs/training.md, "From ImageNet").
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from movenet.config import load_config
from movenet.datasets import load_keypoint_dataset
from movenet.errors import script_main
from movenet.image import read_image
from movenet.metrics import pck, torso_size
from movenet.predict import create_predictor
from movenet.samples import split_image_ids

ROOT = Path(__file__).resolve().parents[1]
LIMBS = list(range(5, 17))  # COCO-17 shoulders .. ankles: the joints LSP labels
# A tree over them rooted at the left hip: (parent, child).
EDGES = [(11, 12), (11, 5), (12, 6), (5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16)]
MIRROR = {a: a + 1 if a % 2 else a - 1 for a in LIMBS}  # left <-> right


def peaks(heat: np.ndarray, offsets: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` highest 3x3 local maxima of one heatmap: (x, y) in cells with the offsets, values."""
    h, w = heat.shape
    pooled = torch.nn.functional.max_pool2d(torch.from_numpy(heat)[None, None], 3, 1, 1)[0, 0].numpy()
    cells = np.argwhere((heat >= pooled) & (heat > 0))
    cells = cells[np.argsort(-heat[cells[:, 0], cells[:, 1]])[:m]]
    off = offsets.reshape(2, h, w)[:, cells[:, 0], cells[:, 1]]
    return np.stack([cells[:, 1] + off[1], cells[:, 0] + off[0]], 1), heat[cells[:, 0], cells[:, 1]]


def fit_limb_vectors(poses: list[tuple[np.ndarray, float]]) -> dict:
    """Per edge: mean and inverse covariance of (child - parent) / crop side, and log det."""
    vectors: dict = {e: [] for e in EDGES}
    for k, side in poses:
        mirrored = k.copy()
        for a in LIMBS:
            mirrored[a] = k[MIRROR[a]] * np.array([-1.0, 1.0, 1.0])
        for pose in (k, mirrored):
            for a, b in EDGES:
                if pose[a, 2] > 0 and pose[b, 2] > 0:
                    vectors[(a, b)].append((pose[b, :2] - pose[a, :2]) / side)
    model = {}
    for e, v in vectors.items():
        cov = np.cov(np.array(v).T) + 1e-4 * np.eye(2)
        model[e] = (np.mean(v, 0), np.linalg.inv(cov), float(np.log(np.linalg.det(cov))))
    return model


def tree_decode(cands: dict, prior: dict, side: float, unary_weight: float) -> dict[int, int]:
    """Max-sum over the tree: the chosen peak index per joint."""
    children: dict[int, list[int]] = {}
    for a, b in EDGES:
        children.setdefault(a, []).append(b)
    back: dict = {}

    def up(node: int) -> np.ndarray:
        score = unary_weight * np.log(cands[node][1] + 1e-6)
        for child in children.get(node, []):
            below = up(child)
            mu, inv, logdet = prior[(node, child)]
            d = (cands[child][0][None] - cands[node][0][:, None]) / side - mu
            pair = -0.5 * np.einsum("abi,ij,abj->ab", d, inv, d) - 0.5 * logdet + below[None]
            back[(node, child)] = pair.argmax(1)
            score = score + pair.max(1)
        return score

    choice = {EDGES[0][0]: int(up(EDGES[0][0]).argmax())}
    for a, b in EDGES:  # parents come before their children in EDGES
        choice[b] = int(back[(a, b)][choice[a]])
    return choice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "lsp_imagenet.yaml"))
    ap.add_argument("--model", action="append", dest="models", required=True)
    ap.add_argument("--peaks", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    ap.add_argument("--unary-weight", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    source = cfg.data.sources[0]
    dataset = load_keypoint_dataset(source["path"], source.get("image_root"))
    train_ids, val_ids = map(set, split_image_ids(dataset, cfg.data.val_fraction, cfg.data.split_seed))
    prior = fit_limb_vectors([(p.keypoints, 1.25 * max(p.bbox[2], p.bbox[3]))
                              for im in dataset.images if im.id in train_ids for p in im.people])
    held_out = [im for im in dataset.images if im.id in val_ids and len(im.people) == 1]
    gt = np.stack([im.people[0].keypoints for im in held_out])
    gt[:, :5, 2] = 0  # LSP has no face points
    thr = 0.2 * torso_size(gt, dataset.schema)
    print(f"{dataset.name}: {len(held_out)} held-out images, whole protocol, PCK@0.2 of the torso")
    for spec in args.models:
        predictor = create_predictor(spec, threads=1)
        outputs = []
        for im in held_out:
            batch, box = predictor.preprocess(read_image(im.path))
            outputs.append((predictor.run(batch), box))
        own = np.stack([predictor.postprocess(o, box) for o, box in outputs])
        print(f"\n{spec}\n  own decoding            {pck(own, gt, thr)[1]:.4f}")
        m_max = max(args.peaks)
        cands = []
        for o, box in outputs:
            heat, off = o[0][0], o[3][0]
            scale = box[2] / heat.shape[-1]
            cands.append({})
            for j in LIMBS:  # (cells, values, image pixels)
                xy, values = peaks(heat[j], off[2 * j:2 * j + 2], m_max)
                cands[-1][j] = (xy, values, xy * scale + np.array(box[:2]))
        for m in args.peaks:
            hit = [np.min(np.hypot(*(c[j][2][:m] - gt[n, j, :2]).T), initial=np.inf) <= thr[n]
                   for n, c in enumerate(cands) for j in LIMBS if gt[n, j, 2] > 0]
            print(f"  oracle, best of {m:2d} peaks {np.mean(hit):.4f}")
        for w in args.unary_weight:
            pred = own.copy()
            for n, c in enumerate(cands):
                # the prior's scale: the crop side around the model's own limb keypoints, in cells
                limbs = own[n, LIMBS, :2] / (outputs[n][1][2] / outputs[n][0][0].shape[-1])
                side = max(4.0, 1.25 * float(np.ptp(limbs, 0).max()))
                for j, i in tree_decode(c, prior, side, w).items():
                    pred[n, j] = (*c[j][2][i], c[j][1][i])
            print(f"  tree prior, unary x{w:g}    {pck(pred, gt, thr)[1]:.4f}")


if __name__ == "__main__":
    script_main(main)
