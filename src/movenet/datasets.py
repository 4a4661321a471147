"""Annotation formats. COCO person-keypoints JSON is the canonical format; other data sets
are converted into it (``lsp_to_coco``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import MoveNetError
from .schema import COCO17

# LSP joint order: R ankle, R knee, R hip, L hip, L knee, L ankle, R wrist, R elbow,
# R shoulder, L shoulder, L elbow, L wrist, neck, head top (person-centric left/right).
LSP_TO_COCO = {0: 16, 1: 14, 2: 12, 3: 11, 4: 13, 5: 15, 6: 10, 7: 8, 8: 6, 9: 5, 10: 7, 11: 9}


def read_lsp_joints(folder: str | os.PathLike) -> tuple[list[Path], np.ndarray]:
    """LSP folder (``joints.mat`` + ``images/``) -> (image paths, [N,17,3] COCO keypoints with
    COCO visibility: 2 visible, 1 occluded, 0 not annotated)."""
    from scipy.io import loadmat

    folder = Path(folder)
    mat_path = folder / "joints.mat"
    if not mat_path.exists():
        raise MoveNetError(f"{folder}: not an LSP folder (no joints.mat)")
    try:
        joints = np.asarray(loadmat(str(mat_path))["joints"], dtype=np.float64)
    except Exception as e:  # scipy raises several types for bad files
        raise MoveNetError(f"{mat_path}: cannot read joints ({e})") from None
    if joints.ndim != 3 or joints.shape[:2] != (3, 14):
        if joints.ndim == 3 and joints.shape[1:] == (3, 14):  # LSP extended layout 14x3xN
            joints = joints.transpose(1, 2, 0)
        else:
            raise MoveNetError(f"{mat_path}: expected joints of shape 3x14xN, got {joints.shape}")
    n = joints.shape[2]
    images = [folder / "images" / f"im{i + 1:04d}.jpg" for i in range(n)]
    kpts = np.zeros((n, COCO17.num_keypoints, 3), np.float32)
    for lsp_idx, coco_idx in LSP_TO_COCO.items():
        kpts[:, coco_idx, 0] = joints[0, lsp_idx]
        kpts[:, coco_idx, 1] = joints[1, lsp_idx]
        kpts[:, coco_idx, 2] = np.where(joints[2, lsp_idx] > 0.5, 1, 2)  # LSP flag 1 = occluded
    return images, kpts


def lsp_to_coco(folder: str | os.PathLike, relative_to: str | os.PathLike | None = None) -> dict:
    """Convert an LSP folder into a COCO person-keypoints dict (one person per image).
    ``file_name`` is relative to ``relative_to`` (default: the LSP ``images/`` folder)."""
    import cv2

    images, kpts = read_lsp_joints(folder)
    root = Path(relative_to) if relative_to else Path(folder) / "images"
    out = {"images": [], "annotations": [], "categories": [coco_person_category()]}
    for i, (path, k) in enumerate(zip(images, kpts), start=1):
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.exists() else None
        h, w = img.shape[:2] if img is not None else (0, 0)
        labelled = k[:, 2] > 0
        x0, y0 = k[labelled, :2].min(axis=0)
        x1, y1 = k[labelled, :2].max(axis=0)
        out["images"].append({"id": i, "file_name": os.path.relpath(path, root), "width": int(w), "height": int(h)})
        out["annotations"].append({
            "id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
            "keypoints": [round(float(v), 3) for v in k.reshape(-1)],
            "num_keypoints": int(labelled.sum()),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": float((x1 - x0) * (y1 - y0)),
        })
    return out


def coco_person_category() -> dict:
    return {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO17.keypoints), "skeleton": [[a + 1, b + 1] for a, b in COCO17.skeleton]}
