"""MoveNet decoding: the post-processing of Google's graph, in numpy (torch-free) and torch.

Single person, per sample (all on the H x W output grid):
1. centre = argmax(centre_heatmap * centre_prior);
2. rough keypoint k = centre + regression[k] at the centre cell (not rounded);
3. keypoint cell = argmax(heatmap[k] / (distance to the rough keypoint + distance_offset));
4. keypoint = cell + offset[k] at that cell; score = heatmap[k] at that cell.
Outputs are (x, y, score) with x, y normalised to the input square (0..1).
Heatmaps and centres come in activated (0..1); regression channels are (y, x) pairs.
"""
from __future__ import annotations

import numpy as np


def center_prior(grid: int, distance_offset: float = 1.8) -> np.ndarray:
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    c = grid / 2
    return (1.0 / (np.sqrt((ys - c) ** 2 + (xs - c) ** 2) + distance_offset)).astype(np.float32)


def decode_single(heatmaps: np.ndarray, centers: np.ndarray, regression: np.ndarray,
                  offsets: np.ndarray, prior: np.ndarray | None = None,
                  distance_offset: float = 1.8, coord_scale: float | None = None) -> np.ndarray:
    """Decode one sample. Shapes: [K,H,W], [1,H,W] or [H,W], [2K,H,W], [2K,H,W].
    Returns [K,3] = (x, y, score), x and y in 0..1 of the input (cells times
    ``coord_scale``, 1/grid by default; Google's graph uses float16(1/grid))."""
    k, h, w = heatmaps.shape
    center_map = centers.reshape(h, w)
    if prior is None:
        prior = center_prior(h, distance_offset)
    cy, cx = divmod(int(np.argmax(center_map * prior)), w)
    return decode_at_center(heatmaps, regression, offsets, cy, cx, distance_offset, coord_scale)


def decode_at_center(heatmaps: np.ndarray, regression: np.ndarray, offsets: np.ndarray,
                     cy: int, cx: int, distance_offset: float = 1.8,
                     coord_scale: float | None = None) -> np.ndarray:
    """Steps 2-4 of the decoding for a person whose centre cell is (cy, cx)."""
    k, h, w = heatmaps.shape
    reg = regression[:, cy, cx].reshape(k, 2)
    rough_y = cy + reg[:, 0]
    rough_x = cx + reg[:, 1]
    ys = np.arange(h, dtype=np.float32)[None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, :]
    dist = np.sqrt((ys - rough_y[:, None, None]) ** 2 + (xs - rough_x[:, None, None]) ** 2)
    weighted = heatmaps / (dist + distance_offset)
    flat = weighted.reshape(k, -1).argmax(axis=1)
    ky, kx = np.divmod(flat, w)
    idx = np.arange(k)
    off = offsets.reshape(k, 2, h, w)[idx, :, ky, kx]
    out = np.empty((k, 3), np.float32)
    out[:, 0] = (kx + off[:, 1]) * (coord_scale or 1.0 / w)
    out[:, 1] = (ky + off[:, 0]) * (coord_scale or 1.0 / h)
    out[:, 2] = heatmaps[idx, ky, kx]
    return out


def decode_batch_torch(heatmaps, centers, regression, offsets, prior=None, distance_offset=1.8,
                       coord_scale=None):
    """Batched torch version of ``decode_single`` (same maths). Returns [N,K,3]."""
    import torch

    n, k, h, w = heatmaps.shape
    if prior is None:
        prior = torch.from_numpy(center_prior(h, float(distance_offset)))
    prior = prior.to(centers.device, centers.dtype)
    c = (centers.reshape(n, h, w) * prior).reshape(n, -1).argmax(dim=1)
    cy, cx = c // w, c % w
    b = torch.arange(n, device=heatmaps.device)
    reg = regression[b, :, cy, cx].reshape(n, k, 2)
    rough_y = cy[:, None].float() + reg[..., 0]
    rough_x = cx[:, None].float() + reg[..., 1]
    ys = torch.arange(h, device=heatmaps.device, dtype=heatmaps.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=heatmaps.device, dtype=heatmaps.dtype).view(1, 1, 1, w)
    dist = torch.sqrt((ys - rough_y[..., None, None]) ** 2 + (xs - rough_x[..., None, None]) ** 2)
    flat = (heatmaps / (dist + distance_offset)).reshape(n, k, -1).argmax(dim=2)
    ky, kx = flat // w, flat % w
    bi = b[:, None].expand(n, k)
    ki = torch.arange(k, device=heatmaps.device)[None].expand(n, k)
    off = offsets.reshape(n, k, 2, h, w)
    off_y = off[bi, ki, 0, ky, kx]
    off_x = off[bi, ki, 1, ky, kx]
    score = heatmaps[bi, ki, ky, kx]
    sx = float(coord_scale) if coord_scale is not None else 1.0 / w
    sy = float(coord_scale) if coord_scale is not None else 1.0 / h
    return torch.stack([(kx + off_x) * sx, (ky + off_y) * sy, score], dim=-1)
