"""Annotation formats. COCO person-keypoints JSON is the canonical format; other data sets
are converted into it (``lsp_to_coco``, ``mpii_to_coco``). ``load_keypoint_dataset`` reads any
of them into one validated structure; ``write_coco`` writes it back as COCO JSON."""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import DataWarning, MoveNetError, some_of
from .schema import COCO17, KeypointSchema

# LSP joint order: R ankle, R knee, R hip, L hip, L knee, L ankle, R wrist, R elbow,
# R shoulder, L shoulder, L elbow, L wrist, neck, head top (person-centric left/right).
LSP_TO_COCO = {0: 16, 1: 14, 2: 12, 3: 11, 4: 13, 5: 15, 6: 10, 7: 8, 8: 6, 9: 5, 10: 7, 11: 9}
LSP_NECK, LSP_HEAD_TOP = 12, 13


def _read_lsp_mat(folder: Path) -> tuple[np.ndarray, list[Path]]:
    """``joints.mat`` -> ([3,14,N] x, y, occluded flag in LSP joint order, the N image paths).
    LSP's 3x14xN (flag 1 = occluded, images im0001.jpg...) or LSP extended's 14x3xN (flag 1 =
    visible, images im00001.jpg...)."""
    from scipy.io import loadmat

    mat_path = folder / "joints.mat"
    if not mat_path.exists():
        raise MoveNetError(f"{folder}: not an LSP folder (no joints.mat)")
    try:
        mat = loadmat(str(mat_path))
    except Exception as e:  # scipy raises several types for bad files
        raise MoveNetError(f"{mat_path}: not a readable MATLAB file ({e})") from None
    if "joints" not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise MoveNetError(f"{mat_path}: no 'joints' variable (found: {found})")
    try:
        joints = np.asarray(mat["joints"], dtype=np.float64)
    except (TypeError, ValueError):
        raise MoveNetError(f"{mat_path}: 'joints' is not a numeric array") from None
    shape = " x ".join(map(str, joints.shape))
    if joints.ndim == 3 and joints.shape[:2] == (3, 14):
        digits = 4
    elif joints.ndim == 3 and joints.shape[:2] == (14, 3):  # LSP extended
        joints = joints.transpose(1, 0, 2).copy()
        joints[2] = 1 - joints[2]
        digits = 5
    else:
        raise MoveNetError(f"{mat_path}: 'joints' is {shape}; expected 3 x 14 x N (LSP) or 14 x 3 x N (LSP extended)")
    images = [folder / "images" / f"im{i + 1:0{digits}d}.jpg" for i in range(joints.shape[2])]
    return joints, images


def read_lsp_joints(folder: str | os.PathLike) -> tuple[list[Path], np.ndarray]:
    """LSP folder (``joints.mat`` + ``images/``) -> (image paths, [N,17,3] COCO keypoints with
    COCO visibility: 2 visible, 1 occluded, 0 not annotated)."""
    joints, images = _read_lsp_mat(Path(folder))
    return images, _lsp_to_coco_keypoints(joints)


def _lsp_to_coco_keypoints(joints: np.ndarray) -> np.ndarray:
    # Kept as they are, without MPII's MATLAB shift: Google's models put the joints within a
    # fifth of a pixel of them (benchmarks/keypoint_bias.py).
    n = joints.shape[2]
    kpts = np.zeros((n, COCO17.num_keypoints, 3), np.float32)
    for lsp_idx, coco_idx in LSP_TO_COCO.items():
        kpts[:, coco_idx, 0] = joints[0, lsp_idx]
        kpts[:, coco_idx, 1] = joints[1, lsp_idx]
        kpts[:, coco_idx, 2] = np.where(joints[2, lsp_idx] > 0.5, 1, 2)  # LSP flag 1 = occluded
    return kpts


def lsp_to_coco(folder: str | os.PathLike, relative_to: str | os.PathLike | None = None) -> dict:
    """Convert an LSP folder into a COCO person-keypoints dict (one person per image).
    ``file_name`` is relative to ``relative_to`` (default: the LSP ``images/`` folder)."""
    joints, images = _read_lsp_mat(Path(folder))
    kpts = _lsp_to_coco_keypoints(joints)
    root = Path(relative_to) if relative_to else Path(folder) / "images"
    out = {"images": [], "annotations": [], "categories": [coco_person_category()]}
    for i, (path, k) in enumerate(zip(images, kpts), start=1):
        neck, head_top = joints[:2, LSP_NECK, i - 1], joints[:2, LSP_HEAD_TOP, i - 1]
        w, h = _image_size(path) or (0, 0)
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
            # Not COCO keypoints, kept for PCKh (head segment length).
            "neck": [round(float(v), 3) for v in neck],
            "head_top": [round(float(v), 3) for v in head_top],
        })
    return out


def coco_person_category() -> dict:
    return {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO17.keypoints), "skeleton": [[a + 1, b + 1] for a, b in COCO17.skeleton]}


# ---------------------------------------------------------------- MPII
# MPII joint order (person-centric left/right, as in COCO).
MPII_JOINTS = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
               "pelvis", "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow",
               "right_shoulder", "left_shoulder", "left_elbow", "left_wrist")
MPII_TO_COCO = {i: COCO17.index(name) for i, name in enumerate(MPII_JOINTS) if name in COCO17.keypoints}
MPII_NECK, MPII_HEAD_TOP = MPII_JOINTS.index("upper_neck"), MPII_JOINTS.index("head_top")
MPII_PIXEL_STD = 200.0  # MPII's ``scale`` is the person's height in units of 200 px
# MPII stores MATLAB pixel indices (pixel 1 is centred at 1); our pixel i is centred at i + 0.5.
MATLAB_TO_PIXEL = -0.5
MPII_SPLITS = ("train", "test", "all")


@dataclass
class MpiiPerson:
    """One MPII person in our pixel coordinates. ``joints`` [16,3] = x, y, v in MPII joint
    order with COCO visibility (0 unlabelled, 1 occluded, 2 visible or not stated);
    ``center``/``scale``: MPII's rough person position and height / 200 px; ``head_box``
    (x, y, w, h) where the annotation has one (the .mat; PCKh's head size)."""

    joints: np.ndarray
    center: tuple[float, float] | None = None
    scale: float | None = None
    head_box: tuple[float, float, float, float] | None = None


def read_mpii(path: str | os.PathLike, split: str = "train") -> list[tuple[str, list[MpiiPerson]]]:
    """MPII annotations -> [(image file name, people)] in file order.

    ``path``: the official ``mpii_human_pose_v1_u12_1.mat`` (``split`` picks its images by
    ``img_train``: ``train`` (the labelled ones), ``test`` or ``all``) or an HRNet/mmpose-style
    JSON list of ``{"image", "joints", "joints_vis", "center", "scale"}`` records (already one
    split per file; records of one image become one entry)."""
    path = Path(path)
    if split not in MPII_SPLITS:
        raise MoveNetError(f"unknown MPII split {split!r}; use one of {', '.join(MPII_SPLITS)}")
    if not path.is_file():
        raise MoveNetError(f"{path}: file not found")
    if path.suffix.lower() == ".mat":
        return _read_mpii_mat(path, split)
    return _mpii_from_records(_read_json(path), str(path))


def mpii_to_coco(annotation_path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                 split: str = "train") -> dict:
    """Convert MPII annotations (see ``read_mpii``) into a COCO person-keypoints dict.

    The 12 limb joints become COCO keypoints 5-16; nose, eyes and ears are unlabelled (v 0).
    ``bbox`` is the box of the person's labelled MPII joints (head top included), or the
    square of side ``scale`` x 200 px at ``center`` for people without joints. ``file_name`` is
    the MPII image name, relative to ``image_root`` (default: ``mpii_image_root``); width and
    height are read from the image headers where the files are there."""
    path = Path(annotation_path)
    images = read_mpii(path, split)
    return _mpii_coco(images, Path(image_root) if image_root is not None else mpii_image_root(path))


def mpii_image_root(annotation_path: str | os.PathLike) -> Path:
    """Where MPII images are looked for: ``images/`` beside the annotation file, else beside
    its folder (``mpii/annot/train.json`` + ``mpii/images/``), else the file's folder."""
    path = Path(annotation_path)
    for candidate in (path.parent / "images", path.parent.parent / "images"):
        if candidate.is_dir():
            return candidate
    return path.parent


def _mpii_joints(xy: np.ndarray, labelled: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """[16,2] MATLAB coordinates + [16] masks -> [16,3] our pixels with COCO visibility."""
    joints = np.zeros((len(MPII_JOINTS), 3))
    joints[:, :2] = np.where(labelled[:, None], xy + MATLAB_TO_PIXEL, 0.0)
    joints[:, 2] = np.where(labelled, np.where(visible, 2, 1), 0)
    return joints


def _mpii_position(center, scale) -> tuple[tuple[float, float] | None, float | None]:
    """MPII's (center, scale) in our pixels; None for what is absent (MPII marks it -1)."""
    ok = center is not None and scale is not None and scale > 0 and tuple(center) != (-1, -1)
    if not ok:
        return None, None
    return (float(center[0]) + MATLAB_TO_PIXEL, float(center[1]) + MATLAB_TO_PIXEL), float(scale)


def _mpii_from_records(records, label: str) -> list[tuple[str, list[MpiiPerson]]]:
    def fail(problem: str):
        raise MoveNetError(f"{label}: {problem}")

    if not isinstance(records, list) or not records:
        fail("expected a non-empty JSON list of MPII records ({'image', 'joints', 'joints_vis', ...})")
    images: dict[str, list[MpiiPerson]] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("image"), str) or not record["image"]:
            fail(f"records[{i}] is not an MPII record (needs an 'image' name and 'joints')")
        person = _mpii_record_person(record, f"records[{i}] ({record['image']})", fail)
        people = images.setdefault(record["image"], [])
        if person is not None:
            people.append(person)
    return list(images.items())


def _mpii_record_person(record: dict, where: str, fail) -> MpiiPerson | None:
    """One JSON record; None when it places nobody (every joint missing, no position)."""
    center = _as_floats(record["center"], f"{where} center", fail) if "center" in record else None
    if center is not None and center.size != 2:
        fail(f"{where}: 'center' must be [x, y]")
    scale = record.get("scale")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale > 1e6):  # (1e6 x 200 px: no photo)
        fail(f"{where}: 'scale' is not a finite number of a person's size, got {scale!r}")
    center, scale = _mpii_position(center, scale)
    n = len(MPII_JOINTS)
    if "joints" not in record:
        if center is None:
            fail(f"{where}: neither 'joints' nor 'center' and 'scale'")
        return MpiiPerson(np.zeros((n, 3)), center, scale)
    joints = record["joints"]
    if not isinstance(joints, list):
        fail(f"{where}: 'joints' is not a list")
    if len(joints) != n:
        fail(f"{where}: {len(joints)} joints, expected {n} (MPII)")
    if not all(isinstance(p, list) and len(p) == 2 for p in joints):
        fail(f"{where}: 'joints' must be {n} [x, y] pairs")
    xy = _as_floats([v for p in joints for v in p], f"{where} joints", fail).reshape(n, 2)
    at_marker = np.isin(xy, (-1.0, 0.0)).all(axis=1)  # MPII's missing-joint marker
    vis = _as_floats(record["joints_vis"], f"{where} joints_vis", fail) if "joints_vis" in record \
        else (~at_marker).astype(np.float64)
    if vis.size != n:
        fail(f"{where}: {vis.size} joints_vis values, expected {n}")
    # Flag 0 at the marker is unlabelled; flag 0 elsewhere is an annotated joint not visible.
    missing = (vis == 0) & at_marker
    if missing.all() and center is None:
        return None
    return MpiiPerson(_mpii_joints(xy, ~missing, vis > 0), center, scale)


def _read_mpii_mat(path: Path, split: str) -> list[tuple[str, list[MpiiPerson]]]:
    from scipy.io import loadmat

    def fail(problem: str):
        raise MoveNetError(f"{path}: {problem}")

    try:
        mat = loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except Exception as e:  # scipy raises several types for bad files
        fail(f"cannot read the MATLAB file ({e})")
    release = mat.get("RELEASE")
    if release is None or not hasattr(release, "annolist"):
        fail("no RELEASE struct with annolist (not MPII's mpii_human_pose_v1_u12_1.mat)")
    annolist = _mat_list(release.annolist)
    img_train = np.atleast_1d(np.asarray(getattr(release, "img_train", []))).ravel()
    if img_train.size != len(annolist):
        fail(f"RELEASE.img_train has {img_train.size} flags for {len(annolist)} images")
    keep = {"train": img_train == 1, "test": img_train == 0, "all": np.ones(len(annolist), bool)}[split]
    images = []
    for i in np.flatnonzero(keep):
        where = f"annolist({i + 1})"  # MATLAB's 1-based index, as in MPII's documentation
        name = getattr(getattr(annolist[i], "image", None), "name", None)
        if not isinstance(name, str) or not name:
            fail(f"{where}: no image name")
        rects = _mat_list(getattr(annolist[i], "annorect", None))
        people = [_mat_person(r, f"{where}.annorect({j + 1}) ({name})", fail) for j, r in enumerate(rects)]
        images.append((name, [p for p in people if p is not None]))
    return images


def _mat_person(rect, where: str, fail) -> MpiiPerson | None:
    """One ``annorect``; None when it places nobody (no joints, no position)."""
    n = len(MPII_JOINTS)
    xy, labelled, visible = np.zeros((n, 2)), np.zeros(n, bool), np.ones(n, bool)
    for point in _mat_list(getattr(getattr(rect, "annopoints", None), "point", None)):
        joint = _mat_number(getattr(point, "id", None))
        x, y = _mat_number(getattr(point, "x", None)), _mat_number(getattr(point, "y", None))
        if joint is None or joint != int(joint) or not 0 <= joint < n:
            fail(f"{where}: joint id {getattr(point, 'id', None)!r} is not one of 0..{n - 1}")
        if x is None or y is None:
            fail(f"{where}: joint {int(joint)} has no x, y")
        xy[int(joint)], labelled[int(joint)] = (x, y), True
        flag = _mat_number(getattr(point, "is_visible", None))  # 1, 0, '1', '0' or '' (not stated)
        visible[int(joint)] = flag is None or flag != 0
    objpos = getattr(rect, "objpos", None)
    center = (_mat_number(getattr(objpos, "x", None)), _mat_number(getattr(objpos, "y", None)))
    scale = _mat_number(getattr(rect, "scale", None))
    center, scale = _mpii_position(None if None in center else center, scale)
    if not labelled.any() and center is None:
        return None
    corners = [_mat_number(getattr(rect, k, None)) for k in ("x1", "y1", "x2", "y2")]
    head_box = None
    if None not in corners:
        x1, y1, x2, y2 = corners
        head_box = (min(x1, x2) + MATLAB_TO_PIXEL, min(y1, y2) + MATLAB_TO_PIXEL,
                    abs(x2 - x1), abs(y2 - y1))
    return MpiiPerson(_mpii_joints(xy, labelled, visible), center, scale, head_box)


def _mat_list(value) -> list:
    """A squeezed MATLAB struct array as a list: one struct, an array of them, or nothing."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _mat_number(value) -> float | None:
    """A squeezed MATLAB scalar (number, numeric string or 1-element array); None for empty
    arrays, empty strings and anything else."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    return float(value) if np.isfinite(value) else None


def _mpii_coco(images: list[tuple[str, list[MpiiPerson]]], image_root: Path) -> dict:
    from tqdm import tqdm

    out = {"images": [], "annotations": [], "categories": [coco_person_category()]}
    progress = tqdm(images, desc="MPII images", unit="img", file=sys.stderr, disable=len(images) < 1000)
    for image_id, (name, people) in enumerate(progress, start=1):
        size = _image_size(image_root / name)
        out["images"].append({"id": image_id, "file_name": name,
                              **({"width": size[0], "height": size[1]} if size else {})})
        for person in people:
            out["annotations"].append(_mpii_annotation(person, len(out["annotations"]) + 1, image_id))
    return out


def _mpii_annotation(person: MpiiPerson, ann_id: int, image_id: int) -> dict:
    kpts = np.zeros((COCO17.num_keypoints, 3))
    for mpii_idx, coco_idx in MPII_TO_COCO.items():
        kpts[coco_idx] = person.joints[mpii_idx]
    if (person.joints[:, 2] > 0).any():
        x0, y0, w, h = _keypoint_box(person.joints)
    else:
        side = person.scale * MPII_PIXEL_STD
        x0, y0, w, h = person.center[0] - side / 2, person.center[1] - side / 2, side, side
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
           "keypoints": np.round(kpts.reshape(-1), 3).tolist(),
           "num_keypoints": int((kpts[:, 2] > 0).sum()),
           "bbox": [float(x0), float(y0), float(w), float(h)], "area": float(w * h)}
    # Not COCO keypoints, kept for PCKh (head size).
    if person.joints[MPII_NECK, 2] > 0 and person.joints[MPII_HEAD_TOP, 2] > 0:
        ann["neck"] = [round(float(v), 3) for v in person.joints[MPII_NECK, :2]]
        ann["head_top"] = [round(float(v), 3) for v in person.joints[MPII_HEAD_TOP, :2]]
    if person.head_box is not None:
        ann["head_box"] = [round(float(v), 3) for v in person.head_box]
    return ann


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding, upright as ``read_image`` reads
    it (EXIF orientations 5-8 turn it a quarter); None if missing or unreadable."""
    from PIL import Image  # a dependency of matplotlib

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # a header only: no image is too large
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ("Corrupt EXIF data": the size is read all the same)
            with Image.open(path) as im:
                w, h = im.size
                return (h, w) if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (w, h)
    except (OSError, ValueError):  # missing, unreadable or not an image
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def far_outside_image(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """[K] labelled keypoints more than the image's width or height outside it: annotation
    errors, not limbs cut off by the frame (False everywhere where the size is not known)."""
    if width <= 0 or height <= 0:
        return np.zeros(len(keypoints), bool)
    x, y = keypoints[:, 0], keypoints[:, 1]
    return (keypoints[:, 2] > 0) & ((x < -width) | (x > 2 * width) | (y < -height) | (y > 2 * height))


# ---------------------------------------------------------------- the canonical loader
@dataclass
class PersonAnnotation:
    """One annotated person. ``keypoints`` [K,3] = x, y, v in image pixels with COCO
    visibility (0 unlabelled, 1 occluded, 2 visible); ``bbox`` = (x, y, w, h)."""

    id: int
    image_id: int
    keypoints: np.ndarray
    bbox: tuple[float, float, float, float]
    area: float
    iscrowd: bool

    @property
    def num_labelled(self) -> int:
        return int((self.keypoints[:, 2] > 0).sum())


@dataclass
class ImageEntry:
    id: int
    path: Path
    width: int  # 0 where the annotation file did not say (LSP images that could not be read)
    height: int
    people: list[PersonAnnotation] = field(default_factory=list)


@dataclass
class KeypointDataset:
    """Images with their person annotations, plus the validated COCO dict (person category
    only, bbox/area/num_keypoints filled in) that pycocotools evaluates against."""

    name: str
    images: list[ImageEntry]
    coco: dict
    schema: KeypointSchema = COCO17

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_people(self) -> int:
        return sum(len(e.people) for e in self.images)

    def subset(self, image_ids) -> "KeypointDataset":
        """The same data restricted to ``image_ids`` (order of this data set kept)."""
        keep = set(image_ids)
        coco = {**self.coco,
                "images": [im for im in self.coco["images"] if im["id"] in keep],
                "annotations": [a for a in self.coco["annotations"] if a["image_id"] in keep]}
        return KeypointDataset(self.name, [e for e in self.images if e.id in keep], coco, self.schema)


def keep_keypoints(dataset: KeypointDataset, names) -> KeypointDataset:
    """The same people with only the keypoints ``names`` (``KeypointSchema.select``), in the
    annotations and in the COCO dict that pycocotools reads."""
    schema = dataset.schema.select(names)
    order = [dataset.schema.index(n) for n in schema.keypoints]
    people = {}
    images = []
    for e in dataset.images:
        kept = [replace(p, keypoints=p.keypoints[order]) for p in e.people]
        people.update((p.id, p) for p in kept)
        images.append(replace(e, people=kept))
    annotations = [{**a, "keypoints": [float(v) for v in people[a["id"]].keypoints.reshape(-1)],
                    "num_keypoints": people[a["id"]].num_labelled} if a["id"] in people else a
                   for a in dataset.coco.get("annotations", [])]
    categories = [_reordered_category(c, order, schema) for c in dataset.coco.get("categories", [])]
    return KeypointDataset(dataset.name, images, {**dataset.coco, "annotations": annotations,
                                                  "categories": categories}, schema)


def merge_coco(parts: list[dict]) -> dict:
    """One COCO dict from several, ids made unique as ``id * len(parts) + source``."""
    n = len(parts)
    out = {"images": [], "annotations": [], "categories": parts[0]["categories"] if parts else []}
    for s, coco in enumerate(parts):
        out["images"] += [{**im, "id": im["id"] * n + s} for im in coco["images"]]
        out["annotations"] += [{**a, "id": a["id"] * n + s, "image_id": a["image_id"] * n + s}
                               for a in coco["annotations"]]
    return out


def concat_datasets(parts: list[KeypointDataset], name: str | None = None) -> KeypointDataset:
    """One data set from several of one schema, ids renumbered as ``merge_coco`` does (the ids
    of the trainer's merged validation data)."""
    if not parts:
        raise ValueError("concat_datasets: no data sets")
    n = len(parts)
    images = [replace(e, id=e.id * n + s,
                      people=[replace(p, id=p.id * n + s, image_id=p.image_id * n + s) for p in e.people])
              for s, part in enumerate(parts) for e in part.images]
    return KeypointDataset(name or "+".join(p.name for p in parts), images,
                           merge_coco([p.coco for p in parts]), parts[0].schema)


def load_keypoint_dataset(source: str | os.PathLike | dict, image_root: str | os.PathLike | None = None,
                          schema: KeypointSchema | None = COCO17, check_files: bool = False) -> KeypointDataset:
    """Read person keypoints from any supported source into one validated structure.

    ``source``: a COCO person-keypoints JSON file, a folder holding ``person_keypoints.json``,
    an LSP folder (``joints.mat`` + ``images/``), MPII annotations (the official ``.mat``, of
    which the labelled training images, or an HRNet/mmpose-style JSON list of records; see
    ``mpii_to_coco``) or an already-loaded COCO dict. Image paths are resolved against
    ``image_root`` (default: an ``images/`` folder beside the JSON if there is one, else the
    JSON's folder; ``mpii_image_root`` for MPII; the working directory for a dict). Only the
    person category is kept; crowd annotations are kept with ``iscrowd=True``. With
    ``check_files`` every image file must exist, otherwise a missing file is reported when it
    is read. ``schema`` None: the keypoints the file's person category names (COCO's 17 where
    it names none or all of them)."""
    coco, label, default_root, name = _read_source(source, image_root)
    if schema is None:
        schema = file_schema(coco)
    root = Path(image_root) if image_root is not None else default_root
    if image_root is not None and not root.is_dir():
        raise MoveNetError(f"{root}: image folder not found (given as the image root of {label})")
    dataset = _parse_coco(coco, label, root, schema, name)
    if check_files:
        missing = [e.path for e in dataset.images if not e.path.is_file()]
        if missing:
            raise MoveNetError(f"{label}: {len(missing)} of {len(dataset.images)} image files missing "
                               f"(first: {missing[0]})")
    return dataset


def file_schema(coco: dict) -> KeypointSchema:
    """The keypoints a COCO dict's person category (or its one category with keypoints) names,
    in its order, as a schema without flip pairs or bones (COCO's 17 where it names those, or
    none)."""
    cats = [c for c in coco.get("categories") or [] if isinstance(c, dict)] if isinstance(coco, dict) else []
    named = [c for c in cats if isinstance(c.get("keypoints"), list) and c["keypoints"]]
    category = next((c for c in named if c.get("name") == "person"), named[0] if len(named) == 1 else None)
    if category is None or list(map(str, category["keypoints"])) == list(COCO17.keypoints):
        return COCO17
    names = tuple(map(str, category["keypoints"]))
    try:
        return KeypointSchema(str(category.get("name") or "file"), names, (), ())
    except ValueError:  # (names given twice: the loader says so, naming the file)
        return COCO17


def write_coco(source: str | os.PathLike | dict, out: str | os.PathLike,
               image_root: str | os.PathLike | None = None) -> KeypointDataset:
    """Write any source ``load_keypoint_dataset`` reads as one COCO person-keypoints JSON
    file (atomically) and return the loaded data. Image file names are written relative to the
    folder ``load_keypoint_dataset(out)`` resolves them against (``images/`` beside ``out``
    where there is one, else ``out``'s folder), so the file loads where it is written. Every
    image file must be there with a readable header: sizes the source does not give are read
    from it, and sizes that differ from it are warned about (and kept: the keypoints were
    placed in them)."""
    from .fileio import refuse_overwriting_inputs, write_json_atomic

    dataset = load_keypoint_dataset(source, image_root, schema=None, check_files=True)  # (its own keypoints)
    refuse_overwriting_inputs([out], [e.path for e in dataset.images], "the output", "image of the data set")
    root = _default_image_root(Path(out))
    found = checked_image_sizes([(e.path, e.width, e.height) for e in dataset.images])
    images = []
    for im, entry, size in zip(dataset.coco["images"], dataset.images, found):
        if min(entry.width, entry.height) > 0:
            size = (entry.width, entry.height)
        images.append({**im, "file_name": os.path.relpath(entry.path, root), "width": size[0], "height": size[1]})
    write_json_atomic(out, {**dataset.coco, "images": images}, indent=None)
    return dataset


def checked_image_sizes(images: list[tuple[Path, int, int]], on_bad_image: str = "error"
                        ) -> list[tuple[int, int] | None]:
    """(width, height) from the header of each ``(path, width, height)``. An unreadable header
    is an error, or with ``on_bad_image="skip"`` None and one warning that counts them; sizes
    that differ from the given ones (0: not given) get one warning, the first named and the
    others counted (their keypoints are likely misplaced)."""
    from .image import size_mismatch

    sizes, mismatched, unreadable = [], [], []
    for path, width, height in images:
        found = _image_size(path)
        if found is None:
            if on_bad_image != "skip":
                raise MoveNetError(f"{path}: not a readable image (empty, corrupt or not an image)")
            unreadable.append(path)
        elif problem := size_mismatch(path, found[::-1], width, height):
            mismatched.append(problem)
        sizes.append(found)
    if mismatched:
        more = f" ({len(mismatched) - 1} more images differ from their size in the file)" if len(mismatched) > 1 else ""
        warnings.warn(mismatched[0] + more, DataWarning, stacklevel=2)
    if unreadable:
        warnings.warn(f"{unreadable[0]}: not a readable image ({len(unreadable)} in all; on_bad_image=skip skips "
                      "them)", DataWarning, stacklevel=2)
    return sizes


def _read_source(source, image_root=None) -> tuple[object, str, Path, str]:
    """-> (parsed COCO object, label for messages, default image root, data set name)."""
    if isinstance(source, dict):
        info = source.get("info")
        name = info.get("description") if isinstance(info, dict) else None
        return source, "annotations", Path("."), str(name or "dataset")
    path = Path(source)
    if path.is_dir():
        if (path / "joints.mat").exists():
            return lsp_to_coco(path), str(path), path / "images", path.name
        json_path = path / "person_keypoints.json"
        if not json_path.exists():
            raise MoveNetError(f"{path}: neither an LSP folder (joints.mat) nor a COCO folder "
                               "(person_keypoints.json)")
        coco = _read_json(json_path)
        return coco, str(json_path), _default_image_root(json_path, coco), path.name
    if not path.exists():
        raise MoveNetError(f"{path}: file not found")
    if path.suffix.lower() == ".mat":
        return _mpii_source(path, read_mpii(path), image_root)
    data = _read_json(path)
    if isinstance(data, list):  # a COCO file is an object; a list is MPII records
        return _mpii_source(path, _mpii_from_records(data, str(path)), image_root)
    return data, str(path), _default_image_root(path, data), path.stem


def _mpii_source(path: Path, images: list, image_root) -> tuple[dict, str, Path, str]:
    root = Path(image_root) if image_root is not None else mpii_image_root(path)
    return _mpii_coco(images, root), str(path), root, path.stem


def _default_image_root(json_path: Path, coco=None) -> Path:
    """``images/`` beside the JSON when there is one (COCO's layout), else the JSON's folder; the
    JSON's folder too when the file names start there (``images/x.jpg``, as Label Studio writes)."""
    beside = json_path.parent / "images"
    if not beside.is_dir():
        return json_path.parent
    images = coco.get("images") if isinstance(coco, dict) else None
    names = [im["file_name"].replace("\\", "/") for im in images[:20]
             if isinstance(im, dict) and isinstance(im.get("file_name"), str)] if isinstance(images, list) else []
    found_beside = sum((beside / n).exists() for n in names)
    return json_path.parent if sum((json_path.parent / n).exists() for n in names) > found_beside else beside


def _image_path(root: Path, name: str) -> Path:
    """``root / name``; a name written on Windows (``images\\a.jpg``) with ``/`` where that
    file is not found as it is written (a name may hold a backslash on Linux)."""
    path = root / name
    if "\\" in name and not path.exists():
        return root / name.replace("\\", "/")
    return path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # (-sig: a byte-order mark, as Windows tools write)
    except json.JSONDecodeError as e:
        raise MoveNetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise MoveNetError(f"{path}: not a JSON text file (JSON is UTF-8 text)") from None
    except OSError as e:
        raise MoveNetError(f"{path}: cannot read ({e.strerror})") from None


def _parse_coco(coco, label: str, root: Path, schema: KeypointSchema, name: str) -> KeypointDataset:
    def fail(problem: str):
        raise MoveNetError(f"{label}: {problem}")

    if not isinstance(coco, dict):
        fail("expected a JSON object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if key not in coco:
            fail(f"missing '{key}'")
        if not isinstance(coco[key], list):
            fail(f"'{key}' is not a list")
    person_id, category = _person_category(coco, schema, fail)
    order = _keypoint_order(category, schema, fail)  # the file's keypoints by name, not by place
    file_names = [str(n) for n in category.get("keypoints") or schema.keypoints]
    file_k = len(file_names)
    left_out = sorted(set(range(file_k)) - set(order)) if order is not None else []  # (a schema of some of them)
    if order is not None:
        category = _reordered_category(category, order, schema)

    images: dict[int, ImageEntry] = {}
    image_dicts = []
    for i, im in enumerate(coco["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            fail(f"images[{i}]: needs 'id' and 'file_name'")
        image_id = _as_int(im["id"], f"images[{i}].id", fail)
        if image_id in images:
            fail(f"images[{i}]: duplicate image id {image_id}")
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            fail(f"image {image_id}: 'file_name' is not a non-empty string")
        width = _as_int(im.get("width", 0), f"image {image_id} width", fail)
        height = _as_int(im.get("height", 0), f"image {image_id} height", fail)
        if width < 0 or height < 0:  # 0: not given
            fail(f"image {image_id}: negative size {width}x{height}")
        images[image_id] = ImageEntry(image_id, _image_path(root, im["file_name"]), width, height)
        image_dicts.append(im)
    # One photo under several ids (a converter that writes an entry per person) is one image:
    # otherwise each id's people would be background in the other's heatmaps.
    first_id, alias = {}, {}
    for image_id, entry in images.items():
        first = first_id.setdefault(os.path.normpath(entry.path), image_id)
        if first != image_id:
            alias[image_id] = first

    annotations, seen, others, at_origin, labels_left_out = [], set(), Counter(), 0, 0
    for i, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict):
            fail(f"annotations[{i}] is not an object")
        if "category_id" in ann and not _same_id(ann["category_id"], person_id):
            if isinstance(ann.get("keypoints"), list) and len(ann["keypoints"]) == 3 * schema.num_keypoints:
                others[str(ann["category_id"])] += 1
            continue
        if "category_id" not in ann and "categories" in coco:
            fail(f"annotations[{i}]: missing 'category_id'")
        person, placeholders = _parse_person(ann, i, schema, images, fail, file_k)
        if person.id in seen:
            fail(f"annotations[{i}]: duplicate annotation id {person.id}")
        seen.add(person.id)
        at_origin += placeholders
        if order is not None:
            labels_left_out += int((person.keypoints[left_out, 2] > 0).sum())
            person.keypoints = person.keypoints[order]
        person.image_id = alias.get(person.image_id, person.image_id)
        normal = {**ann, "image_id": person.image_id, "category_id": person_id, "bbox": list(person.bbox),
                  "area": person.area, "iscrowd": int(person.iscrowd), "num_keypoints": person.num_labelled}
        if order is not None or placeholders or not ann.get("keypoints"):  # (pycocotools reads every person's)
            normal["keypoints"] = [float(v) for v in person.keypoints.reshape(-1)]
        images[person.image_id].people.append(person)
        annotations.append(normal)
    if others:
        warnings.warn(f"{label}: {sum(others.values())} annotations with keypoints in other categories "
                      f"({', '.join(f'id {c}: {n}' for c, n in sorted(others.items()))}) left out; only category "
                      f"{person_id} ({category.get('name')}) is read", DataWarning, stacklevel=3)
    if left_out:
        warnings.warn(f"{label}: its people have {file_k} keypoints, the {schema.name} schema {schema.num_keypoints}; "
                      f"the others ({some_of(file_names[i] for i in left_out)}: {labels_left_out} labelled points) "
                      "are left out", DataWarning,
                      stacklevel=3)
    if at_origin:
        warnings.warn(f"{label}: {at_origin} keypoints labelled at (0, 0) read as not labelled (an annotation "
                      "tool's placeholder for a missing point)", DataWarning, stacklevel=3)
    if alias:
        dup, first = next(iter(alias.items()))
        sized = [(i, j) for i, j in alias.items()
                 if (images[i].width, images[i].height) != (images[j].width, images[j].height)]
        sizes = (f"; {len(sized)} of them give another size than the first entry (ids {sized[0][1]} and "
                 f"{sized[0][0]}: {images[sized[0][1]].width}x{images[sized[0][1]].height} and "
                 f"{images[sized[0][0]].width}x{images[sized[0][0]].height}), whose size is kept") if sized else ""
        warnings.warn(f"{label}: {len(alias)} image entries name a file listed before (first: "
                      f"{images[dup].path.name}, ids {first} and {dup}); each file is read as one image with the "
                      f"people of all its entries{sizes}", DataWarning, stacklevel=3)
        image_dicts = [im for im in image_dicts if int(im["id"]) not in alias]
        images = {i: e for i, e in images.items() if i not in alias}
    normalised = {"images": image_dicts, "annotations": annotations, "categories": [category]}
    if isinstance(coco.get("info"), dict):
        normalised["info"] = coco["info"]
    return KeypointDataset(name, list(images.values()), normalised, schema)


def _same_id(a, b) -> bool:
    """Category ids as annotation tools write them: 1, 1.0 and "1" are the same."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _person_category(coco: dict, schema: KeypointSchema, fail) -> tuple[int, dict]:
    """The person category's id and dict; a file without categories is all people (id 1)."""
    if "categories" not in coco:
        return 1, {**coco_person_category(), "keypoints": list(schema.keypoints)}
    cats = coco["categories"]
    if not isinstance(cats, list):
        fail("'categories' is not a list")
    dicts = [c for c in cats if isinstance(c, dict)]
    with_points = [c for c in dicts if isinstance(c.get("keypoints"), list) and c["keypoints"]
                   and (len(c["keypoints"]) == schema.num_keypoints or _names_all_of(c["keypoints"], schema))]
    people = [c for c in dicts if c.get("name") == "person"]
    # a 'person' category with the keypoints; else the one category with them (a 'person' box
    # category beside a 'human' one with keypoints, a hand, an animal); else 'person' itself
    candidates = [c for c in people if c in with_points] or (with_points if len(with_points) == 1 else people)
    if len(with_points) > 1 and not any(c in with_points for c in candidates):
        fail(f"{len(with_points)} categories have {schema.num_keypoints} keypoints "
             f"({', '.join(repr(c.get('name')) for c in with_points)}) and none is 'person': keep one of them")
    if not candidates:
        fail(f"no 'person' category, nor one category with {schema.num_keypoints} keypoints")
    category = candidates[0]
    if "id" not in category:
        fail(f"the {category.get('name')!r} category has no 'id'")
    names = category.get("keypoints") or None  # ([]: names none, as a missing list)
    if names is not None and len(names) != schema.num_keypoints and not _names_all_of(names, schema):
        missing = [n for n in schema.keypoints if n not in list(map(str, names))]
        fail(f"the person category has {len(names)} keypoints, the {schema.name} schema "
             f"{schema.num_keypoints}, and {some_of(missing)} of the schema's are not among them")
    return category["id"], category


def _names_all_of(names, schema: KeypointSchema) -> bool:
    """Whether a category's keypoint ``names`` include every keypoint of ``schema`` (a COCO file
    read with a schema of some of its keypoints)."""
    return isinstance(names, list) and set(schema.keypoints) <= set(map(str, names))


def _keypoint_order(category: dict, schema: KeypointSchema, fail) -> list[int] | None:
    """Where each of the schema's keypoints sits in the file's ``keypoints`` lists, from the
    category's keypoint names (the schema's may be some of them): None when the file's order is
    the schema's (or it names none)."""
    names = category.get("keypoints") or None
    if names is None or list(names) == list(schema.keypoints):
        return None
    twice = next((n for n in map(str, names) if list(map(str, names)).count(n) > 1), None)
    if twice is not None:
        fail(f"the person category names the keypoint {twice!r} twice")
    if not _names_all_of(names, schema):
        file_names = list(map(str, names))
        missing = [n for n in schema.keypoints if n not in file_names]
        others = [n for n in file_names if n not in schema.keypoints]
        fail(f"the person category's keypoints are not those of the {schema.name} schema: it lacks "
             f"{some_of(missing)}{f' and names {some_of(others)} instead' if others else ''}; name them as the "
             "schema does, or set the schema")
    return [list(map(str, names)).index(k) for k in schema.keypoints]


def _reordered_category(category: dict, order: list[int], schema: KeypointSchema) -> dict:
    """The category with the schema's keypoint order (a COCO skeleton, 1-based, renumbered)."""
    new_index = {old: new for new, old in enumerate(order)}
    out = {**category, "keypoints": list(schema.keypoints)}
    if isinstance(category.get("skeleton"), list):
        try:
            edges = [(int(a) - 1, int(b) - 1) for a, b in category["skeleton"]]
            out["skeleton"] = [[new_index[a] + 1, new_index[b] + 1] for a, b in edges  # (bones of left-out points go)
                               if a in new_index and b in new_index]
        except (TypeError, ValueError):
            out.pop("skeleton")
    return out


def _parse_person(ann: dict, i: int, schema: KeypointSchema, images: dict, fail,
                  k: int | None = None) -> tuple[PersonAnnotation, int]:
    """The annotation (its ``k`` keypoints as the file lists them; default the schema's), and how
    many of them were (0, 0) placeholders read as not labelled."""
    if "id" not in ann or "image_id" not in ann:
        fail(f"annotations[{i}]: needs 'id' and 'image_id'")
    ann_id = _as_int(ann["id"], f"annotations[{i}].id", fail)
    where = f"annotation {ann_id}"
    image_id = _as_int(ann["image_id"], f"{where} image_id", fail)
    if image_id not in images:
        fail(f"{where}: unknown image_id {image_id}")
    k = k or schema.num_keypoints
    # no keypoints at all: a person with a box only (a crowd region, an instances file's people)
    given = ann.get("keypoints")
    kpts = _as_floats([0.0] * 3 * k if given is None or given == [] else given, f"{where} keypoints", fail)
    if kpts.size != 3 * k:
        whose = schema.name if k == schema.num_keypoints else "the keypoints its category names"
        fail(f"{where}: {kpts.size} keypoint values, expected {3 * k} ({k} x, y, v for {whose})")
    kpts = kpts.reshape(k, 3)
    if not np.isin(kpts[:, 2], (0, 1, 2)).all():
        fail(f"{where}: keypoint visibility must be 0, 1 or 2")
    # (0, 0) with v > 0: an annotation tool's placeholder (CVAT, scripts) for a point not labelled
    placeholder = (kpts[:, 2] > 0) & (kpts[:, 0] == 0) & (kpts[:, 1] == 0)
    kpts[placeholder] = 0.0
    if "bbox" in ann:
        box = _as_floats(ann["bbox"], f"{where} bbox", fail)
        if box.size != 4 or box[2] < 0 or box[3] < 0:
            fail(f"{where}: bbox must be [x, y, w, h] with w, h >= 0")
        bbox = tuple(float(v) for v in box)
    if "bbox" not in ann or min(bbox[2:]) <= 0:  # none, or an empty one: the labelled keypoints' box
        bbox = _keypoint_box(kpts)
    if "area" in ann and (isinstance(ann["area"], bool) or not isinstance(ann["area"], (int, float))):
        fail(f"{where}: 'area' is not a number")
    # OKS scale: the annotation's area (COCO: the segmentation's), else the box's; 0 or NaN counts as not given
    has_area = "area" in ann and 0 < ann["area"] < math.inf
    area = float(ann["area"]) if has_area else bbox[2] * bbox[3]
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1, "0", "1"):  # (True and False are 1 and 0)
        fail(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
    return PersonAnnotation(ann_id, image_id, kpts, bbox, area, int(crowd) == 1), int(placeholder.sum())


def _keypoint_box(kpts: np.ndarray) -> tuple[float, float, float, float]:
    labelled = kpts[kpts[:, 2] > 0, :2]
    if len(labelled) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    (x0, y0), (x1, y1) = labelled.min(axis=0), labelled.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def _as_int(value, what: str, fail) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value != int(value)):
        fail(f"{what} is not an integer ({value!r})")
    return int(value)


def _as_floats(value, what: str, fail) -> np.ndarray:
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in value):
        fail(f"{what} must be a list of numbers")
    arr = np.asarray(value, np.float64)
    if not np.isfinite(arr).all():
        fail(f"{what} contains a non-finite number")
    return arr
