"""Training-sample throughput and index-building speed.

1. Loading: augmented training samples at the given input size through a DataLoader with 0 and
   N workers, against a reference measured in the same run: just reading and resizing the same
   images (the floor any pipeline pays), so the ratio shows what crops, augmentation and
   targets add.
2. Epochs: short epochs of seeded training samples (``train.SeededSamples``) with loader workers
   that persist from epoch to epoch, as the training engine's, against workers restarted each
   epoch (the engine before): the restart cost is paid once per epoch.
3. Index: ``PoseSampleDataset`` over a synthetic COCO-sized annotation set (64k images,
   ~150k people; all entries point at one real image, the index only checks files exist).

    python benchmarks/sample_loading.py [--data DIR ...] [--size 192] [--batches 20]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from movenet import samples
from movenet.augment import AugmentConfig
from movenet.datasets import ImageEntry, KeypointDataset, PersonAnnotation, load_keypoint_dataset
from movenet.errors import script_main
from movenet.image import read_image
from movenet.train import EpochSampler, SeededSamples

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def loader_rate(ds, workers: int, batch: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True)
    it = iter(loader)
    next(it)  # worker start-up and the first batch are not counted
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)["image"])
    return n / (time.perf_counter() - start)


def epoch_seconds(ds, workers: int, batch: int, epochs: int, batches: int, persistent: bool) -> float:
    """Mean wall time of an epoch of ``batches`` batches (the first epoch not counted)."""
    sampler = EpochSampler(batch * batches, seed=0, with_seeds=True)
    loader = torch.utils.data.DataLoader(SeededSamples(torch.utils.data.Subset(ds, range(batch * batches))),
                                         batch_size=batch, sampler=sampler, num_workers=workers,
                                         drop_last=True, persistent_workers=persistent)
    times = []
    for epoch in range(epochs + 1):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        for _ in loader:
            pass
        times.append(time.perf_counter() - start)
    return float(np.mean(times[1:]))


def read_rate(paths: list[str], size: int, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        cv2.resize(read_image(paths[i % len(paths)]), (size, size))
    return count / (time.perf_counter() - start)


def synthetic_coco(image_path: Path, images: int, seed: int = 0) -> KeypointDataset:
    rng = np.random.default_rng(seed)
    entries, ann = [], 0
    for i in range(images):
        entry = ImageEntry(i, image_path, 640, 480)
        for _ in range(int(rng.integers(1, 5))):
            k = np.zeros((17, 3))
            k[:, :2] = rng.uniform(0, 400, (17, 2))
            k[:, 2] = rng.integers(0, 3, 17)
            entry.people.append(PersonAnnotation(ann, i, k, (0.0, 0.0, 400.0, 400.0), 1.6e5, False))
            ann += 1
        entries.append(entry)
    return KeypointDataset("synthetic", entries, {})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="*", default=[str(SHARED / "lsp"), str(SHARED / "coco-mini")])
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--epoch-batches", type=int, default=4)
    ap.add_argument("--index-images", type=int, default=64115)
    args = ap.parse_args()
    torch.set_num_threads(1)

    sources = [load_keypoint_dataset(d) for d in args.data]
    cfg = samples.DataConfig(input_size=args.size)
    ds = samples.PoseSampleDataset(sources, cfg, AugmentConfig(), train=True)
    paths = [ds.path(i) for i in range(len(ds))]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, input {args.size}, "
          f"batch {args.batch}, {args.batches} batches per setting")
    ref = read_rate(paths, args.size, args.batch * args.batches // 2)
    print(f"reference: read + resize only        {ref:7.1f} images/s")
    for workers in (0, args.workers):
        rate = loader_rate(ds, workers, args.batch, args.batches)
        print(f"training samples, {workers} workers        {rate:7.1f} samples/s  ({rate / ref:.2f}x reference)")

    if args.workers:
        per = {p: epoch_seconds(ds, args.workers, args.batch, args.epochs, args.epoch_batches, p)
               for p in (False, True)}
        print(f"epochs of {args.epoch_batches} batches, {args.workers} workers: restarted each epoch "
              f"{per[False]:.2f} s, persistent {per[True]:.2f} s per epoch ({per[False] / per[True]:.2f}x)")

    big = synthetic_coco(Path(paths[0]), args.index_images)
    start = time.perf_counter()
    index_ds = samples.PoseSampleDataset(big, cfg, train=True, verbose=False)
    took = time.perf_counter() - start
    arrays = sum(v.nbytes for v in vars(index_ds.index).values() if isinstance(v, np.ndarray))
    print(f"index: {len(index_ds)} targets from {args.index_images} images in {took:.2f} s, "
          f"{arrays / 2**20:.1f} MiB of arrays")
    return 0


if __name__ == "__main__":
    script_main(main)
