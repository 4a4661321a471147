"""Keypoint schemas: names, left/right flip pairs, skeleton edges and OKS sigmas."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class KeypointSchema:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        for a, b in self.flip_pairs + self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"schema {self.name}: index out of range in pair ({a}, {b})")
        if self.sigmas and len(self.sigmas) != k:
            raise ValueError(f"schema {self.name}: {len(self.sigmas)} sigmas for {k} keypoints")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def flip_index(self) -> np.ndarray:
        """Permutation that maps each keypoint to its mirror-image label."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def index(self, name: str) -> int:
        return self.keypoints.index(name)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "keypoints": list(self.keypoints),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "skeleton": [list(p) for p in self.skeleton],
            "sigmas": list(self.sigmas),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "KeypointSchema":
        return cls(
            name=d["name"],
            keypoints=tuple(d["keypoints"]),
            flip_pairs=tuple(tuple(p) for p in d["flip_pairs"]),
            skeleton=tuple(tuple(p) for p in d["skeleton"]),
            sigmas=tuple(d.get("sigmas", ())),
        )


COCO17 = KeypointSchema(
    name="coco17",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=(
        (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (0, 6), (5, 7), (7, 9), (6, 8), (8, 10),
        (5, 6), (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
    ),
    sigmas=(.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89),
)
# pycocotools divides these by 10.
COCO17_SIGMAS = np.array(COCO17.sigmas) / 10.0

SCHEMAS = {"coco17": COCO17}


def get_schema(name_or_dict: str | dict | KeypointSchema) -> KeypointSchema:
    if isinstance(name_or_dict, KeypointSchema):
        return name_or_dict
    if isinstance(name_or_dict, dict):
        return KeypointSchema.from_dict(name_or_dict)
    try:
        return SCHEMAS[name_or_dict]
    except KeyError:
        raise ValueError(f"unknown keypoint schema {name_or_dict!r}; known: {sorted(SCHEMAS)}") from None
