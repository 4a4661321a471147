"""Training throughput (images/s of forward + loss + backward + AdamW step) on this machine,
with the memory layouts and thread counts side by side in one run.

    python benchmarks/train_speed.py [--model lightning] [--batch 16] [--steps 5]

Random inputs and the real loss on synthetic targets of the right shapes: data loading is not
included (the loader runs in worker processes beside the step). Prints the load average too:
on a shared machine the numbers move with what else runs.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from movenet.losses import LossConfig, MoveNetLoss
from movenet.model import create_model


def batch_for(model, n: int) -> dict:
    k, g = model.config.num_keypoints, model.config.output_size
    return {"heatmaps": torch.rand(n, k, g, g), "heatmap_weight": torch.ones(n, k, 1, 1),
            "center": torch.rand(n, 1, g, g), "center_weight": torch.ones(n, 1, 1, 1),
            "regression": torch.randn(n, 2 * k, g, g), "regression_mask": torch.ones(n, 2 * k, g, g),
            "offsets": torch.rand(n, 2 * k, g, g), "offset_mask": torch.ones(n, 2 * k, g, g),
            "has_labels": torch.ones(n, dtype=torch.bool)}


def images_per_second(name: str, batch: int, steps: int, threads: int, channels_last: bool) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x = (torch.rand(batch, 3, model.config.input_size, model.config.input_size) * 255).contiguous(memory_format=fmt)
    targets = batch_for(model, batch)
    loss_fn = MoveNetLoss(LossConfig())
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    times = []
    for i in range(steps + 1):  # the first step builds kernels: not timed
        t = time.perf_counter()
        loss, _ = loss_fn(tuple(o.float() for o in model(x)), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return batch / (sum(times) / len(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lightning")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    print(f"{args.model}, batch {args.batch}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    base = None
    for threads in (1, 2):
        for channels_last in (False, True):
            ips = images_per_second(args.model, args.batch, args.steps, threads, channels_last)
            base = base or ips
            layout = "channels_last" if channels_last else "contiguous"
            print(f"threads {threads}  {layout:13s} {ips:6.1f} img/s  ({ips / base:.2f}x)", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
