"""Systematic offset of each model's keypoints from a data set's labels, per keypoint.

    python benchmarks/keypoint_bias.py [--data DATA]   # a data set, or a training config for
        # the images it holds out (default configs/lsp_finetune.yaml)
        [--model lightning --model thunder --model runs/lsp_finetune/final.pt ...]
        [--protocol whole] [--near 0.1] [--out runs/keypoint_bias.png]

For every labelled keypoint that a model finds (error under ``--near`` x the torso), the signed
error (prediction - label) in image pixels. Their mean over many keypoints is the labels' own
convention as a model sees it: a shift common to all keypoints and models points at the
coordinate convention of a converter (pixel centres at i or at i + 0.5, 1-based indices); a shift
of some keypoints only (a data set that marks hips lower than COCO does) is a labelling style that
fine-tuning has to learn. Misses are left out so they do not drown the offset. Prints a table
(mean dx, dy with its standard error) and writes a bar plot of it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from movenet.errors import script_main
from movenet.evaluate import evaluate, load_data  # noqa: E402
from movenet.metrics import torso_size  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def offsets(pred: np.ndarray, gt: np.ndarray, torso: np.ndarray, near: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Signed errors [N,K,2] of the labelled keypoints found within near x torso, NaN elsewhere,
    and the mask of those keypoints [N,K]."""
    d = pred[..., :2] - gt[..., :2]
    found = (gt[..., 2] > 0) & (np.linalg.norm(d, axis=-1) < near * torso[:, None])
    return np.where(found[..., None], d, np.nan), found


def mean_and_se(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean [2] and standard error [2] of the rows of d [M,2] that are not NaN, and their count."""
    d = d[~np.isnan(d[:, 0])]
    if len(d) < 2:
        return np.full(2, np.nan), np.full(2, np.nan), len(d)
    return d.mean(0), d.std(0, ddof=1) / np.sqrt(len(d)), len(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / "configs" / "lsp_finetune.yaml"),
                    help="a data set, or a training config: the images it holds out")
    ap.add_argument("--model", action="append", dest="models")
    ap.add_argument("--protocol", choices=["whole", "topdown"], default="whole")
    ap.add_argument("--near", type=float, default=0.1, help="found = error under this x torso")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/keypoint_bias.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = args.models or ["lightning", "thunder"]
    dataset = load_data(args.data)
    schema = dataset.schema
    run = evaluate(dataset, models, args.protocol, threads=args.threads, progress=True)
    gt = np.stack([s.person.keypoints for s in run.samples])
    torso = torso_size(gt, schema)
    print(f"{dataset.name}: {len(run.samples)} people ({args.protocol}); "
          f"offset = prediction - label in image pixels, keypoints within {args.near} x torso "
          f"(median torso {np.nanmedian(torso):.1f} px)")
    table = {}
    for result in run.models:
        d, found = offsets(result.predictions, gt, torso, args.near)
        rows = [mean_and_se(d[:, k]) for k in range(schema.num_keypoints)]
        table[result.label] = rows
        m, se, n = mean_and_se(d.reshape(-1, 2))
        print(f"\n{result.label}: all keypoints dx {m[0]:+.2f} ± {se[0]:.2f}  dy {m[1]:+.2f} ± "
              f"{se[1]:.2f}  ({n} found of {int((gt[..., 2] > 0).sum())} labelled)")
        for name, (mk, sek, nk) in zip(schema.keypoints, rows):
            if nk:
                print(f"  {name:16s} dx {mk[0]:+6.2f} ± {sek[0]:.2f}  dy {mk[1]:+6.2f} ± {sek[1]:.2f}"
                      f"  n {nk}")
    plot(table, schema.keypoints, args.out)
    print(f"\nplot: {args.out}")


def plot(table: dict, names: list[str], path: str) -> None:
    labelled = [k for k in range(len(names)) if any(rows[k][2] for rows in table.values())]
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.6 * len(labelled)), 6), sharex=True)
    width = 0.8 / len(table)
    x = np.arange(len(labelled))
    for i, (label, rows) in enumerate(table.items()):
        for axis, ax in enumerate(axes):
            mean = [rows[k][0][axis] for k in labelled]
            se = [rows[k][1][axis] for k in labelled]
            ax.bar(x + (i - (len(table) - 1) / 2) * width, mean, width, yerr=se, label=label[-40:])
    for axis, ax in enumerate(axes):
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel(f"mean d{'xy'[axis]} (px)")
    axes[1].set_xticks(x, [names[k] for k in labelled], rotation=45, ha="right")
    axes[0].legend(fontsize=8)
    axes[0].set_title("prediction - label of found keypoints (± standard error)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    script_main(main)
