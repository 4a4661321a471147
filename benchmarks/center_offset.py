"""Where a model puts a person's centre, against the two centre targets of ``data.center_mode``.

    python benchmarks/center_offset.py [--data ../shared/data/coco-mini] [--model lightning]
        [--min-keypoints 8] [--limit 300]

For each person (square crop around its box, the validation crop of training), the model's
centre cell (centre heatmap x the decoder's prior, argmax) minus the cell of the target centre
of each mode: ``box`` (centre of the labelled keypoints' box) and ``mean`` (their mean), in
crop sides (+y = lower). A fine-tuning run whose centre targets sit where the model already puts
centres does not have to move them (and with them the regression head's origin).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from movenet.checkpoint import load_model
from movenet.decode import center_prior
from movenet.errors import script_main
from movenet.evaluate import load_data
from movenet.samples import DataConfig, PoseSampleDataset
from movenet.targets import person_center


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/coco-mini", help="a data set or a training config")
    ap.add_argument("--model", default="lightning")
    ap.add_argument("--min-keypoints", type=int, default=8, help="people with at least this many labels")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model, verbose=False)
    model.eval()
    size = model.config.input_size
    grid = size // 4
    prior = torch.from_numpy(center_prior(grid)).float()
    data_cfg = DataConfig(input_size=size, min_keypoints=args.min_keypoints)
    people = PoseSampleDataset(load_data(args.data), data_cfg, None, train=False, verbose=False)
    offsets = {"box": [], "mean": []}
    for i in range(min(len(people), args.limit)):
        sample = people[i]
        with torch.no_grad():
            _, center, _, _ = model(sample["image"][None])
        cy, cx = np.unravel_index(int((center[0, 0] * prior).argmax()), (grid, grid))
        found = (np.array([cx, cy]) + 0.5) * size / grid
        for mode, values in offsets.items():
            target = person_center(sample["keypoints"].numpy(), mode)
            if target is not None:
                values.append((found - target) / size)
    print(f"{args.data}: {len(offsets['box'])} people with >= {args.min_keypoints} labelled keypoints; "
          f"{args.model}'s centre - target centre, in crop sides (+y = lower)")
    for mode, values in offsets.items():
        v = np.array(values)
        print(f"  center_mode {mode:4s}  mean dx {v[:, 0].mean():+.3f} dy {v[:, 1].mean():+.3f}   "
              f"median dx {np.median(v[:, 0]):+.3f} dy {np.median(v[:, 1]):+.3f}   "
              f"mean |d| {np.linalg.norm(v, axis=1).mean():.3f}")


if __name__ == "__main__":
    script_main(main)
