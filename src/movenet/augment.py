"""Training augmentation: one affine warp per sample (crop + scale + rotation + flip) applied
to the image and, with the same matrix, to every person's keypoints; then photometric changes
(colour, blur, occlusion boxes) on the small crop. numpy + opencv.

The horizontal flip mirrors x and swaps left/right labels of ALL people with
``schema.flip_index()`` (a left wrist becomes a right wrist at the mirrored position).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass
class AugmentConfig:
    """Every transform has an off switch: its probability (or range) set to 0 (or (1, 1)).

    ``scale_range``: crop side / expanded person box side; below 1 enlarges the target (and
    may cut its limbs). ``translate``: shift of the crop centre as a fraction of its side.
    Colour amounts are maximal relative changes (hue: fraction of the colour circle).
    Balancing: ``source_balance`` gives each source its configured share of the samples
    (``DataConfig.sources[i].weight``) regardless of its size; ``pose_clusters`` > 0 clusters
    normalised poses (k-means) and weights each sample by cluster_size^-``pose_cluster_power``."""

    enabled: bool = True
    flip_prob: float = 0.5
    scale_range: tuple[float, float] = (0.75, 1.25)
    translate: float = 0.1
    rotation_prob: float = 0.5
    rotation_deg: float = 30.0
    color_prob: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.02
    gray_prob: float = 0.05
    blur_prob: float = 0.1
    blur_sigma: float = 1.5
    occlusion_prob: float = 0.0
    occlusion_max_boxes: int = 2
    occlusion_size: tuple[float, float] = (0.05, 0.25)  # box side as a fraction of the input
    source_balance: bool = True
    pose_clusters: int = 0
    pose_cluster_power: float = 0.5
    pose_cluster_seed: int = 0

    def __post_init__(self) -> None:
        self.scale_range = tuple(self.scale_range)
        self.occlusion_size = tuple(self.occlusion_size)
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"augment.scale_range must satisfy 0 < low <= high, got {list(self.scale_range)}")
        for name in ("flip_prob", "rotation_prob", "color_prob", "gray_prob", "blur_prob", "occlusion_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augment.{name} must be in 0..1, got {getattr(self, name)}")
        for name in ("translate", "rotation_deg", "brightness", "contrast", "saturation", "hue", "blur_sigma",
                     "occlusion_max_boxes", "pose_clusters", "pose_cluster_power"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0, got {getattr(self, name)}")
        for name, top in (("translate", 1.0), ("brightness", 1.0), ("contrast", 1.0), ("saturation", 1.0),
                          ("hue", 0.5)):  # (beyond: factors below 0, or around the colour circle)
            if getattr(self, name) > top:
                raise ValueError(f"augment.{name} must be in [0, {top}], got {getattr(self, name)}")
        lo, hi = self.occlusion_size
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augment.occlusion_size must satisfy 0 < low <= high <= 1, got {list(self.occlusion_size)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale_range"], d["occlusion_size"] = list(self.scale_range), list(self.occlusion_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown augment config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class Geometry:
    """Where the crop is: centre (x, y) and side in original pixels, rotation, mirror."""

    center: tuple[float, float]
    side: float
    angle_deg: float = 0.0
    flip: bool = False


# ---------------------------------------------------------------- geometry
def crop_matrix(geom: Geometry, size: int) -> np.ndarray:
    """[2,3] affine from original to input coordinates: the square ``geom.side`` around
    ``geom.center`` fills the input, its content turned by ``angle_deg`` counter-clockwise as
    seen on screen (at 90, what lay right of the centre is above it); with ``flip`` the result
    is mirrored (x -> size - x).

    Coordinates are continuous, as everywhere in the project (pixel i spans [i, i+1), its
    centre is i + 0.5): keypoints map with this matrix, and ``warp`` turns it into OpenCV's
    pixel-index form, so a crop without rotation equals ``image.crop_and_resize``."""
    s = size / geom.side
    a = np.deg2rad(geom.angle_deg)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) * s
    cx, cy = geom.center
    t = np.array([size / 2, size / 2]) - rot @ np.array([cx, cy])
    m = np.concatenate([rot, t[:, None]], axis=1)
    if geom.flip:
        m = np.array([[-1.0, 0, size], [0, 1, 0]]) @ np.vstack([m, [0, 0, 1]])
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def transform_keypoints(kpts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply [2,3] ``m`` to the x, y of [...,K,3] keypoints; v is kept."""
    out = np.array(kpts, np.float64, copy=True)
    xy = out[..., :2]
    out[..., :2] = xy @ m[:, :2].T + m[:, 2]
    return out


def swap_labels(kpts: np.ndarray, flip_index: np.ndarray) -> np.ndarray:
    """Left <-> right labels of every person: [...,K,3] -> the same, channel-permuted."""
    return kpts[..., flip_index, :]


def pixel_matrix(m: np.ndarray) -> np.ndarray:
    """Continuous-coordinate affine -> the same map on pixel indices (centres at i + 0.5)."""
    out = np.array(m, np.float64, copy=True)
    out[:, 2] += out[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return out


def warp(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` image under continuous-coordinate affine ``m`` (black outside)."""
    return cv2.warpAffine(img, pixel_matrix(m).astype(np.float32), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def hflip(img: np.ndarray, kpts: np.ndarray, flip_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an image and its people's keypoints [...,K,3] (x -> width - x, labels swapped)."""
    w = img.shape[1]
    out = swap_labels(np.array(kpts, np.float64, copy=True), flip_index)
    out[..., 0] = w - out[..., 0]
    return np.ascontiguousarray(img[:, ::-1]), out


def base_geometry(box: np.ndarray, expand: float, min_side: float = 8.0) -> Geometry:
    """The square crop around a person box (x0, y0, w, h), its longer side times ``expand``."""
    x0, y0, w, h = (float(v) for v in box)
    return Geometry(center=(x0 + w / 2, y0 + h / 2), side=max(max(w, h) * expand, min_side))


def random_geometry(base: Geometry, cfg: AugmentConfig, rng: np.random.Generator) -> Geometry:
    lo, hi = cfg.scale_range
    side = base.side * float(rng.uniform(lo, hi))
    shift = rng.uniform(-cfg.translate, cfg.translate, size=2) * side
    angle = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)) if rng.random() < cfg.rotation_prob else 0.0
    return Geometry(center=(base.center[0] + shift[0], base.center[1] + shift[1]), side=side,
                    angle_deg=angle, flip=bool(rng.random() < cfg.flip_prob))


# ---------------------------------------------------------------- photometric
def color_jitter(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness and contrast (one affine map of the values), saturation (blend with the
    grey image) or occasionally grey, then a hue rotation; RGB uint8 in and out."""
    b = 1 + rng.uniform(-cfg.brightness, cfg.brightness)
    c = 1 + rng.uniform(-cfg.contrast, cfg.contrast)
    mean = float(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).mean())
    # Contrast around the brightened mean: (b*x - b*mean) * c + b*mean.
    out = cv2.addWeighted(img, b * c, img, 0.0, b * mean * (1 - c))
    gray = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if rng.random() < cfg.gray_prob:
        return gray
    s = 1 + rng.uniform(-cfg.saturation, cfg.saturation)
    out = cv2.addWeighted(out, s, gray, 1 - s, 0.0)
    if cfg.hue > 0:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        shift = int(round(rng.uniform(-cfg.hue, cfg.hue) * 180))  # OpenCV hue is 0..179
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)


def occlude(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Paste 1..max_boxes random boxes of noise. Keypoints under them keep their labels: the
    model should still infer occluded joints, as COCO labels occluded ones."""
    out = img.copy()
    h, w = img.shape[:2]
    lo, hi = cfg.occlusion_size
    for _ in range(int(rng.integers(1, cfg.occlusion_max_boxes + 1))):
        bw, bh = (int(max(1, rng.uniform(lo, hi) * s)) for s in (w, h))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        out[y0:y0 + bh, x0:x0 + bw] = rng.integers(0, 256, size=(bh, bw, 3), dtype=np.uint8)
    return out


def photometric(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < cfg.color_prob:
        img = color_jitter(img, cfg, rng)
    if cfg.blur_sigma > 0 and rng.random() < cfg.blur_prob:
        img = blur(img, float(rng.uniform(0.3, cfg.blur_sigma)))
    if rng.random() < cfg.occlusion_prob:
        img = occlude(img, cfg, rng)
    return img


# ---------------------------------------------------------------- balancing
def normalised_poses(kpts: np.ndarray) -> np.ndarray:
    """[N,K,3] -> [N,2K]: keypoints relative to the keypoint-box centre, divided by the box
    side; unlabelled keypoints at 0 (the centre)."""
    lab = kpts[..., 2] > 0
    lo = np.where(lab[..., None], kpts[..., :2], np.inf).min(axis=1)
    hi = np.where(lab[..., None], kpts[..., :2], -np.inf).max(axis=1)
    lo, hi = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi), hi, 0.0)
    side = np.maximum((hi - lo).max(axis=1), 1e-6)
    rel = (kpts[..., :2] - ((lo + hi) / 2)[:, None]) / side[:, None, None]
    return np.where(lab[..., None], rel, 0.0).reshape(len(kpts), -1)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 25) -> np.ndarray:
    """Plain k-means (k-means++ seeding) -> cluster label per row."""
    rng = np.random.default_rng(seed)
    n = len(x)
    k = min(k, n)
    centers = [x[rng.integers(n)]]
    d2 = ((x - centers[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1 / n)
        centers.append(x[rng.choice(n, p=p)])
        d2 = np.minimum(d2, ((x - centers[-1]) ** 2).sum(axis=1))
    c = np.stack(centers)
    labels = np.zeros(n, np.int64)
    for _ in range(iters):
        dist = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]
        new = dist.argmin(axis=1)
        if _ > 0 and (new == labels).all():
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                c[j] = members.mean(axis=0)
    return labels


def cluster_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """Per-sample weight cluster_size^-power, normalised to mean 1."""
    counts = np.bincount(labels)
    w = counts[labels].astype(np.float64) ** -power
    return w / w.mean()
