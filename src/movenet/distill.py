"""Knowledge distillation: a teacher (Google's Thunder, or any checkpoint) runs on the same
augmented batch as the student and supplies soft targets.

- The batch is resized to the teacher's input size when it differs; the teacher's four maps are
  resampled to the student's grid (regression and offsets through the absolute positions they
  encode, so they stay correct in student grid cells).
- Labelled samples: heatmap and centre targets become ``alpha * teacher + (1 - alpha) *
  ground truth``; keypoint types the sample has no label for (LSP's face) learn the teacher's
  maps alone, at full weight.
- The teacher's outputs also go to ``losses.MoveNetLoss`` (its ``distill`` term, weighted by
  ``loss.distill``); with ``loss.distill_only_unlabelled`` that term teaches only the images
  without labels (``has_labels`` False, e.g. ``UnlabeledImages``), which learn from the
  teacher alone.
"""
from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import augment
from .errors import DataWarning, MoveNetError
from .image import list_images, read_image


def resample_outputs(outputs, grid: int) -> tuple[torch.Tensor, ...]:
    """A model's (heatmaps, centres, regression, offsets) on its own grid -> the same maps on a
    ``grid`` x ``grid`` grid of the same input square (bilinear, cell centres aligned)."""
    heat, center, reg, off = outputs
    g = heat.shape[-1]
    if g == grid:
        return heat, center, reg, off
    r = grid / g
    up = dict(size=(grid, grid), mode="bilinear", align_corners=False)
    n, c2 = reg.shape[:2]
    src = torch.arange(g, device=heat.device, dtype=reg.dtype)
    dst = torch.arange(grid, device=heat.device, dtype=reg.dtype)
    cells = torch.stack(torch.broadcast_tensors(src.view(g, 1), src.view(1, g)))  # (y, x) index
    cells_dst = torch.stack(torch.broadcast_tensors(dst.view(grid, 1), dst.view(1, grid)))
    yx = cells.repeat(c2 // 2, 1, 1)[None]  # [1,2K,g,g]: channel 2k = y, 2k+1 = x
    yx_dst = cells_dst.repeat(c2 // 2, 1, 1)[None]
    # regression: keypoint cell index (cell centres at index + 0.5 in grid units)
    kp_cell = F.interpolate(yx + reg, **up)
    reg_s = (kp_cell + 0.5) * r - 0.5 - yx_dst
    # offsets: position in grid units = cell index + offset
    pos = F.interpolate(yx + off, **up)
    off_s = pos * r - yx_dst
    return F.interpolate(heat, **up), F.interpolate(center, **up), reg_s, off_s


def mix_targets(batch: dict, t_heat: torch.Tensor, t_center: torch.Tensor, alpha: float,
                center_alpha: float | None = None) -> dict:
    """Copy of ``batch`` with heatmap/centre targets mixed with the teacher's maps (see the
    module text; ``center_alpha`` is the centre's teacher share, default ``alpha``);
    unlabelled samples are left to the loss' teacher term."""
    center_alpha = alpha if center_alpha is None else center_alpha
    out = dict(batch)
    n = t_heat.shape[0]
    labelled = batch["has_labels"].reshape(n, 1, 1, 1).bool()
    has_type = batch["heatmap_weight"] > 0  # [N,K,1,1]
    t_heat = t_heat.to(batch["heatmaps"].dtype)
    mixed = torch.where(has_type, alpha * t_heat + (1 - alpha) * batch["heatmaps"], t_heat)
    out["heatmaps"] = torch.where(labelled, mixed, batch["heatmaps"])
    out["heatmap_weight"] = torch.where(labelled, torch.ones_like(batch["heatmap_weight"]),
                                        batch["heatmap_weight"])
    t_center = t_center.to(batch["center"].dtype)
    out["center"] = torch.where(labelled, center_alpha * t_center + (1 - center_alpha) * batch["center"],
                                batch["center"])
    return out


class Teacher:
    """``teacher(batch) -> (batch with mixed targets, teacher outputs on the student grid)``."""

    def __init__(self, model: torch.nn.Module, alpha: float, student_input: int,
                 center_alpha: float | None = None):
        """``model`` predicts the student's keypoints in the student's order (``from_spec``
        takes them from a teacher of others by name)."""
        self.model = model.eval()
        self.center_alpha = center_alpha
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.alpha = alpha
        self.student_input = student_input
        self.input_size = model.config.input_size

    @classmethod
    def from_spec(cls, spec: str, alpha: float, device: torch.device, student_config,
                  center_alpha: float | None = None, student_schema=None) -> "Teacher":
        from .checkpoint import load_model
        from .pretrained import keypoint_model

        model, schema = load_model(spec, verbose=False)
        if student_schema is None:
            if schema.num_keypoints != student_config.num_keypoints:
                raise MoveNetError(f"teacher {spec}: {schema.num_keypoints} keypoints, the student "
                                   f"{student_config.num_keypoints}")
        else:  # by name, as init takes weights: Thunder teaches a schema of some of COCO's keypoints
            model = keypoint_model(model, schema, student_schema, f"teacher {spec}", whose="student's")
        return cls(model.to(device), alpha, student_config.input_size, center_alpha)

    @torch.no_grad()
    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The teacher's maps for student-sized ``images``, on the student's grid."""
        if images.shape[-1] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False)
        outs = tuple(o.float() for o in self.model(images.contiguous(memory_format=torch.channels_last)))
        return resample_outputs(outs, self.student_input // 4)

    def __call__(self, batch: dict) -> tuple[dict, tuple[torch.Tensor, ...]]:
        t = self.outputs(batch["image"])
        return mix_targets(batch, t[0], t[1], self.alpha, self.center_alpha), t


class UnlabeledImages(torch.utils.data.Dataset):
    """Images without annotations for teacher-only training: the whole image (a square around
    it), augmented like the labelled crops (scale, shift, rotation, flip, colour), in a sample
    dict shaped like ``template``'s samples with zero targets and ``has_labels`` False."""

    def __init__(self, sources: list[str], template: torch.utils.data.Dataset,
                 aug_cfg: augment.AugmentConfig | None = None, train: bool = True, on_bad_image: str = "error"):
        self.on_bad_image = on_bad_image  # as data.on_bad_image: "skip" takes the next image instead
        self.paths = list_images(list(sources))
        missing = [p for p in self.paths if not os.path.isfile(p)]
        if missing:
            raise MoveNetError(f"{missing[0]}: no such image (distill.unlabeled)")
        if not self.paths:
            raise MoveNetError(f"distill.unlabeled: no images in {list(sources)}")
        self.aug = aug_cfg or augment.AugmentConfig()
        self.train = train
        self.blank = _zeros_like(template[0])
        self.size = int(self.blank["image"].shape[-1])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        for _ in range(10):
            try:
                img = read_image(self.paths[i])
                break
            except MoveNetError as e:
                if self.on_bad_image == "error":
                    raise
                warnings.warn(f"unreadable image skipped: {e} (distill.unlabeled)", DataWarning, stacklevel=2)
                i = (i + 1) % len(self)
        else:
            raise MoveNetError(f"{self.paths[i]}: 10 unreadable images in a row (distill.unlabeled)" if len(self) > 10
                               else f"{self.paths[i]}: all {len(self)} unlabelled images are unreadable "
                               "(distill.unlabeled)")
        h, w = img.shape[:2]
        geom = augment.Geometry(center=(w / 2, h / 2), side=float(max(h, w)))
        rng = None
        if self.train and self.aug.enabled:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
            geom = augment.random_geometry(geom, self.aug, rng)
        m = augment.crop_matrix(geom, self.size)
        crop = augment.warp(img, m, self.size)
        if rng is not None:
            crop = augment.photometric(crop, self.aug, rng)
        sample = copy.deepcopy(self.blank)
        sample["image"] = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1), np.float32))
        meta = sample["meta"]
        x0, y0 = geom.center[0] - geom.side / 2, geom.center[1] - geom.side / 2
        meta["box"] = torch.tensor([x0, y0, geom.side, geom.side], dtype=meta["box"].dtype)
        for key in ("image_id", "ann_id", "source"):
            meta[key] = torch.full_like(meta[key], -1)
        if "index" in meta:
            meta["index"] = torch.full_like(meta["index"], i)
        if "flip" in meta:
            meta["flip"] = torch.full_like(meta["flip"], geom.flip)
        if "affine" in meta:
            meta["affine"] = torch.from_numpy(augment.invert_affine(m).astype(np.float32))
        return sample


def _zeros_like(sample):
    if isinstance(sample, dict):
        return {k: _zeros_like(v) for k, v in sample.items()}
    return torch.zeros_like(sample)
