"""Training targets, the mirror of ``decode.py`` (CenterNet style, one grid of stride 4).

Coordinates: keypoints arrive in input pixels (0..S); in grid units ``u = x / stride`` a
keypoint lies in cell ``floor(u)`` and its sub-cell residual ``u - floor(u)`` is the offset.
What ``decode.decode_single`` reads, this module writes:

- heatmaps [K,H,W]: a kernel (peak exactly 1) centred on the keypoint cell of every labelled
  keypoint of every person in view, combined with ``max``; the kernel width follows each
  person's size (side of its keypoint box);
- centre [1,H,W]: the same kernel at each person's centre cell (the target's among them);
- regression [2K,H,W]: at the cells of a (2r+1)^2 neighbourhood of the target's centre cell,
  ``keypoint cell - that cell`` (channel 2k = y, 2k+1 = x), so every cell of the
  neighbourhood points at the keypoint cell;
- offsets [2K,H,W]: at the target's keypoint cell (and a neighbourhood), ``u - that cell``.

Only the target's labelled keypoints that lie inside the grid get regression and offset
targets; keypoints outside the crop are masked there and draw no heatmap peak.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRIDE = 4
KERNELS = ("gaussian", "exponential")


@dataclass(frozen=True)
class TargetParams:
    """Kernel and neighbourhood settings (``samples.DataConfig`` carries them).

    ``gaussian``: exp(-d^2 / (2 sigma^2)); ``exponential`` (the curve of the original
    movenet.pytorch code): exp(-d / sigma). Both are cut at 3 sigma. ``sigma`` in grid cells =
    clip(sigma_factor * person side in cells, sigma_min, sigma_max)."""

    kernel: str = "gaussian"
    sigma_factor: float = 0.05
    sigma_min: float = 1.0
    sigma_max: float = 3.0
    center_sigma_scale: float = 1.0
    regression_radius: int = 1
    offset_radius: int = 1
    center_mode: str = "box"  # "box": centre of the keypoint box; "mean": mean of keypoints
    center_all_people: bool = True

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"data.kernel must be one of {list(KERNELS)}, got {self.kernel!r}")
        if self.center_mode not in ("box", "mean"):
            raise ValueError(f"data.center_mode must be 'box' or 'mean', got {self.center_mode!r}")
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ValueError(f"data.sigma_min and data.sigma_max need 0 < sigma_min <= sigma_max, got "
                             f"{self.sigma_min} and {self.sigma_max}")
        for name in ("sigma_factor", "center_sigma_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"data.{name} must be > 0, got {getattr(self, name)}")
        for name in ("regression_radius", "offset_radius"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0 (0: one cell), got {getattr(self, name)}")


def labelled(kpts: np.ndarray) -> np.ndarray:
    """[...,K,3] -> bool [...,K]: keypoints with a label (v > 0)."""
    return kpts[..., 2] > 0


def in_grid(kpts: np.ndarray, input_size: int) -> np.ndarray:
    """[...,K,3] -> bool [...,K]: labelled and inside the input square [0, S)."""
    x, y = kpts[..., 0], kpts[..., 1]
    return labelled(kpts) & (x >= 0) & (y >= 0) & (x < input_size) & (y < input_size)


def keypoint_box(kpts: np.ndarray) -> np.ndarray | None:
    """[K,3] -> (x0, y0, x1, y1) of the labelled keypoints, or None when none is labelled."""
    pts = kpts[labelled(kpts), :2]
    if len(pts) == 0:
        return None
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def person_side(kpts: np.ndarray) -> float:
    """Side of the person's keypoint box (max of width and height), in the units of kpts."""
    box = keypoint_box(kpts)
    return 0.0 if box is None else float(max(box[2] - box[0], box[3] - box[1]))


def person_center(kpts: np.ndarray, mode: str = "box") -> np.ndarray | None:
    """(x, y) of a person: centre of the keypoint box or mean of the labelled keypoints."""
    if mode == "mean":
        pts = kpts[labelled(kpts), :2]
        return pts.mean(axis=0) if len(pts) else None
    box = keypoint_box(kpts)
    return None if box is None else (box[:2] + box[2:]) / 2


def person_sigma(kpts: np.ndarray, params: TargetParams, stride: int = STRIDE) -> float:
    side_cells = person_side(kpts) / stride
    return float(np.clip(params.sigma_factor * side_cells, params.sigma_min, params.sigma_max))


def to_cell(xy: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Input pixels -> integer cell (x, y) (floor of the grid coordinate)."""
    return np.floor(np.asarray(xy, np.float64) / stride).astype(np.int64)


# Kernels are cut where they fall below these values: beyond 3 sigma for both (3 sigma itself
# is kept: the margin covers float32's rounding of the kernel there).
_CUT = {"gaussian": np.exp(-4.5) * (1 - 1e-5), "exponential": np.exp(-3.0) * (1 - 1e-5)}


def peaks(cells: np.ndarray, sigmas: np.ndarray, grid: int, kind: str = "gaussian") -> np.ndarray:
    """One kernel per cell: ``cells`` [...,2] (x, y ints), ``sigmas`` [...] -> [...,H,W]."""
    axis = np.arange(grid, dtype=np.float32)
    sig = np.asarray(sigmas, np.float32)[..., None]
    dx2 = (axis - cells[..., 0:1]) ** 2
    dy2 = (axis - cells[..., 1:2]) ** 2
    if kind == "gaussian":  # separable: two small exps and an outer product
        value = np.exp(-dy2 / (2 * sig ** 2))[..., :, None] * np.exp(-dx2 / (2 * sig ** 2))[..., None, :]
    else:
        value = np.exp(-np.sqrt(dy2[..., :, None] + dx2[..., None, :]) / sig[..., None])
    return np.where(value >= _CUT[kind], value, 0.0).astype(np.float32)


def draw_peaks(grid: int, cells: np.ndarray, sigmas: np.ndarray, kind: str) -> np.ndarray:
    """Max of kernels centred on ``cells`` [N,2] (x, y ints) with ``sigmas`` [N] -> [H,W]."""
    if len(cells) == 0:
        return np.zeros((grid, grid), np.float32)
    return peaks(np.asarray(cells, np.float32), sigmas, grid, kind).max(axis=0)


def keypoint_heatmaps(people: np.ndarray, sigmas: np.ndarray, grid: int, input_size: int,
                      kind: str = "gaussian") -> np.ndarray:
    """All people's heatmaps: ``people`` [P,K,3] in input pixels, ``sigmas`` [P] -> [K,H,W]."""
    p, k = people.shape[:2]
    visible = in_grid(people, input_size)
    cells = to_cell(people[..., :2]).astype(np.float32)
    maps = peaks(cells, np.broadcast_to(np.asarray(sigmas, np.float32)[:, None], (p, k)), grid, kind)
    return (maps * visible[..., None, None]).max(axis=0) if p else np.zeros((k, grid, grid), np.float32)


def center_heatmap(centers: np.ndarray, sigmas: np.ndarray, grid: int, kind: str = "gaussian") -> np.ndarray:
    """[1,H,W] with a peak at each centre cell (``centers`` [P,2] (x, y) in input pixels; they
    are clipped into the grid so every person keeps a centre)."""
    cells = np.clip(to_cell(centers), 0, grid - 1).reshape(-1, 2)
    return draw_peaks(grid, cells, sigmas, kind)[None]


def neighbourhood(cell: np.ndarray, radius: int, grid: int) -> np.ndarray:
    """Cells (x, y) within ``radius`` (Chebyshev) of ``cell``, inside the grid -> [M,2]."""
    d = np.arange(-radius, radius + 1)
    dx, dy = np.meshgrid(d, d)
    cells = np.stack([cell[0] + dx.ravel(), cell[1] + dy.ravel()], axis=1)
    inside = (cells >= 0).all(axis=1) & (cells < grid).all(axis=1)
    return cells[inside]


def regression_targets(kpts: np.ndarray, center_cell: np.ndarray, grid: int, input_size: int,
                       radius: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Target's regression and mask [2K,H,W]: at each cell c near the centre cell,
    ``keypoint cell - c`` for the labelled keypoints inside the grid."""
    k = kpts.shape[0]
    reg = np.zeros((k, 2, grid, grid), np.float32)
    mask = np.zeros((k, 2, grid, grid), np.float32)
    valid = np.flatnonzero(in_grid(kpts, input_size))
    cells = neighbourhood(center_cell, radius, grid)  # [M,2] (x, y)
    kcells = to_cell(kpts[valid, :2])                  # [V,2] (x, y)
    j, cx, cy = valid[:, None], cells[None, :, 0], cells[None, :, 1]
    reg[j, 0, cy, cx] = kcells[:, 1:2] - cy
    reg[j, 1, cy, cx] = kcells[:, 0:1] - cx
    mask[j, :, cy, cx] = 1.0
    return reg.reshape(2 * k, grid, grid), mask.reshape(2 * k, grid, grid)


def offset_targets(kpts: np.ndarray, grid: int, input_size: int, radius: int = 1,
                   stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """Target's offsets and mask [2K,H,W]: ``u - c`` at the keypoint cell c (the sub-cell
    residual in 0..1) and at its neighbours (so a peak one cell off still decodes well)."""
    k = kpts.shape[0]
    off = np.zeros((k, 2, grid, grid), np.float32)
    mask = np.zeros((k, 2, grid, grid), np.float32)
    valid = np.flatnonzero(in_grid(kpts, input_size))
    u = kpts[valid, :2] / stride                          # [V,2] (x, y) in cells
    d = np.arange(-radius, radius + 1)
    dx, dy = (a.ravel() for a in np.meshgrid(d, d))
    cx = np.floor(u[:, 0:1]).astype(np.int64) + dx       # [V,M]
    cy = np.floor(u[:, 1:2]).astype(np.int64) + dy
    inside = (cx >= 0) & (cx < grid) & (cy >= 0) & (cy < grid)
    j = np.broadcast_to(valid[:, None], cx.shape)[inside]
    uy, ux = np.broadcast_to(u[:, 1:2], cx.shape)[inside], np.broadcast_to(u[:, 0:1], cx.shape)[inside]
    cx, cy = cx[inside], cy[inside]
    off[j, 0, cy, cx] = uy - cy
    off[j, 1, cy, cx] = ux - cx
    mask[j, :, cy, cx] = 1.0
    return off.reshape(2 * k, grid, grid), mask.reshape(2 * k, grid, grid)


def encode(target: np.ndarray, others: np.ndarray, input_size: int,
           params: TargetParams = TargetParams()) -> dict[str, np.ndarray]:
    """All targets for one sample. ``target`` [K,3] and ``others`` [P,K,3]: keypoints in input
    pixels with v (0 = unlabelled). Returns float32 arrays: heatmaps [K,H,W], heatmap_weight
    [K,1,1], center [1,H,W], center_weight [1,1,1], regression/regression_mask/offsets/
    offset_mask [2K,H,W] and center_cell [2] = (y, x)."""
    grid = input_size // STRIDE
    k = target.shape[0]
    others = np.asarray(others, np.float64).reshape(-1, k, 3)
    people = np.concatenate([target[None], others], axis=0)
    sigmas = np.array([person_sigma(p, params) for p in people], np.float32)

    center_xy = person_center(target, params.center_mode)
    if center_xy is None:
        raise ValueError("the target person has no labelled keypoint")
    center_cell = np.clip(to_cell(center_xy), 0, grid - 1)
    if params.center_all_people:
        centers = [person_center(p, params.center_mode) for p in people]
        keep = [i for i, c in enumerate(centers) if c is not None and _in_square(c, input_size)]
        keep = sorted(set(keep) | {0})
        center_pts = np.array([centers[i] for i in keep])
        center_sig = sigmas[keep]
    else:
        center_pts, center_sig = center_xy[None], sigmas[:1]
    center = center_heatmap(center_pts, center_sig * params.center_sigma_scale, grid, params.kernel)

    reg, reg_mask = regression_targets(target, center_cell, grid, input_size, params.regression_radius)
    off, off_mask = offset_targets(target, grid, input_size, params.offset_radius)
    return {
        "heatmaps": keypoint_heatmaps(people, sigmas, grid, input_size, params.kernel),
        # Unlabelled keypoint types are never taught as background; labelled ones outside the
        # crop are (they are known not to be in view).
        "heatmap_weight": labelled(target).astype(np.float32).reshape(k, 1, 1),
        "center": center,
        "center_weight": np.ones((1, 1, 1), np.float32),
        "regression": reg,
        "regression_mask": reg_mask,
        "offsets": off,
        "offset_mask": off_mask,
        "center_cell": np.array([center_cell[1], center_cell[0]], np.int64),
    }


def _in_square(xy: np.ndarray, size: int) -> bool:
    return bool(0 <= xy[0] < size and 0 <= xy[1] < size)
