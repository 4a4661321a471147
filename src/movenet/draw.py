"""Drawing skeletons on images (RGB uint8, in place on a copy)."""
from __future__ import annotations

import cv2
import numpy as np

from .schema import COCO17, KeypointSchema, side_of

LEFT, RIGHT, CENTER = (255, 140, 0), (0, 160, 255), (60, 220, 60)
FAR = 1 << 20  # OpenCV draws at C int coordinates: a point farther off the image is drawn from here


def _pixel(xy) -> tuple[int, int]:
    return tuple(int(round(min(max(float(v), -FAR), FAR))) for v in xy)


def _side(name: str) -> tuple[int, int, int]:
    return {"left": LEFT, "right": RIGHT}.get(side_of(name), CENTER)


def _bone(name_a: str, name_b: str) -> tuple[int, int, int]:
    """A bone on one side has that side's colour (nose to left eye: left); one across the body
    (shoulder to shoulder) the centre's."""
    sides = {side_of(name_a), side_of(name_b)} - {None}
    return _side(name_a if side_of(name_a) else name_b) if len(sides) == 1 else CENTER


def draw_pose(img: np.ndarray, keypoints: np.ndarray, schema: KeypointSchema = COCO17,
              threshold: float = 0.3, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """Return a copy of ``img`` with one or more people ([K,3] or [P,K,3], x, y, score) drawn;
    keypoints scoring under ``threshold`` are hidden."""
    out = img.copy()
    people = keypoints[None] if keypoints.ndim == 2 else keypoints
    scale = max(out.shape[:2]) / 400
    thick = max(1, int(round(2 * scale)))
    radius = max(2, int(round(3 * scale)))
    for kpts in people:
        visible = (kpts[:, 2] >= threshold) & np.isfinite(kpts[:, :2]).all(axis=1)
        for a, b in schema.skeleton:
            if visible[a] and visible[b]:
                c = color or _bone(schema.keypoints[a], schema.keypoints[b])
                cv2.line(out, _pixel(kpts[a, :2]), _pixel(kpts[b, :2]), c, thick, cv2.LINE_AA)
        for i in range(len(kpts)):
            if visible[i]:
                cv2.circle(out, _pixel(kpts[i, :2]), radius, color or _side(schema.keypoints[i]), -1, cv2.LINE_AA)
    return out


def write_image(path, img_rgb: np.ndarray) -> None:
    """Write an RGB image atomically (format from the extension)."""
    from pathlib import Path

    from .fileio import atomic_path

    ext = Path(path).suffix or ".jpg"
    ok, buf = cv2.imencode(ext, cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: cannot encode image as {ext}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
