"""A tiny synthetic pose data set in the training sample format (contract of samples.py),
for tests of the training engine that must not depend on real data."""
from __future__ import annotations

import json
import socket

import cv2
import numpy as np
import torch

from movenet import targets
from movenet.config import TrainConfig, config_from_dict
from movenet.schema import COCO17
from movenet.train import Trainer, ValData, build_loss

# A standing person in a unit square (x, y), COCO-17 order.
POSE = np.array([
    [0.50, 0.12], [0.47, 0.10], [0.53, 0.10], [0.44, 0.12], [0.56, 0.12],
    [0.38, 0.28], [0.62, 0.28], [0.32, 0.45], [0.68, 0.45], [0.30, 0.60], [0.70, 0.60],
    [0.42, 0.60], [0.58, 0.60], [0.40, 0.78], [0.60, 0.78], [0.40, 0.95], [0.60, 0.95],
])


def person(i: int, size: int) -> np.ndarray:
    """[17,3] keypoints (input pixels, v=2) of sample ``i``: the pose moved and scaled."""
    rng = np.random.default_rng(i)
    scale = rng.uniform(0.55, 0.8) * size
    offset = rng.uniform(0.05, 0.95 - scale / size, size=2) * size
    xy = POSE * scale + offset + rng.normal(0, 0.02 * size, size=(17, 2))
    return np.concatenate([np.clip(xy, 1, size - 2), np.full((17, 1), 2.0)], axis=1)


def draw(kpts: np.ndarray, size: int) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    for n, (a, b) in enumerate(COCO17.skeleton):
        color = tuple(int(c) for c in (60 + 11 * n, 255 - 9 * n, 40 + 12 * n))
        cv2.line(img, tuple(int(v) for v in kpts[a, :2]), tuple(int(v) for v in kpts[b, :2]), color, 2)
    for j, (x, y, _) in enumerate(kpts):
        cv2.circle(img, (int(x), int(y)), 2, (255, 14 * j, 255 - 14 * j), -1)
    return img


class SyntheticPoses(torch.utils.data.Dataset):
    """``n`` samples of ``size`` pixels; sample ``i`` is the same every time except for image
    noise drawn from torch's global generator when ``noise`` (so the random state matters)."""

    def __init__(self, n: int, size: int = 96, noise: float = 0.0, repeat: int = 1):
        self.n, self.size, self.noise, self.repeat = n, size, noise, repeat
        self.coco = coco_dict(n, size)

    def __len__(self) -> int:
        return self.n * self.repeat

    def __getitem__(self, index: int) -> dict:
        i = index % self.n
        kpts = person(i, self.size)
        enc = targets.encode(kpts, np.zeros((0, 17, 3)), self.size)
        image = torch.from_numpy(draw(kpts, self.size).transpose(2, 0, 1).astype(np.float32))
        if self.noise:
            image = (image + self.noise * torch.rand(image.shape)).clamp(0, 255)
        sample = {k: torch.from_numpy(v) for k, v in enc.items()}
        sample.update({
            "image": image,
            "keypoints": torch.from_numpy(kpts.astype(np.float32)),
            "has_labels": torch.tensor(True),
            "meta": {"image_id": torch.tensor(i + 1), "ann_id": torch.tensor(i + 1),
                     "box": torch.tensor([0.0, 0.0, self.size, self.size]),
                     "source": torch.tensor(0), "index": torch.tensor(i)},
        })
        return sample


def coco_dict(n: int, size: int) -> dict:
    anns = []
    for i in range(n):
        k = person(i, size)
        x0, y0 = k[:, :2].min(axis=0)
        x1, y1 = k[:, :2].max(axis=0)
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "keypoints": [float(v) for v in k.reshape(-1)], "num_keypoints": 17,
                     "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                     "area": float((x1 - x0) * (y1 - y0))})
    return {"images": [{"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size} for i in range(n)],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoints)}]}


def write_coco_folder(root, n: int, size: int) -> None:
    """A COCO data folder on disk (images/ + person_keypoints.json) of ``n`` drawn people."""
    (root / "images").mkdir(parents=True)
    coco = coco_dict(n, size)
    for i, im in enumerate(coco["images"]):
        cv2.imwrite(str(root / "images" / im["file_name"]), draw(person(i, size), size))
    (root / "person_keypoints.json").write_text(json.dumps(coco))


def val_data(n: int = 6, size: int = 96) -> ValData:
    ds = SyntheticPoses(n, size)
    return ValData(ds, ds.coco)


def tiny_config(**overrides) -> TrainConfig:
    """A small, fast model and run settings for tests (nested dict overrides)."""
    raw = {
        "model": {"name": "mobilenetv2_050", "overrides": {"input_size": 96, "head_channels": 32}},
        "data": {"num_workers": 0},
        "optim": {"lr": 3e-3, "warmup_epochs": 0.0, "schedule": "constant", "weight_decay": 0.0},
        "log": {"tensorboard": False, "images": 0},
        "batch_size": 4, "val_batch_size": 8, "epochs": 1, "threads": 2, "seed": 0,
    }
    for key, value in overrides.items():
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return config_from_dict(raw)


class CountingLoss:
    """The real loss, recording each training value and its terms; ``fail_at`` (call number)
    raises (``failure`` "interrupt") or returns nan ("nan") or infinity ("inf")."""

    def __init__(self, cfg, fail_at: int | None = None, failure: str = "interrupt"):
        self.loss = build_loss(cfg)
        self.values: list[float] = []
        self.parts: list[dict[str, float]] = []
        self.fail_at, self.failure = fail_at, failure

    def __call__(self, outputs, batch, *teacher):
        if not torch.is_grad_enabled():  # validation
            return self.loss(outputs, batch)
        if self.fail_at is not None and len(self.values) + 1 == self.fail_at:
            if self.failure == "interrupt":
                raise KeyboardInterrupt
            total, parts = self.loss(outputs, batch)
            return total * float("inf" if self.failure == "inf" else "nan"), parts
        total, parts = self.loss(outputs, batch, *teacher)
        self.values.append(float(total.detach()))
        self.parts.append({k: float(v) for k, v in parts.items()})
        return total, parts


def resume_config(**overrides) -> TrainConfig:
    """Three short epochs with every piece of state a resume must restore: cosine schedule with
    warm-up, clipping, weight decay, EMA."""
    return tiny_config(**{
        "model.overrides.input_size": 64, "batch_size": 2, "epochs": 3, "threads": 1,
        "optim.schedule": "cosine", "optim.warmup_epochs": 1.0, "optim.clip_grad_norm": 1.0,
        "optim.weight_decay": 1e-3, "optim.lr": 3e-3, "ema.enabled": True, "ema.warmup_steps": 4,
        **overrides,
    })


def resume_trainer(cfg: TrainConfig, out, loss, env=None) -> Trainer:
    # image noise drawn from torch's generator: the random state must be restored exactly
    return Trainer(cfg, out, SyntheticPoses(4, 64, noise=30.0, repeat=2), val_data(4, 64), loss,
                   env=env, verbose=False)


def free_port() -> int:
    """A free TCP port on localhost for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def untimed(history: list[dict]) -> list[dict]:
    """A run's epoch history without its wall times (which differ between equal runs) and the
    images they timed (which differ with where a run was resumed)."""
    return [{k: v for k, v in h.items() if k not in ("train_seconds", "timed_images")} for h in history]
