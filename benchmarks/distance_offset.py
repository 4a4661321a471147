"""PCK@0.2 and AP of models against the distance offset of their keypoint decoding (heatmap /
(distance to the keypoint regressed from the centre + offset); Google's 1.8), on the held-out
images of a training config, with both protocols of ``movenet eval``. What ``movenet
calibrate`` and ``calibrate_distance_offset`` choose from, on whole images as well as crops:

    python benchmarks/distance_offset.py --config configs/lsp_finetune.yaml \\
        --model lightning --model runs/lsp_finetune/final.pt [--offsets 1.8 5 10 20 50] [--plot runs/distance_offset.png]

A small offset trusts the regression (the right person, the right side); a large one the
heatmap peaks. Prints one row per model and offset and draws PCK against the offset.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from movenet.errors import script_main
from movenet.evaluate import config_split, make_samples, model_labels, open_predictor, run_models, score_model
from movenet.evaluate import EvalRun, ModelResult

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "lsp_finetune.yaml"))
    ap.add_argument("--model", action="append", dest="models")
    ap.add_argument("--offsets", nargs="+", type=float, default=[1.8, 3, 5, 10, 20, 50, 1000])
    ap.add_argument("--protocol", action="append", dest="protocols", choices=["whole", "topdown"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot", default="runs/distance_offset.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = args.models or ["lightning", "thunder"]
    dataset = config_split(args.config)
    protocols = args.protocols or ["whole", "topdown"]
    print(f"{dataset.name}: {len(dataset)} images")
    table: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for protocol in protocols:
        samples, excluded = make_samples(dataset, protocol)
        predictors = {}
        for label, spec in zip(model_labels(specs), specs):
            base = open_predictor(spec, args.threads)
            own = float(base.distance_offset)
            for d in args.offsets:
                p = copy.copy(base)
                p.distance_offset = d
                predictors[(label, d, own)] = p
        preds, sides, seconds, kept, skipped = run_models(dataset, samples, predictors)
        run = EvalRun(dataset, protocol, [s for s, k in zip(samples, kept) if k], excluded, skipped, sides[kept],
                      [], {"protocol": protocol, "px": 5.0, "px_size": 192, "threads": args.threads})
        print(f"\nprotocol {protocol}: {len(run.samples)} people")
        print(f"{'model':40s} {'offset':>7s} {'PCK@0.2':>8s} {'AP':>7s}")
        for m, (label, d, own) in enumerate(predictors):
            result = ModelResult(label, label, 0, preds[m][kept], float(seconds[m]))
            score_model(run, result)
            pck, ap_ = result.metrics["pck_torso"]["overall"], result.metrics["coco"]["AP"]
            mark = " (its own)" if abs(d - own) < 0.01 else ""
            print(f"{label[-40:]:40s} {d:7g} {pck:8.4f} {ap_:7.4f}{mark}")
            table.setdefault((label, protocol), []).append((d, pck))
    plot(table, args.plot, dataset.name)
    print(f"\nwrote {args.plot}")


def plot(table: dict, path: str, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    ax = fig.subplots()
    colours = {label: f"C{i}" for i, label in enumerate(dict.fromkeys(label for label, _ in table))}
    for (label, protocol), rows in table.items():
        d, pck = np.array(rows).T
        ax.plot(d, pck, "o-" if protocol == "whole" else "s--", color=colours[label], label=f"{label} ({protocol})")
    ax.axvline(1.8, color="gray", lw=1, ls=":")
    ax.set(xscale="log", xlabel="distance offset of the keypoint decoding (log; Google's 1.8 dotted)",
           ylabel="PCK@0.2", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    script_main(main)
