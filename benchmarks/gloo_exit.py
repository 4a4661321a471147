"""How often a 2-process gloo run aborts at exit, with the interpreter's teardown and without it.

    python benchmarks/gloo_exit.py [--runs 20]

Each run is ``torchrun --standalone --nproc_per_node 2`` of a few DDP steps, a barrier and
``destroy_process_group``; the processes then end either normally (``sys.exit``: Python and C++
teardown) or as ``movenet.cli.entry`` ends a torchrun worker (flush, ``os._exit``). A run fails
when a process dies of a signal ("terminate called without an active exception", SIGABRT) or
the run does not finish in 60 s (torchrun's exit barrier waiting for a dead peer). Where the
first column reads 0 over many runs, the torch in use no longer needs the workaround.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from movenet.errors import script_main


def worker(mode: str) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(5):
        loss = model(torch.randn(2, 3, 32, 32)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    box = [{"rank": dist.get_rank()}]
    dist.broadcast_object_list(box, src=0)
    dist.barrier()
    dist.destroy_process_group()
    if mode == "os_exit":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(0)


def one_run(mode: str) -> tuple[bool, str]:
    """(ok, the reason it failed)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, "--worker", mode]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, start_new_session=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return False, "no end in 60 s"
    if done.returncode == 0:
        return True, ""
    aborted = "terminate called" in done.stderr or "SIGABRT" in done.stderr
    return False, "SIGABRT at exit" if aborted else f"exit status {done.returncode}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="runs of each mode")
    ap.add_argument("--worker", choices=["teardown", "os_exit"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
    from tqdm import tqdm

    failures = {"teardown": [], "os_exit": []}
    start = time.perf_counter()
    for _ in tqdm(range(args.runs), desc="runs", unit="pair"):
        for mode, failed in failures.items():  # alternated: the machine's load falls on both alike
            ok, why = one_run(mode)
            if not ok:
                failed.append(why)
    print(f"{args.runs} runs of each mode, {time.perf_counter() - start:.0f} s")
    for mode, failed in failures.items():
        reasons = ", ".join(sorted(set(failed)))
        print(f"{mode:9s}: {len(failed)}/{args.runs} failed" + (f" ({reasons})" if reasons else ""))


if __name__ == "__main__":
    script_main(main)
