"""What fine-tuning costs elsewhere: a fine-tuned model mixed back toward its starting weights
(``movenet average RUN/last.pt START --weights w 1-w``, WiSE-FT; ``final_init_weight`` of a
config is 1 - w), scored on its own held-out images and on another data set.

    python benchmarks/wise_ft.py --run runs/lsp_finetune [--run runs/lsp_finetune_s1 ...]
        [--start lightning] [--weights 1 0.75 0.5 0.25 0]
        [--data configs/lsp_finetune.yaml --protocol whole]
        [--other ../shared/data/coco-mini --other-protocol topdown] [--out runs/wise_ft.png]

``--data`` is the domain the runs were fine-tuned for (a training config stands for the images
it held out); ``--other`` is data they never saw, here COCO images with the face points that LSP
lacks. Prints PCK@0.2 and AP of every mix on both and plots one against the other, a line per run.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from movenet.checkpoint import average_checkpoints  # noqa: E402
from movenet.errors import script_main
from movenet.evaluate import evaluate, load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def scores(dataset, models: list[str], protocol: str, threads: int) -> list[tuple[float, float]]:
    run = evaluate(dataset, models, protocol, threads=threads, progress=True)
    return [(r.metrics["pck_torso"]["overall"], (r.metrics["coco"] or {}).get("AP", float("nan")))
            for r in run.models]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="run folder with last.pt (repeat)")
    ap.add_argument("--start", default="lightning", help="the weights the runs started from")
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25, 0.0],
                    help="weights of the trained model in the mix")
    ap.add_argument("--data", default=str(ROOT / "configs" / "lsp_finetune.yaml"))
    ap.add_argument("--protocol", default="whole", choices=["whole", "topdown"])
    ap.add_argument("--other", default=str(ROOT.parent / "shared" / "data" / "coco-mini"))
    ap.add_argument("--other-protocol", default="topdown", choices=["whole", "topdown"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/wise_ft.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    weights = [w for w in args.weights if w > 0]
    with tempfile.TemporaryDirectory() as tmp:
        models = [args.start]
        for i, run in enumerate(args.run):
            for w in weights:
                if w == 1:
                    models.append(str(Path(run) / "last.pt"))
                    continue
                path = Path(tmp) / f"run{i}_w{w:g}.pt"
                torch.save(average_checkpoints([str(Path(run) / "last.pt"), args.start], [w, 1 - w]), path)
                models.append(str(path))
        own = scores(load_data(args.data), models, args.protocol, args.threads)
        other = scores(load_data(args.other), models, args.other_protocol, args.threads)
    print(f"\n{'run':32s} {'w':>5s}  {'PCK own':>8s} {'AP own':>7s}  {'PCK other':>9s} {'AP other':>8s}")
    print(f"{args.start:32s} {0:5.2f}  {own[0][0]:8.4f} {own[0][1]:7.4f}  {other[0][0]:9.4f} {other[0][1]:8.4f}")
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, run in enumerate(args.run):
        rows = [(w, own[1 + i * len(weights) + j], other[1 + i * len(weights) + j]) for j, w in enumerate(weights)]
        for w, o, t in rows:
            print(f"{str(run)[-32:]:32s} {w:5.2f}  {o[0]:8.4f} {o[1]:7.4f}  {t[0]:9.4f} {t[1]:8.4f}")
        line = sorted([(0.0, own[0], other[0])] + rows)  # from the start (w = 0) to the trained model
        xs, ys = [t[0] for _, _, t in line], [o[0] for _, o, _ in line]
        ax.plot(xs, ys, "o-", label=Path(run).name)
        for w, x, y in zip([w for w, _, _ in line], xs, ys):
            ax.annotate(f"{w:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"PCK@0.2, {Path(args.other).name} ({args.other_protocol})")
    ax.set_ylabel(f"PCK@0.2, {Path(args.data).name} held-out ({args.protocol})")
    ax.set_title(f"trained weights w, {args.start} 1 - w")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    script_main(main)
