"""Training throughput (images/s of forward + loss + backward + AdamW step) on this machine,
with the memory layouts and thread counts (CPU) or precisions (CUDA) side by side in one run,
and on CPU with the backbone frozen up to stride 4 and 8 (``optim.freeze_backbone_to_stride``).

    python benchmarks/train_speed.py [--model lightning] [--batch 16] [--steps 5] [--device cuda]

Random inputs and the real loss on synthetic targets of the right shapes: data loading is not
included (the loader runs in worker processes beside the step). Prints the load average too:
on a shared machine the numbers move with what else runs. Last, the cost of one EMA update
(``train.ModelEMA``, fused over all tensors) against the same update tensor by tensor.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from movenet.errors import script_main
from movenet.losses import LossConfig, MoveNetLoss
from movenet.model import create_model
from movenet.train import ModelEMA, freeze_backbone


def batch_for(model, n: int) -> dict:
    k, g = model.config.num_keypoints, model.config.output_size
    return {"heatmaps": torch.rand(n, k, g, g), "heatmap_weight": torch.ones(n, k, 1, 1),
            "center": torch.rand(n, 1, g, g), "center_weight": torch.ones(n, 1, 1, 1),
            "regression": torch.randn(n, 2 * k, g, g), "regression_mask": torch.ones(n, 2 * k, g, g),
            "offsets": torch.rand(n, 2 * k, g, g), "offset_mask": torch.ones(n, 2 * k, g, g),
            "has_labels": torch.ones(n, dtype=torch.bool)}


def images_per_second(name: str, batch: int, steps: int, threads: int, channels_last: bool,
                      device: str = "cpu", amp: torch.dtype | None = None, freeze_stride: int = 0) -> float:
    """Mean over ``steps`` timed steps, after three untimed ones (kernels are built and picked)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    model = create_model(name).train().to(dev)
    for layer in freeze_backbone(model, freeze_stride):
        layer.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x = (torch.rand(batch, 3, model.config.input_size, model.config.input_size, device=dev) * 255)
    x = x.contiguous(memory_format=fmt)
    targets = {k: v.to(dev) for k, v in batch_for(model, batch).items()}
    loss_fn = MoveNetLoss(LossConfig())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    warmup = 3 if dev.type == "cuda" else 1
    for i in range(steps + warmup):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            outputs = model(x)
        loss, _ = loss_fn(tuple(o.float() for o in outputs), targets)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def per_tensor_update(ema: ModelEMA, model: torch.nn.Module) -> None:
    """The reference: two kernels per floating tensor."""
    d = ema.next_decay()
    own = ema.module.state_dict()
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            own[k].mul_(d).add_(v, alpha=1 - d)
        else:
            own[k].copy_(v)


def ema_milliseconds(name: str, device: str, calls: int = 100) -> dict[str, float]:
    """Median time of a call, the two updates alternating (a shared machine's load hits both)."""
    dev = torch.device(device)
    model = create_model(name).to(dev).to(memory_format=torch.channels_last)
    ema = ModelEMA(model, 0.998, 200)
    updates = {"per tensor": lambda: per_tensor_update(ema, model), "fused": lambda: ema.update(model)}
    times: dict[str, list[float]] = {label: [] for label in updates}
    for i in range(calls + 3):
        for label, update in updates.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            update()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times[label].append(time.perf_counter() - start)
    return {label: float(np.median(t)) * 1e3 for label, t in times.items()}


def print_ema(name: str, device: str) -> None:
    ms = ema_milliseconds(name, device)
    print(f"EMA update: per tensor {ms['per tensor']:.2f} ms, fused {ms['fused']:.2f} ms "
          f"({ms['per tensor'] / ms['fused']:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lightning")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: float32 / float16 / bfloat16 autocast")
    args = ap.parse_args()
    if args.device.startswith("cuda"):
        cuda_table(args)
        return
    print(f"{args.model}, batch {args.batch}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    base = None
    for threads in (1, 2):
        for channels_last in (False, True):
            ips = images_per_second(args.model, args.batch, args.steps, threads, channels_last)
            base = base or ips
            layout = "channels_last" if channels_last else "contiguous"
            print(f"threads {threads}  {layout:13s} {ips:6.1f} img/s  ({ips / base:.2f}x)", flush=True)
        for stride in (4, 8):
            ips = images_per_second(args.model, args.batch, args.steps, threads, True, freeze_stride=stride)
            print(f"threads {threads}  channels_last, freeze stride {stride} {ips:6.1f} img/s  ({ips / base:.2f}x)",
                  flush=True)
    torch.set_num_threads(1)
    print_ema(args.model, "cpu")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def cuda_table(args) -> None:
    print(f"{args.model}, batch {args.batch}, {torch.cuda.get_device_name(args.device)}, torch {torch.__version__}")
    base = None
    for amp in (None, torch.float16, torch.bfloat16):
        for channels_last in (False, True):
            ips = images_per_second(args.model, args.batch, args.steps, 1, channels_last, args.device, amp)
            base = base or ips
            layout = "channels_last" if channels_last else "contiguous"
            precision = "float32" if amp is None else f"autocast {str(amp).split('.')[1]}"
            print(f"{precision:18s} {layout:13s} {ips:8.1f} img/s  ({ips / base:.2f}x)", flush=True)
    print_ema(args.model, args.device)


if __name__ == "__main__":
    script_main(main)
