"""Annotation formats. COCO person-keypoints JSON is the canonical format; other data sets
are converted into it (``lsp_to_coco``). ``load_keypoint_dataset`` reads any of them into one
validated structure."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MoveNetError
from .schema import COCO17, KeypointSchema

# LSP joint order: R ankle, R knee, R hip, L hip, L knee, L ankle, R wrist, R elbow,
# R shoulder, L shoulder, L elbow, L wrist, neck, head top (person-centric left/right).
LSP_TO_COCO = {0: 16, 1: 14, 2: 12, 3: 11, 4: 13, 5: 15, 6: 10, 7: 8, 8: 6, 9: 5, 10: 7, 11: 9}
LSP_NECK, LSP_HEAD_TOP = 12, 13


def _read_lsp_mat(folder: Path) -> np.ndarray:
    """``joints.mat`` -> [3,14,N] (x, y, occluded flag) in LSP joint order."""
    from scipy.io import loadmat

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
    return joints


def read_lsp_joints(folder: str | os.PathLike) -> tuple[list[Path], np.ndarray]:
    """LSP folder (``joints.mat`` + ``images/``) -> (image paths, [N,17,3] COCO keypoints with
    COCO visibility: 2 visible, 1 occluded, 0 not annotated)."""
    folder = Path(folder)
    joints = _read_lsp_mat(folder)
    return _lsp_image_paths(folder, joints.shape[2]), _lsp_to_coco_keypoints(joints)


def _lsp_image_paths(folder: Path, n: int) -> list[Path]:
    return [folder / "images" / f"im{i + 1:04d}.jpg" for i in range(n)]


def _lsp_to_coco_keypoints(joints: np.ndarray) -> np.ndarray:
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
    import cv2

    joints = _read_lsp_mat(Path(folder))
    images, kpts = _lsp_image_paths(Path(folder), joints.shape[2]), _lsp_to_coco_keypoints(joints)
    root = Path(relative_to) if relative_to else Path(folder) / "images"
    out = {"images": [], "annotations": [], "categories": [coco_person_category()]}
    for i, (path, k) in enumerate(zip(images, kpts), start=1):
        neck, head_top = joints[:2, LSP_NECK, i - 1], joints[:2, LSP_HEAD_TOP, i - 1]
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
            # Not COCO keypoints, kept for PCKh (head segment length).
            "neck": [round(float(v), 3) for v in neck],
            "head_top": [round(float(v), 3) for v in head_top],
        })
    return out


def coco_person_category() -> dict:
    return {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO17.keypoints), "skeleton": [[a + 1, b + 1] for a, b in COCO17.skeleton]}


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


def load_keypoint_dataset(source: str | os.PathLike | dict, image_root: str | os.PathLike | None = None,
                          schema: KeypointSchema = COCO17, check_files: bool = False) -> KeypointDataset:
    """Read person keypoints from any supported source into one validated structure.

    ``source``: a COCO person-keypoints JSON file, a folder holding ``person_keypoints.json``,
    an LSP folder (``joints.mat`` + ``images/``) or an already-loaded COCO dict. Image paths are
    resolved against ``image_root`` (default: an ``images/`` folder beside the JSON if there is
    one, else the JSON's folder; the working directory for a dict). Only the person category
    is kept; crowd annotations are kept with ``iscrowd=True``. With ``check_files`` every image
    file must exist, otherwise a missing file is reported when it is read."""
    coco, label, default_root, name = _read_source(source)
    root = Path(image_root) if image_root is not None else default_root
    dataset = _parse_coco(coco, label, root, schema, name)
    if check_files:
        missing = [e.path for e in dataset.images if not e.path.is_file()]
        if missing:
            raise MoveNetError(f"{label}: {len(missing)} of {len(dataset.images)} image files missing "
                               f"(first: {missing[0]})")
    return dataset


def _read_source(source) -> tuple[object, str, Path, str]:
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
        return _read_json(json_path), str(json_path), _default_image_root(json_path), path.name
    if not path.exists():
        raise MoveNetError(f"{path}: file not found")
    return _read_json(path), str(path), _default_image_root(path), path.stem


def _default_image_root(json_path: Path) -> Path:
    beside = json_path.parent / "images"
    return beside if beside.is_dir() else json_path.parent


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MoveNetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise MoveNetError(f"{path}: not a JSON text file") from None
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
        images[image_id] = ImageEntry(image_id, root / im["file_name"], width, height)
        image_dicts.append(im)

    annotations, seen = [], set()
    for i, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict):
            fail(f"annotations[{i}] is not an object")
        if "category_id" in ann and ann["category_id"] != person_id:
            continue
        if "category_id" not in ann and "categories" in coco:
            fail(f"annotations[{i}]: missing 'category_id'")
        person = _parse_person(ann, i, schema, images, fail)
        if person.id in seen:
            fail(f"annotations[{i}]: duplicate annotation id {person.id}")
        seen.add(person.id)
        images[person.image_id].people.append(person)
        annotations.append({**ann, "category_id": person_id, "bbox": list(person.bbox), "area": person.area,
                            "iscrowd": int(person.iscrowd), "num_keypoints": person.num_labelled})
    normalised = {"images": image_dicts, "annotations": annotations, "categories": [category]}
    if isinstance(coco.get("info"), dict):
        normalised["info"] = coco["info"]
    return KeypointDataset(name, list(images.values()), normalised, schema)


def _person_category(coco: dict, schema: KeypointSchema, fail) -> tuple[int, dict]:
    """The person category's id and dict; a file without categories is all people (id 1)."""
    if "categories" not in coco:
        return 1, {**coco_person_category(), "keypoints": list(schema.keypoints)}
    cats = coco["categories"]
    if not isinstance(cats, list):
        fail("'categories' is not a list")
    people = [c for c in cats if isinstance(c, dict) and c.get("name") == "person"]
    if not people:
        fail("no 'person' category")
    category = people[0]
    if "id" not in category:
        fail("the 'person' category has no 'id'")
    names = category.get("keypoints")
    if names is not None and len(names) != schema.num_keypoints:
        fail(f"the person category has {len(names)} keypoints, the {schema.name} schema "
             f"{schema.num_keypoints}")
    return category["id"], category


def _parse_person(ann: dict, i: int, schema: KeypointSchema, images: dict, fail) -> PersonAnnotation:
    if "id" not in ann or "image_id" not in ann:
        fail(f"annotations[{i}]: needs 'id' and 'image_id'")
    ann_id = _as_int(ann["id"], f"annotations[{i}].id", fail)
    where = f"annotation {ann_id}"
    image_id = _as_int(ann["image_id"], f"{where} image_id", fail)
    if image_id not in images:
        fail(f"{where}: unknown image_id {image_id}")
    if "keypoints" not in ann:
        fail(f"{where}: no 'keypoints'")
    kpts = _as_floats(ann["keypoints"], f"{where} keypoints", fail)
    k = schema.num_keypoints
    if kpts.size != 3 * k:
        fail(f"{where}: {kpts.size} keypoint values, expected {3 * k} ({k} x, y, v for {schema.name})")
    kpts = kpts.reshape(k, 3)
    if not np.isin(kpts[:, 2], (0, 1, 2)).all():
        fail(f"{where}: keypoint visibility must be 0, 1 or 2")
    if "bbox" in ann:
        box = _as_floats(ann["bbox"], f"{where} bbox", fail)
        if box.size != 4 or box[2] < 0 or box[3] < 0:
            fail(f"{where}: bbox must be [x, y, w, h] with w, h >= 0")
        bbox = tuple(float(v) for v in box)
    else:
        bbox = _keypoint_box(kpts)
    if "area" in ann and (isinstance(ann["area"], bool) or not isinstance(ann["area"], (int, float))):
        fail(f"{where}: 'area' is not a number")
    area = float(ann["area"]) if "area" in ann else bbox[2] * bbox[3]
    return PersonAnnotation(ann_id, image_id, kpts, bbox, area, bool(ann.get("iscrowd", 0)))


def _keypoint_box(kpts: np.ndarray) -> tuple[float, float, float, float]:
    labelled = kpts[kpts[:, 2] > 0, :2]
    if len(labelled) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    (x0, y0), (x1, y1) = labelled.min(axis=0), labelled.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def _as_int(value, what: str, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
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
