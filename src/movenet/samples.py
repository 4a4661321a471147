"""Training samples: one square crop per target person with all targets of ``targets.py``.

``PoseSampleDataset`` indexes people from one or more ``datasets.KeypointDataset`` sources into
flat numpy arrays (no per-person Python objects, so forked loader workers do not copy them and
an index of full COCO builds in about 2 s) and reads each image lazily in ``__getitem__``.
Filters (minimum labelled keypoints, crowd images, people per image, missing files) are
counted in ``skipped`` and printed as one line when the index is built.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from . import augment, targets
from .augment import AugmentConfig, Geometry
from .errors import DataWarning, MoveNetError, counted
from .image import read_image, size_mismatch
from .schema import COCO17, KeypointSchema


@dataclass
class DataConfig:
    """Where the data comes from and how samples and targets are made.

    ``sources``: list of ``{"path": ..., "image_root": ..., "weight": 1.0}`` (COCO JSON, a
    folder with ``person_keypoints.json``, an LSP folder, or an MPII ``.mat``/``.json``).
    Validation uses ``val_sources`` when given, else ``val_fraction`` of each source's images
    (split by image, fixed by ``split_seed``). ``train_images`` > 0 keeps only that many
    training images of each source (nested: a smaller number keeps a subset of a larger one's
    images; for learning curves). Target settings are those of ``targets.TargetParams``."""

    sources: list[dict] = field(default_factory=list)
    val_sources: list[dict] = field(default_factory=list)
    val_fraction: float = 0.05
    split_seed: int = 0
    train_images: int = 0
    input_size: int = 192
    num_workers: int = 2
    min_keypoints: int = 1
    skip_crowd: bool = True  # skip images with crowd regions: their people are unlabelled
    max_people: int = 0  # skip images with more annotated people than this (0: no limit)
    crop_expand: float = 1.25
    on_bad_image: str = "error"  # "error" | "skip" (missing files counted, corrupt ones replaced)
    kernel: str = "gaussian"
    sigma_factor: float = 0.05
    sigma_min: float = 1.0
    sigma_max: float = 3.0
    center_sigma_scale: float = 1.0
    regression_radius: int = 1
    offset_radius: int = 1
    center_mode: str = "box"
    center_all_people: bool = True

    def __post_init__(self) -> None:
        self.sources = [_source_dict(s) for s in self.sources]
        self.val_sources = [_source_dict(s) for s in self.val_sources]
        if self.input_size % 32:
            raise ValueError(f"data.input_size must be a multiple of 32, got {self.input_size}")
        if self.on_bad_image not in ("error", "skip"):
            raise ValueError(f"data.on_bad_image must be 'error' or 'skip', got {self.on_bad_image!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.train_images < 0:
            raise ValueError(f"data.train_images must be >= 0 (0: all), got {self.train_images}")
        for name in ("num_workers", "min_keypoints", "max_people"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        if not self.crop_expand > 0:
            raise ValueError(f"data.crop_expand must be > 0, got {self.crop_expand}")
        self.target_params()  # validates the target settings

    def target_params(self) -> targets.TargetParams:
        names = {f.name for f in fields(targets.TargetParams)}
        return targets.TargetParams(**{k: v for k, v in asdict(self).items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown data config keys: {sorted(unknown)}")
        return cls(**d)


def _source_dict(s) -> dict:
    if isinstance(s, (str, os.PathLike)):
        s = {"path": str(s)}
    if not isinstance(s, dict) or "path" not in s:
        raise ValueError(f"a data source needs a 'path', got {s!r}")
    unknown = set(s) - {"path", "image_root", "weight"}
    if unknown:
        raise ValueError(f"unknown data source keys {sorted(unknown)} in {s!r}")
    try:
        if isinstance(s.get("weight"), bool):
            raise TypeError
        weight = float(s.get("weight", 1.0))
    except (TypeError, ValueError):
        raise ValueError(f"a data source's weight must be a number, got {s.get('weight')!r} for {s['path']}") from None
    if not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"a data source's weight must be a finite number > 0, got {weight} for {s['path']}")
    root = s.get("image_root")
    return {"path": os.path.expanduser(str(s["path"])),  # (~ as a shell would; YAML does not)
            "image_root": os.path.expanduser(str(root)) if root is not None else None, "weight": weight}


# ---------------------------------------------------------------- index
@dataclass
class PeopleIndex:
    """Flat arrays over all usable people (crowd-free, >= 1 labelled keypoint) of the kept
    images; people of one image are contiguous. ``targets``: the people that make samples."""

    keypoints: np.ndarray      # [N,K,3] float32, original pixels
    boxes: np.ndarray          # [N,4] float32 (x, y, w, h): bbox united with the keypoint box
    ann_ids: np.ndarray        # [N] int64
    image_of: np.ndarray       # [N] int64 index into the image arrays
    image_paths: np.ndarray    # [M] bytes (utf-8 paths)
    image_ids: np.ndarray      # [M] int64
    image_start: np.ndarray    # [M] int64 first person of the image
    image_count: np.ndarray    # [M] int64 people of the image
    image_source: np.ndarray   # [M] int64 source index
    image_sizes: np.ndarray    # [M,2] int64 (width, height) from the annotation file, 0 where not given
    targets: np.ndarray        # [T] int64 person indices
    skipped: Counter


def build_index(sources: list, cfg: DataConfig, schema: KeypointSchema = COCO17) -> PeopleIndex:
    """Apply the filters and pack ``sources`` (KeypointDataset list) into a ``PeopleIndex``."""
    k = schema.num_keypoints
    kpts, bboxes, sizes, ann_ids, image_of, candidate = [], [], [], [], [], []
    paths, image_ids, starts, counts, image_source, image_sizes = [], [], [], [], [], []
    skipped: Counter = Counter()
    missing: list[Path] = []
    for s, ds in enumerate(sources):
        if ds.schema.num_keypoints != k:
            raise MoveNetError(f"{ds.name}: {ds.schema.num_keypoints} keypoints, the schema {schema.name} has {k}")
        for entry in ds.images:
            people = [p for p in entry.people if not p.iscrowd]
            if cfg.skip_crowd and len(people) < len(entry.people):
                skipped["images with crowd regions"] += 1
                continue
            if cfg.max_people and len(people) > cfg.max_people:
                skipped[f"images with more than {cfg.max_people} people"] += 1
                continue
            points = [_without_far_keypoints(p.keypoints, entry.width, entry.height, skipped) for p in people]
            labelled = [int(np.count_nonzero(kp[:, 2])) for kp in points]
            usable = [(p, kp, n) for p, kp, n in zip(people, points, labelled) if n > 0]
            skipped["people without keypoints"] += len(people) - len(usable)
            few = sum(1 for _, _, n in usable if n < cfg.min_keypoints)
            skipped[f"people with fewer than {cfg.min_keypoints} keypoints"] += few
            if len(usable) == few:
                skipped["images without a target person"] += 1
                continue
            if not os.path.isfile(entry.path):
                missing.append(Path(entry.path))
                skipped["images with a missing file"] += 1
                continue
            starts.append(len(kpts))
            for p, kp, n in usable:
                candidate.append(n >= cfg.min_keypoints)
                kpts.append(kp)
                bboxes.append(p.bbox)
                sizes.append((entry.width, entry.height))
                ann_ids.append(p.id)
                image_of.append(len(paths))
            paths.append(os.fsencode(str(entry.path)))
            image_ids.append(entry.id)
            counts.append(len(usable))
            image_source.append(s)
            image_sizes.append((entry.width, entry.height))
    if missing and cfg.on_bad_image == "error":
        raise MoveNetError(f"{missing[0]}: image file not found ({len(missing)} missing in all; "
                           "on_bad_image=skip skips them)")
    keypoints = np.array(kpts, np.float32).reshape(-1, k, 3)
    bboxes, sizes = np.array(bboxes, np.float64).reshape(-1, 4), np.array(sizes, np.float64).reshape(-1, 2)
    boxes = person_boxes(bboxes, keypoints, sizes)
    candidate = np.array(candidate, bool)
    unclipped = person_boxes(bboxes, keypoints, np.zeros_like(sizes))
    inside = _touch_image(unclipped, sizes)
    skipped["people outside their image"] += int((candidate & ~inside).sum())
    # labelled points at one spot and no box: nothing tells the person's size, so no crop to
    # teach it in (it is still in the heatmaps of the people around it)
    sized = unclipped[:, 2:].max(axis=1) > 0
    skipped["people with no size to crop (labelled points at one spot, no box)"] += int((candidate & inside & ~sized).sum())
    inside &= sized
    return PeopleIndex(
        keypoints=keypoints, boxes=boxes.astype(np.float32),
        ann_ids=np.array(ann_ids, np.int64), image_of=np.array(image_of, np.int64),
        image_paths=np.array(paths, dtype=object).astype(bytes) if paths else np.array([], bytes),
        image_ids=np.array(image_ids, np.int64), image_start=np.array(starts, np.int64),
        image_count=np.array(counts, np.int64), image_source=np.array(image_source, np.int64),
        image_sizes=np.array(image_sizes, np.int64).reshape(-1, 2),
        targets=np.flatnonzero(candidate & inside).astype(np.int64),
        skipped=Counter({key: v for key, v in skipped.items() if v}))


def _touch_image(boxes: np.ndarray, image_sizes: np.ndarray) -> np.ndarray:
    """[N] whether each unclipped box (x, y, w, h) meets its image, edges included: keypoints in
    a line make a box without width or height that is still a person there."""
    lo, hi = boxes[:, :2], boxes[:, :2] + boxes[:, 2:]
    known = (image_sizes > 0).all(axis=1)
    return ~known | ((hi >= 0) & (lo <= image_sizes)).all(axis=1)


def _without_far_keypoints(keypoints: np.ndarray, width: int, height: int, skipped: Counter) -> np.ndarray:
    """Keypoints far outside their image (``datasets.far_outside_image``): unlabelled, and counted."""
    from .datasets import far_outside_image

    far = far_outside_image(keypoints, width, height)
    if not far.any():
        return keypoints
    skipped["keypoints far outside their image (unlabelled)"] += int(far.sum())
    out = keypoints.copy()
    out[far, 2] = 0
    return out


def person_boxes(bboxes: np.ndarray, kpts: np.ndarray, image_sizes: np.ndarray) -> np.ndarray:
    """Crop boxes [N,4] (x, y, w, h): each annotated box united with its labelled keypoints'
    box (the keypoints' box alone where the annotated one is empty), clipped to the image
    where its size is known, so keypoints annotated outside the image do not drag the crop
    into empty space (they stay labelled and are masked when outside the crop)."""
    lab = kpts[..., 2] > 0
    k_lo = np.where(lab[..., None], kpts[..., :2], np.inf).min(axis=1)
    k_hi = np.where(lab[..., None], kpts[..., :2], -np.inf).max(axis=1)
    b_lo, b_hi = bboxes[:, :2], bboxes[:, :2] + bboxes[:, 2:]
    has_box = (bboxes[:, 2:] > 0).all(axis=1)[:, None]
    lo = np.where(has_box, np.minimum(b_lo, k_lo), k_lo)
    hi = np.where(has_box, np.maximum(b_hi, k_hi), k_hi)
    known = (image_sizes > 0).all(axis=1)[:, None]
    lo = np.where(known, np.clip(lo, 0, image_sizes), lo)
    hi = np.where(known, np.clip(hi, 0, image_sizes), hi)
    return np.concatenate([lo, hi - lo], axis=1)


# ---------------------------------------------------------------- dataset
class PoseSampleDataset(torch.utils.data.Dataset):
    """One sample per target person (see the training contract for the returned dict).

    ``dataset``: a ``KeypointDataset`` or a list of them (one per source; ``meta["source"]``
    is the position). ``train`` turns the augmentation of ``aug_cfg`` on."""

    def __init__(self, dataset, data_cfg: DataConfig | None = None, aug_cfg: AugmentConfig | None = None,
                 train: bool = True, schema: KeypointSchema = COCO17,
                 source_weights: list[float] | None = None, verbose: bool = True):
        self.cfg = data_cfg or DataConfig()
        self.aug = aug_cfg or AugmentConfig()
        self.train = train
        self.schema = schema
        self.size = self.cfg.input_size
        self.params = self.cfg.target_params()
        self.flip_index = schema.flip_index()
        sources = list(dataset) if isinstance(dataset, (list, tuple)) else [dataset]
        self.source_names = [ds.name for ds in sources]
        if source_weights is None:
            same = len(self.cfg.sources) == len(sources)
            source_weights = [s["weight"] for s in self.cfg.sources] if same else [1.0] * len(sources)
        self.source_weights = [float(w) for w in source_weights]
        self.index = build_index(sources, self.cfg, schema)
        self.bad_images = 0
        self.size_warned: set[int] = set()  # images whose size differs from their annotation's
        if verbose:
            print(f"{'training' if self.train else 'validation'} data, {self.describe()}", file=sys.stderr)

    def __len__(self) -> int:
        return len(self.index.targets)

    @property
    def skipped(self) -> Counter:
        return self.index.skipped

    def describe(self) -> str:
        ix = self.index
        text = (f"{'+'.join(self.source_names)}: {counted(len(self), 'target people')} in "
                f"{counted(len(ix.image_ids), 'images')}")
        if ix.skipped:
            text += "; skipped " + ", ".join(counted(v, key) for key, v in sorted(ix.skipped.items()))
        return text

    # -------------------------------------------------------- geometry (no image needed)
    def geometry(self, i: int, rng: np.random.Generator | None = None) -> tuple[Geometry, np.ndarray]:
        """Crop geometry of sample ``i`` and its [2,3] matrix (original -> input pixels);
        random when training with augmentation and ``rng`` is given."""
        person = self.index.targets[i]
        geom = augment.base_geometry(self.index.boxes[person], self.cfg.crop_expand)
        if self.train and self.aug.enabled and rng is not None:
            geom = augment.random_geometry(geom, self.aug, rng)
        return geom, augment.crop_matrix(geom, self.size)

    def people_in_input(self, i: int, m: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """(target [K,3], others [P-1,K,3]) in input pixels, labels swapped when flipped."""
        ix = self.index
        person = ix.targets[i]
        img = ix.image_of[person]
        start, count = ix.image_start[img], ix.image_count[img]
        people = augment.transform_keypoints(ix.keypoints[start:start + count], m)
        if flip:
            people = augment.swap_labels(people, self.flip_index)
        j = person - start
        return people[j], np.delete(people, j, axis=0)

    # -------------------------------------------------------- sample
    def __getitem__(self, i: int) -> dict:
        rng = self._rng()
        for _ in range(10):
            try:
                return self._sample(i, rng)
            except MoveNetError as e:
                if self.cfg.on_bad_image == "error":
                    raise
                self.bad_images += 1
                bad = self.path(i)
                warnings.warn(f"unreadable image skipped: {e}", DataWarning, stacklevel=2)
                if not self.train:  # validation leaves the person out of its scores instead
                    sample = self._sample(i, None, image=np.zeros((1, 1, 3), np.uint8))
                    sample["meta"]["skipped"] = torch.tensor(True)
                    return sample
                i = (i + 1) % len(self)
        raise MoveNetError(f"{bad}: 10 unreadable images in a row; check the data")

    def path(self, i: int) -> str:
        return os.fsdecode(self.index.image_paths[self.index.image_of[self.index.targets[i]]])

    def _rng(self) -> np.random.Generator | None:
        if not (self.train and self.aug.enabled):
            return None
        # Seeded from torch so loader workers differ and torch.manual_seed reproduces a run.
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,))))

    def _sample(self, i: int, rng: np.random.Generator | None, image: np.ndarray | None = None) -> dict:
        ix = self.index
        person = ix.targets[i]
        geom, m = self.geometry(i, rng)
        img = ix.image_of[person]
        path = self.path(i)
        if image is None:  # (given: a stand-in for an unreadable image, no size to check)
            image = read_image(path)
            if img not in self.size_warned:  # once per image (and loader worker)
                self.size_warned.add(img)
                problem = size_mismatch(path, image.shape, *ix.image_sizes[img])
                if problem:
                    warnings.warn(problem, DataWarning, stacklevel=2)
        crop = augment.warp(image, m, self.size)
        if rng is not None:
            crop = augment.photometric(crop, self.aug, rng)
        target, others = self.people_in_input(i, m, geom.flip)
        enc = targets.encode(target, others, self.size, self.params)
        taught = target.copy()
        taught[~targets.in_grid(target, self.size), 2] = 0
        x0, y0 = geom.center[0] - geom.side / 2, geom.center[1] - geom.side / 2
        sample = {"image": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1), np.float32))}
        for key in ("heatmaps", "heatmap_weight", "center", "center_weight", "regression",
                    "regression_mask", "offsets", "offset_mask"):
            sample[key] = torch.from_numpy(enc[key])
        sample["center_cell"] = torch.from_numpy(enc["center_cell"])
        sample["keypoints"] = torch.from_numpy(taught.astype(np.float32))
        sample["has_labels"] = torch.tensor(True)
        sample["meta"] = {
            "image_id": torch.tensor(ix.image_ids[img]),
            "ann_id": torch.tensor(ix.ann_ids[person]),
            "box": torch.tensor([x0, y0, geom.side, geom.side], dtype=torch.float32),
            "affine": torch.from_numpy(augment.invert_affine(m).astype(np.float32)),
            "flip": torch.tensor(geom.flip),
            "source": torch.tensor(ix.image_source[img]),
            "index": torch.tensor(i),
            "skipped": torch.tensor(False),  # True: a stand-in for an unreadable validation image
        }
        return sample


# ---------------------------------------------------------------- splits, sources, weights
def split_image_ids(dataset, val_fraction: float, seed: int = 0,
                    train_images: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic split by image: images ranked by a hash of (seed, image id); the first
    ``round(n * val_fraction)`` go to validation, the next ``train_images`` (all when 0) to
    training. Stable across runs and machines; a larger ``val_fraction`` or ``train_images``
    only adds images to its side."""
    ids = [e.id for e in dataset.images]
    ranked = sorted(ids, key=lambda i: (zlib.crc32(f"{seed}:{i}".encode()), i))
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction > 0 and n_val == 0 and len(ids) > 1:
        n_val = 1
    val = set(ranked[:n_val])
    train = set(ranked[n_val:n_val + train_images] if train_images else ranked[n_val:])
    return [i for i in ids if i in train], [i for i in ids if i in val]


def load_sources(sources: list[dict], schema: KeypointSchema = COCO17) -> list:
    from .datasets import load_keypoint_dataset

    return [load_keypoint_dataset(s["path"], s.get("image_root"), schema=schema) for s in sources]


def split_sources(data_cfg: DataConfig, schema: KeypointSchema = COCO17) -> tuple[list, list]:
    """(training parts, validation parts): one loaded data set per source each (no validation
    parts without ``val_sources`` or ``val_fraction``)."""
    if not data_cfg.sources:
        raise MoveNetError("data config: data.sources is empty")
    loaded = load_sources(data_cfg.sources, schema)
    val_parts = load_sources(data_cfg.val_sources, schema) if data_cfg.val_sources else []
    val_fraction = 0.0 if data_cfg.val_sources else data_cfg.val_fraction
    train_parts = []
    for ds in loaded:
        train_ids, val_ids = split_image_ids(ds, val_fraction, data_cfg.split_seed, data_cfg.train_images)
        train_parts.append(ds.subset(train_ids) if len(train_ids) < len(ds.images) else ds)
        if val_ids:
            val_parts.append(ds.subset(val_ids))
    if data_cfg.val_sources or (val_parts and len(loaded) > 1):  # (one source's split shares nothing)
        why = ("data.val_sources and data.sources share them" if data_cfg.val_sources else
               "two data.sources share them, and each source's split put them on another side")
        warn_shared_images([e.path for part in val_parts for e in part.images],
                           [e.path for part in train_parts for e in part.images], why)
    return train_parts, val_parts


def warn_shared_images(val_paths: list, train_paths: list, why: str, what: str = "training images") -> None:
    """Validation images that are also training images (``val_sources`` chosen by hand, one
    photo in two sources, unlabelled images): their scores would not be held-out ones.
    Compared by image file."""
    from .fileio import shared_files

    shared = shared_files(val_paths, train_paths)
    if shared:
        warnings.warn(f"{shared[0]}: {len(shared)} of the {len(val_paths)} validation images are also {what} "
                      f"({why}); their scores are not held-out scores", DataWarning, stacklevel=3)


def build_datasets(data_cfg: DataConfig, aug_cfg: AugmentConfig | None = None,
                   schema: KeypointSchema = COCO17, verbose: bool = True
                   ) -> tuple[PoseSampleDataset, PoseSampleDataset | None]:
    """(train, val) sample sets from the config's sources (val None when there is none)."""
    return datasets_from_parts(*split_sources(data_cfg, schema), data_cfg, aug_cfg, schema, verbose)


def datasets_from_parts(train_parts: list | None, val_parts: list, data_cfg: DataConfig,
                        aug_cfg: AugmentConfig | None = None, schema: KeypointSchema = COCO17,
                        verbose: bool = True) -> tuple[PoseSampleDataset | None, PoseSampleDataset | None]:
    """(train, val) sample sets of ``split_sources``' parts; train None when ``train_parts`` is
    (validation only), val None without validation parts. Each needs a target person."""
    train = val = None
    if train_parts is not None:
        weights = [s["weight"] for s in data_cfg.sources]
        train = PoseSampleDataset(train_parts, data_cfg, aug_cfg, True, schema, weights, verbose)
    if val_parts:
        val = PoseSampleDataset(val_parts, data_cfg, aug_cfg, False, schema, None, verbose)
    for part, use, sources in ((train, "training", data_cfg.sources),
                               (val, "validation", data_cfg.val_sources or data_cfg.sources)):
        if part is not None and len(part) == 0:
            paths = ", ".join(str(source["path"]) for source in sources)
            raise MoveNetError(f"{paths}: no target person for {use} ({part.describe()})")
    if train is not None and len(data_cfg.sources) > 1:  # a source without targets: its weight goes unused
        ix = train.index
        per_source = np.bincount(ix.image_source[ix.image_of[ix.targets]], minlength=len(data_cfg.sources))
        for source, n in zip(data_cfg.sources, per_source):
            if n == 0:
                warnings.warn(f"{source['path']}: no target person for training from this source (of "
                              f"data.sources; its weight {source['weight']:g} is not used)", DataWarning, stacklevel=2)
    return train, val


def sample_weights(dataset: PoseSampleDataset, aug_cfg: AugmentConfig | None = None) -> torch.Tensor:
    """Per-sample weights for ``torch.utils.data.WeightedRandomSampler`` (float64 [N]).

    With ``source_balance`` each source's samples share its configured weight (so a source
    weighted 2 is drawn twice as often as one weighted 1, whatever their sizes); with
    ``pose_clusters`` > 0 rare poses (small k-means clusters of normalised poses, within each
    source) are drawn more often. Without either, all ones."""
    aug = aug_cfg or dataset.aug
    ix = dataset.index
    source = ix.image_source[ix.image_of[ix.targets]]
    w = np.ones(len(dataset), np.float64)
    if aug.pose_clusters > 0:
        for s in np.unique(source):
            sel = source == s
            if aug.pose_clusters >= sel.sum():
                warnings.warn(f"{dataset.source_names[s]}: augment.pose_clusters {aug.pose_clusters} is not below its "
                              f"{counted(int(sel.sum()), 'training people')}: each pose is a cluster of its own, so "
                              "its poses are drawn evenly (use fewer clusters)", DataWarning, stacklevel=2)
            labels = augment.kmeans(augment.normalised_poses(ix.keypoints[ix.targets[sel]]),
                                    aug.pose_clusters, aug.pose_cluster_seed)
            w[sel] = augment.cluster_weights(labels, aug.pose_cluster_power)
    if aug.source_balance:
        for s in np.unique(source):
            sel = source == s
            w[sel] *= dataset.source_weights[s] / w[sel].sum()
        w *= len(w) / w.sum()
    return torch.from_numpy(w)


# ---------------------------------------------------------------- statistics
def target_sizes(dataset: PoseSampleDataset, augmented: bool, limit: int | None = None,
                 seed: int = 0) -> np.ndarray:
    """[n,2] = (side, area) of each target's keypoint box in input pixels, from the crop
    geometry alone (no image is read); ``augmented`` draws the random crops of training."""
    rng = np.random.default_rng(seed)
    n = len(dataset)
    picks = np.arange(n) if not limit or limit >= n else np.sort(rng.choice(n, limit, replace=False))
    train = dataset.train
    dataset.train = augmented
    try:
        out = np.zeros((len(picks), 2))
        for row, i in enumerate(picks):
            geom, m = dataset.geometry(int(i), rng if augmented else None)
            target, _ = dataset.people_in_input(int(i), m, geom.flip)
            box = targets.keypoint_box(target)
            w, h = box[2] - box[0], box[3] - box[1]
            out[row] = max(w, h), w * h
    finally:
        dataset.train = train
    return out


def plot_target_sizes(before: np.ndarray, after: np.ndarray, input_size: int, path: str | os.PathLike) -> None:
    from matplotlib.figure import Figure  # not pyplot: a caller's backend stays as it was

    from .fileio import atomic_path

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, col, label in ((axes[0], 0, "keypoint-box side / input side"),
                           (axes[1], 1, "keypoint-box area / input area")):
        norm = input_size if col == 0 else input_size ** 2
        bins = np.linspace(0, max(1.5, float(np.percentile(after[:, col] / norm, 99.5))), 60)
        ax.hist(before[:, col] / norm, bins=bins, alpha=0.6, label="no augmentation")
        ax.hist(after[:, col] / norm, bins=bins, alpha=0.6, label="training augmentation")
        ax.set_xlabel(label)
        ax.set_ylabel("targets")
        ax.legend()
    fig.suptitle(f"target sizes at input {input_size}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def size_summary(sizes: np.ndarray, input_size: int) -> str:
    q = (5, 25, 50, 75, 95)
    side = np.percentile(sizes[:, 0] / input_size, q)
    area = np.percentile(sizes[:, 1] / input_size ** 2, q)
    head = " ".join(f"p{p:<5d}" for p in q)
    return (f"{'':14s}{head}\n"
            f"{'side/input':14s}" + " ".join(f"{v:<6.3f}" for v in side) + "\n"
            f"{'area/input^2':14s}" + " ".join(f"{v:<6.3f}" for v in area))


def configs_from_file(spec: str, overrides: list[str] | tuple[str, ...] = ()
                      ) -> tuple[DataConfig, AugmentConfig, KeypointSchema]:
    """A training YAML (``data:``, ``augment:`` and ``schema:`` sections; ``key=value``
    ``overrides`` as ``movenet train`` takes them) or a data source path."""
    from .config import config_with_overrides, load_config, require_sources  # it imports this module

    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml"):
        cfg = require_sources(load_config(path, overrides), path)  # checked as train and eval check it
    else:  # a data source: the default config on it
        raw = {"data": {"sources": [{"path": spec}], "val_fraction": 0.0}}
        cfg = config_with_overrides(raw, overrides, spec)
    return cfg.data, cfg.augment, cfg.keypoint_schema()
