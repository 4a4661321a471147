"""A run's training curves as one PNG, from its history (one dict per epoch, as checkpoints keep
it): losses per epoch (the total, each head's term, validation) and validation PCK@0.2 and AP."""
from __future__ import annotations

import os
from pathlib import Path

from .fileio import atomic_path

LOSS_TERMS = ("heatmap", "center", "regression", "offset", "bone", "distill")


def plot_training_curves(history: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Write ``path`` (PNG) atomically: left the training loss and its terms (unweighted, log
    scale) with the validation loss, right validation PCK@0.2 and AP with the best PCK marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    trained = [h for h in history if "train_loss" in h]
    epochs = [h["epoch"] for h in trained]
    if trained:
        ax_loss.plot(epochs, [h["train_loss"] for h in trained], color="black", lw=2, label="training (total)")
    for term in LOSS_TERMS:
        values = [h.get(f"train_{term}", 0.0) for h in trained]
        if values and min(values) > 0:  # terms a run does not use stay at 0: nothing to draw
            ax_loss.plot(epochs, values, lw=1, label=term)
    validated = [h for h in history if "val_loss" in h]
    if validated:
        ax_loss.plot([h["epoch"] for h in validated], [h["val_loss"] for h in validated], "o--", ms=3,
                     color="dimgray", label="validation (total)")
    if trained or validated:
        ax_loss.set_yscale("log")
        ax_loss.legend(fontsize=8)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="losses")
    ax_loss.grid(alpha=0.3)

    scored = [h for h in history if "val_pck" in h]
    if scored:
        at = [h["epoch"] for h in scored]
        pck = [h["val_pck"] for h in scored]
        ax_val.plot(at, pck, "o-", ms=3, label="PCK@0.2")
        if any("val_ap" in h for h in scored):
            ax_val.plot(at, [h.get("val_ap", float("nan")) for h in scored], "s-", ms=3, label="AP")
        best = max(range(len(pck)), key=lambda i: pck[i])
        ax_val.axvline(at[best], color="gray", ls="--", lw=1)
        ax_val.annotate(f"best PCK {pck[best]:.4f}, epoch {at[best]}", (at[best], pck[best]),
                        textcoords="offset points", xytext=(-4, 6), ha="right", fontsize=8)
        ax_val.legend(fontsize=8, loc="lower right")
    else:
        ax_val.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_val.transAxes)
    ax_val.set(xlabel="epoch", ylabel="score", title="validation", ylim=(0, 1))
    ax_val.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
