"""Learning curve: held-out PCK@0.2 of a training recipe run on fewer of its training images.

    python benchmarks/data_curve.py [--config configs/lsp_finetune.yaml] [--images 100 200 400 800]
        [--out runs/data_curve] [--reference lightning] [--seed 0] [--last] [key=value ...]

For each N, ``movenet train CONFIG data.train_images=N`` with the recipe's number of optimiser
steps (epochs, warm-up and validation interval scaled to N's shorter epochs), into OUT/images_N;
then the run's model (``final.pt`` when the recipe writes one, else or with ``--last``
``last.pt``) and the
reference models are scored on the recipe's own held-out images (its ``val_fraction`` and
``split_seed``: the same images for every N) with the whole-image protocol of
``benchmarks/lsp_finetune_pck.py``. Smaller N train on nested subsets of larger N's images.
A run folder that holds a finished run is scored without training again, so an interrupted
curve goes on where it stopped. Writes OUT/data_curve.csv and OUT/data_curve.png
(``data_curve_last.*`` with ``--last``); key=value arguments override the recipe for every run.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

from movenet.checkpoint import read_checkpoint
from movenet.config import load_config
from movenet.errors import script_main
from movenet.evaluate import evaluate
from movenet.fileio import write_text_atomic
from movenet.samples import split_sources

ROOT = Path(__file__).resolve().parents[1]


def run_overrides(cfg, n_images: int, n_train: int, seed: int) -> list[str]:
    """Overrides that train on ``n_images`` of the ``n_train`` training images for the recipe's
    number of optimiser steps, to within half an epoch (batches drop their remainder, as in
    training)."""
    steps_per_epoch = n_train // cfg.batch_size
    steps = cfg.epochs * steps_per_epoch
    new_steps_per_epoch = max(1, min(n_images, n_train) // cfg.batch_size)
    epochs = max(1, round(steps / new_steps_per_epoch))
    scale = steps_per_epoch / new_steps_per_epoch
    validations = max(1, cfg.epochs // cfg.val_every)
    overrides = [f"data.train_images={n_images}", f"epochs={epochs}",
                 f"optim.warmup_epochs={cfg.optim.warmup_epochs * scale:.6g}",
                 f"val_every={max(1, epochs // validations)}", f"seed={seed}"]
    if cfg.optim.milestones:
        overrides.append(f"optim.milestones=[{','.join(f'{m * scale:.6g}' for m in cfg.optim.milestones)}]")
    return overrides


def finished(run_dir: Path, final: bool = True) -> Path | None:
    """The model of a finished run: final.pt (when asked for and written), else last.pt of a run
    that reached its end."""
    if final and (run_dir / "final.pt").exists():
        return run_dir / "final.pt"
    last = run_dir / "last.pt"
    if not last.exists():
        return None
    ckpt = read_checkpoint(last)
    epochs, max_steps = ckpt["config"]["epochs"], ckpt["config"].get("max_steps", 0)
    done = ckpt["epoch"] >= epochs or (max_steps and ckpt["step"] >= max_steps)
    return last if done else None


def score(dataset, models: list[str], threads: int) -> list[tuple[float, float]]:
    """(PCK@0.2 torso, COCO AP) of each model on ``dataset`` (the held-out images), whole-image
    protocol (the metrics of ``movenet eval``)."""
    run = evaluate(dataset, models, "whole", threads=threads, progress=True)
    return [(r.metrics["pck_torso"]["overall"], r.metrics["coco"]["AP"]) for r in run.models]


def plot(rows: list[dict], references: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["images"] for r in rows], [r["pck"] for r in rows], "o-", label="trained")
    for (name, value), style in zip(references.items(), ["--", ":", "-."] * 4):
        ax.axhline(value, linestyle=style, color="gray", label=name)
    ax.set_xscale("log")
    ax.set_xticks([r["images"] for r in rows], [str(r["images"]) for r in rows])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("training images")
    ax.set_ylabel("held-out PCK@0.2 (whole image)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "lsp_finetune.yaml"))
    ap.add_argument("--images", type=int, nargs="+", default=[100, 200, 400, 800])
    ap.add_argument("--out", default=str(ROOT / "runs" / "data_curve"))
    ap.add_argument("--reference", action="append", dest="references",
                    help="models to score beside the runs (default: lightning)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--last", action="store_true", help="score last.pt also where the recipe writes final.pt")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="more config overrides for every run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    if len(cfg.data.sources) != 1 or cfg.data.val_sources or cfg.data.val_fraction <= 0:
        sys.exit(f"{args.config}: the curve needs one source with a val_fraction split")
    # the trainer's own split: the held-out images are those the runs validate on
    (train,), (held_out,) = split_sources(cfg.data)
    n_train = len(train.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sorted(set(args.images)):
        run_dir = out / f"images_{n}"
        model = finished(run_dir, not args.last)
        if model is None:
            overrides = run_overrides(cfg, n, n_train, args.seed)
            # (the user's own overrides are in cfg already: those of a key set here were scaled into it)
            own = {o.partition("=")[0] for o in overrides}
            overrides += [o for o in args.overrides if o.partition("=")[0].strip() not in own]
            resume = ["--resume"] if (run_dir / "last.pt").exists() else []
            command = [sys.executable, "-m", "movenet", "train", args.config, *overrides,
                       "--out", str(run_dir), *resume]
            print(" ".join(command), flush=True)
            subprocess.run(command, check=True)
            model = finished(run_dir, not args.last)
            if model is None:
                sys.exit(f"{run_dir}: the run did not finish")
        rows.append({"images": min(n, n_train), "model": str(model)})
    references = args.references or ["lightning"]
    scores = score(held_out, [r["model"] for r in rows] + references, args.threads)
    for row, (value, ap_value) in zip(rows, scores):
        row.update(pck=round(value, 4), ap=round(ap_value, 4))
    reference_pck = {name: value for name, (value, _) in zip(references, scores[len(rows):])}
    print(f"\n{'training images':>15s} {'PCK val':>8s} {'AP val':>7s}  model")
    for row in rows:
        print(f"{row['images']:15d} {row['pck']:8.4f} {row['ap']:7.4f}  {row['model']}")
    for name, (value, ap_value) in zip(references, scores[len(rows):]):
        print(f"{'':15s} {value:8.4f} {ap_value:7.4f}  {name}")
    lines = ["images,pck,ap,model"] + [f"{r['images']},{r['pck']},{r['ap']},{r['model']}" for r in rows]
    lines += [f",{v:.4f},{a:.4f},{name}" for name, (v, a) in zip(references, scores[len(rows):])]
    stem = "data_curve_last" if args.last else "data_curve"
    write_text_atomic(out / f"{stem}.csv", "\n".join(lines) + "\n")
    plot(rows, reference_pck, out / f"{stem}.png", f"{Path(args.config).name}, {len(held_out.images)} held-out "
         f"images, seed {args.seed}{', last.pt' if args.last else ''}")
    print(f"wrote {out / stem}.csv and {out / stem}.png")


if __name__ == "__main__":
    script_main(main)
