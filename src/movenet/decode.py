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


# ---------------------------------------------------------------- several people
# Google's single-pose heads were trained to answer for one, centred person; decoding every
# centre peak without the centre prior is an extension that works for people who are not too
# small or too close together (see docs/video.md for measurements).
KEYPOINT_SCORE_THRESHOLD = 0.2  # TF.js MoveNet: keypoints above this count as found


def center_peaks(centers: np.ndarray, threshold: float = 0.1, max_peaks: int = 6) -> np.ndarray:
    """Local maxima of a centre heatmap ([H,W] or [1,H,W]): cells equal to the maximum of
    their 3x3 neighbourhood (a 3x3 max-pool) and above ``threshold``, strongest first.
    Returns [P,2] integer (cy, cx)."""
    c = np.asarray(centers, np.float32).reshape(centers.shape[-2:])
    h, w = c.shape
    padded = np.pad(c, 1, mode="constant", constant_values=-np.inf)
    pooled = np.max([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)
    ys, xs = np.nonzero((c >= pooled) & (c > threshold))
    order = np.argsort(-c[ys, xs], kind="stable")[:max_peaks]
    return np.stack([ys[order], xs[order]], axis=1).astype(np.int64)


def pose_score(keypoints: np.ndarray, threshold: float = KEYPOINT_SCORE_THRESHOLD) -> float:
    """Mean score of the keypoints above ``threshold`` (0 if none), as TF.js MoveNet."""
    s = keypoints[:, 2]
    good = s > threshold
    return float(s[good].mean()) if good.any() else 0.0


def person_score(center_score: float, keypoints: np.ndarray,
                 keypoint_threshold: float = KEYPOINT_SCORE_THRESHOLD) -> float:
    """Geometric mean of the centre score and the TF.js pose score: a person needs both a
    centre peak and keypoints that were found around it."""
    return float(np.sqrt(max(center_score, 0.0) * pose_score(keypoints, keypoint_threshold)))


def keypoint_box(keypoints: np.ndarray, threshold: float = KEYPOINT_SCORE_THRESHOLD,
                 fallback: tuple[float, float] | None = None) -> np.ndarray:
    """(x0, y0, x1, y1) around the keypoints scoring above ``threshold``; a point box at
    ``fallback`` (x, y) or at the keypoints' mean when none does."""
    good = keypoints[:, 2] > threshold
    if good.any():
        xy = keypoints[good, :2]
        return np.concatenate([xy.min(axis=0), xy.max(axis=0)]).astype(np.float32)
    x, y = fallback if fallback is not None else keypoints[:, :2].mean(axis=0)
    return np.array([x, y, x, y], np.float32)


def _duplicate(a: np.ndarray, b: np.ndarray, box_b: np.ndarray, max_distance: float) -> bool:
    """True when the keypoints of ``a`` lie on those of ``b``: median keypoint distance below
    ``max_distance`` times the size (sqrt of the box area, at least its longer side / 4) of b."""
    size = max(np.sqrt(max((box_b[2] - box_b[0]) * (box_b[3] - box_b[1]), 0.0)),
               max(box_b[2] - box_b[0], box_b[3] - box_b[1]) / 4, 1e-6)
    return float(np.median(np.linalg.norm(a[:, :2] - b[:, :2], axis=1))) < max_distance * size


def decode_multi(heatmaps: np.ndarray, centers: np.ndarray, regression: np.ndarray,
                 offsets: np.ndarray, max_people: int = 6, center_threshold: float = 0.1,
                 distance_offset: float = 1.8, coord_scale: float | None = None,
                 box_threshold: float = KEYPOINT_SCORE_THRESHOLD,
                 duplicate_distance: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode every person of one sample: each centre peak (``center_peaks``, no centre prior)
    is decoded as in ``decode_single`` around its own centre (``decode_at_center``).

    A person whose keypoints duplicate a stronger person's (median keypoint distance under
    ``duplicate_distance`` of that person's size: two peaks on one body) is dropped.
    Returns, strongest first: keypoints [P,K,3] (x, y, score; x, y in 0..1 of the input),
    person scores [P] (``person_score``: geometric mean of the centre score and the mean
    keypoint score above 0.2) and boxes [P,4] (x0, y0, x1, y1 in 0..1 around the keypoints
    scoring above ``box_threshold``)."""
    k, h, w = heatmaps.shape
    center_map = np.asarray(centers, np.float32).reshape(h, w)
    # look at a few more peaks than wanted: some are duplicates
    peaks = center_peaks(center_map, center_threshold, 2 * max_people + 2)
    people = []
    for cy, cx in peaks:
        kpts = decode_at_center(heatmaps, regression, offsets, int(cy), int(cx), distance_offset,
                                coord_scale)
        box = keypoint_box(kpts, box_threshold, fallback=(cx * (coord_scale or 1.0 / w),
                                                          cy * (coord_scale or 1.0 / h)))
        people.append((person_score(float(center_map[cy, cx]), kpts), kpts, box))
    if not people:
        return (np.zeros((0, k, 3), np.float32), np.zeros(0, np.float32), np.zeros((0, 4), np.float32))
    scores, kpts, boxes = (np.asarray(v, np.float32) for v in zip(*people))
    kept = distinct_people(kpts, scores, max_people, duplicate_distance=duplicate_distance, boxes=boxes)
    return kpts[kept], scores[kept], boxes[kept]


def regressed_keypoints(regression: np.ndarray, cy: int, cx: int, coord_scale: float | None = None) -> np.ndarray:
    """Step 2 alone: the rough keypoints (centre + regression at the centre cell) of a person
    whose centre cell is (cy, cx), [K,2] (x, y) normalised to the input. They come from the
    centre alone, so they place even a person whose keypoint heatmaps are weak."""
    k2, h, w = regression.shape
    reg = regression[:, cy, cx].reshape(k2 // 2, 2)
    return np.stack([(cx + reg[:, 1]) * (coord_scale or 1.0 / w), (cy + reg[:, 0]) * (coord_scale or 1.0 / h)],
                    axis=1).astype(np.float32)


def distinct_people(keypoints: np.ndarray, scores: np.ndarray, max_people: int | None = None,
                    box_threshold: float = KEYPOINT_SCORE_THRESHOLD, duplicate_distance: float = 0.1,
                    boxes: np.ndarray | None = None) -> list[int]:
    """Indices of the people [P,K,3] to keep, strongest first: a person whose median keypoint
    distance to a stronger kept person's is under ``duplicate_distance`` of that person's size
    (its box, [P,4], or the box of its keypoints above ``box_threshold``) is dropped; at most
    ``max_people``."""
    if boxes is None:
        boxes = [keypoint_box(p, box_threshold) for p in keypoints]
    kept: list[int] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if max_people is not None and len(kept) == max_people:
            break
        if not any(_duplicate(keypoints[i], keypoints[j], boxes[j], duplicate_distance) for j in kept):
            kept.append(int(i))
    return kept
