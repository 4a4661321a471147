"""MoveNet training loss: weighted MSE on the (activated) heatmaps and centres, masked L1 on
regression and offsets, optional bone-length loss, optional distillation from a teacher.

Normalisation: the heatmap/centre terms are the per-map sums of weighted squared errors,
averaged over the (sample, channel) maps that count (weight > 0); regression and offset terms
are L1 averaged over the mask's cells. Masked entries are multiplied by exactly zero, so an
unlabelled keypoint gives zero loss and zero gradient.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .schema import COCO17, KeypointSchema

HEADS = ("heatmap", "center", "regression", "offset", "bone")


@dataclass
class LossConfig:
    """``heatmap_weight_k``: pixel weight = target * k + 1 (peaks count k + 1 times as much as
    background). ``bone``: weight of the bone-length term (0 = off). ``distill``: weight of
    the teacher term when a teacher's outputs are given; ``distill_only_unlabelled`` applies
    it only to samples without labels."""

    heatmap_weight_k: float = 5.0
    heatmap: float = 1.0
    center: float = 1.0
    regression: float = 1.0
    offset: float = 1.0
    bone: float = 0.0
    distill: float = 1.0
    distill_only_unlabelled: bool = False

    def __post_init__(self) -> None:
        for name in ("heatmap_weight_k", *HEADS, "distill"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LossConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown loss config keys: {sorted(unknown)}")
        return cls(**d)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, map_weight: torch.Tensor, k: float) -> torch.Tensor:
    """sum((pred - target)^2 * (target * k + 1) * map_weight) / (number of maps with weight > 0).
    ``map_weight`` broadcasts to [N,C,1,1]."""
    n, c = pred.shape[:2]
    mw = map_weight.to(pred.dtype).expand(n, c, 1, 1)
    err = (pred - target) ** 2 * (target * k + 1) * mw
    return err.sum() / (mw > 0).sum().clamp(min=1)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(pred.dtype)
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp(min=1)


def positions_at_center(regression: torch.Tensor, center_cell: torch.Tensor) -> torch.Tensor:
    """Keypoint positions (y, x) in cells read from regression at each sample's centre cell:
    [N,2K,H,W], [N,2] (y, x) -> [N,K,2]."""
    n = regression.shape[0]
    b = torch.arange(n, device=regression.device)
    cy, cx = center_cell[:, 0].long(), center_cell[:, 1].long()
    reg = regression[b, :, cy, cx].reshape(n, -1, 2)
    return reg + center_cell[:, None, :].to(reg.dtype)


def bone_loss(pred_pos: torch.Tensor, true_pos: torch.Tensor, valid: torch.Tensor,
              skeleton: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Mean |predicted bone length - true bone length| over the bones whose two keypoints are
    valid. Positions [N,K,2], valid [N,K]."""
    a = torch.tensor([s[0] for s in skeleton], dtype=torch.long, device=pred_pos.device)
    b = torch.tensor([s[1] for s in skeleton], dtype=torch.long, device=pred_pos.device)
    # Tiny epsilon keeps the sqrt differentiable where a predicted bone has zero length.
    pred_len = ((pred_pos[:, a] - pred_pos[:, b]) ** 2).sum(-1).add(1e-9).sqrt()
    true_len = ((true_pos[:, a] - true_pos[:, b]) ** 2).sum(-1).add(1e-9).sqrt()
    both = (valid[:, a] & valid[:, b]).to(pred_pos.dtype)
    return ((pred_len - true_len).abs() * both).sum() / both.sum().clamp(min=1)


def center_cells_from_map(center: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """(y, x) of argmax(centre * prior) per sample, as the decoder picks it -> [N,2] long."""
    n, _, h, w = center.shape
    c = center.reshape(n, h, w)
    if prior is not None:
        c = c * prior.to(c.device, c.dtype)
    flat = c.reshape(n, -1).argmax(dim=1)
    return torch.stack([flat // w, flat % w], dim=1)


class MoveNetLoss(torch.nn.Module):
    """``loss(outputs, batch, teacher=None) -> (total, parts)``: outputs = the model's 4-tuple
    (activated heatmaps and centres); batch = a collated ``PoseSampleDataset`` dict; teacher =
    a teacher model's 4-tuple for the same images. ``parts`` holds detached scalars for
    heatmap, center, regression, offset, bone (and distill when a teacher is given)."""

    def __init__(self, cfg: LossConfig | None = None, schema: KeypointSchema = COCO17):
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.schema = schema

    def forward(self, outputs, batch: dict, teacher=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        heat, center, reg, off = outputs
        cfg = self.cfg
        n = heat.shape[0]
        labelled = batch.get("has_labels")
        labelled = (torch.ones(n, dtype=torch.bool, device=heat.device) if labelled is None
                    else labelled.to(heat.device).reshape(n).bool())
        lab = labelled.to(heat.dtype)
        per_sample = lab.view(n, 1, 1, 1)

        parts = {
            "heatmap": weighted_mse(heat, batch["heatmaps"], batch["heatmap_weight"] * per_sample,
                                    cfg.heatmap_weight_k),
            "center": weighted_mse(center, batch["center"], batch["center_weight"] * per_sample,
                                   cfg.heatmap_weight_k),
            "regression": masked_l1(reg, batch["regression"], batch["regression_mask"] * per_sample),
            "offset": masked_l1(off, batch["offsets"], batch["offset_mask"] * per_sample),
        }
        if cfg.bone > 0:
            parts["bone"] = self._bone(reg, batch, labelled)
        else:
            parts["bone"] = heat.new_zeros(())
        total = sum(getattr(cfg, name) * parts[name] for name in HEADS)
        if teacher is not None and cfg.distill > 0:
            mask = (~labelled) if cfg.distill_only_unlabelled else torch.ones_like(labelled)
            parts["distill"] = self._distill(outputs, teacher, mask)
            total = total + cfg.distill * parts["distill"]
        return total, {key: v.detach() for key, v in parts.items()}

    def _bone(self, reg: torch.Tensor, batch: dict, labelled: torch.Tensor) -> torch.Tensor:
        """Bone lengths (in cells) of the keypoints regressed at the target's centre cell vs
        the true ones (keypoint cells, from the regression targets)."""
        cell = batch["center_cell"].to(reg.device)
        pred = positions_at_center(reg, cell)
        true = positions_at_center(batch["regression"].to(reg.dtype), cell)
        k = pred.shape[1]
        n = reg.shape[0]
        b = torch.arange(n, device=reg.device)
        mask = batch["regression_mask"][b, :, cell[:, 0], cell[:, 1]].reshape(n, k, 2)
        valid = (mask[..., 0] > 0) & labelled[:, None]
        return bone_loss(pred, true, valid, self.schema.skeleton)

    def _distill(self, outputs, teacher, mask: torch.Tensor) -> torch.Tensor:
        """Match the teacher: weighted MSE on heatmaps and centres (teacher maps as targets),
        L1 on regression at the teacher's centre neighbourhood and on offsets at the teacher's
        keypoint peaks (where the decoder reads them)."""
        heat, center, reg, off = outputs
        t_heat, t_center, t_reg, t_off = (t.detach().to(heat.dtype) for t in teacher)
        n, k, h, w = heat.shape
        m = mask.to(heat.dtype).view(n, 1, 1, 1)
        k_w = self.cfg.heatmap_weight_k
        loss = weighted_mse(heat, t_heat, m, k_w) + weighted_mse(center, t_center, m, k_w)
        cell = center_cells_from_map(t_center)
        reg_mask = torch.zeros_like(reg)
        b = torch.arange(n, device=heat.device)
        reg_mask[b, :, cell[:, 0], cell[:, 1]] = 1.0
        loss = loss + masked_l1(reg, t_reg, reg_mask * m)
        peaks = t_heat.reshape(n, k, -1).argmax(-1)
        off_mask = torch.zeros(n, k, h * w, device=heat.device, dtype=heat.dtype)
        off_mask.scatter_(2, peaks[..., None], 1.0)
        off_mask = off_mask.reshape(n, k, 1, h, w).expand(n, k, 2, h, w).reshape(n, 2 * k, h, w)
        return loss + masked_l1(off, t_off, off_mask * m)
