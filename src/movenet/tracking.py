"""Video: the tracking crop of TF.js MoveNet, One Euro smoothing, identity tracking, every
person of an image (``predict_people``), and ``PoseTracker`` / ``MultiPoseTracker``, thin
wrappers around any ``runtime.Predictor``.

numpy only (no torch). Keypoints are [K,3] (x, y, score) in image pixels, crop boxes are
squares (x0, y0, side, side) in pixels that may extend past the image (padded black), as
``image.crop_and_resize`` takes them.

Constants marked TF.js come from tfjs-models, pose-detection/src/movenet (``constants.ts``,
``crop_utils.ts``, ``detector.ts``) and pose-detection/src/calculators (``one_euro_filter.ts``,
``low_pass_filter.ts``, ``keypoint_tracker.ts``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .decode import (center_peaks, decode_at_center, decode_multi, distinct_people, keypoint_box, person_score,
                     regressed_keypoints)
from .errors import MoveNetError
from .image import check_rgb_image, to_image_coords
from .runtime import Predictor, pose_score
from .schema import COCO17, KeypointSchema

Box = tuple[float, float, float, float]  # x0, y0, width, height in pixels

MIN_CROP_KEYPOINT_SCORE = 0.2  # TF.js MIN_CROP_KEYPOINT_SCORE: keypoints that count for the crop
TORSO_EXPANSION = 1.9  # TF.js determineNextCropRegion: half side >= 1.9 x torso range
BODY_EXPANSION = 1.2  # TF.js determineNextCropRegion: half side >= 1.2 x body range
CROP_FILTER_ALPHA = 0.9  # TF.js CROP_FILTER_ALPHA: weight of the new crop corners (low-pass)
# ours: person score (decode.person_score) below which decode_multi's people are not reported;
# on LSP photos pasted side by side it keeps recall and drops most spurious people
# (benchmarks/multi_person.py, docs/video.md)
MIN_PERSON_SCORE = 0.3
CENTER_THRESHOLD = 0.1  # ours: centre peaks above this are people (decode.decode_multi)
# ours, the second (top-down) pass of predict_people (benchmarks/multi_person.py, docs/video.md):
REFINE_CENTER_THRESHOLD = 0.05  # weaker centre peaks are worth a second look
REFINE_EXPANSION = 1.5  # crop side / longer side of the regressed keypoints' box
CANDIDATE_OVERLAP = 0.5  # a candidate whose regressed box overlaps a stronger one's more (IoU) is that one
# People whose regressed or found keypoints span less than this fraction of the image's longer
# side are dropped: a crop of a few pixels, enlarged to the model's input, yields a confident
# pose made of noise, and weak centres decode into poses collapsed on one spot.
REFINE_MIN_EXTENT = 0.05
# ours, the second look of predict_person (benchmarks/second_look.py, docs/eval.md): crop side /
# longer side of the first pose's box, all keypoints; 1.25 is the side of the training and
# top-down evaluation crops around a person's box. On LSP photos 1.2-1.3 were within noise
# of each other, 1.5 and above lost points.
SECOND_LOOK_EXPANSION = 1.25
MIN_CROP_HALF_SIDE = 2.0  # pixels; ours: keeps a degenerate pose (all points on one spot) croppable
# ours (CropTracker; benchmarks/video_jitter.py, docs/video.md): every move of the crop moves the
# model's sampling grid, and the model answers with jitter of its own. A crop whose side is above
# FULL_FRAME_ABOVE of the full-frame square gains little resolution: the full frame is used, and
# left again only for a crop under FULL_FRAME_BELOW (hysteresis). A new crop whose centre and side
# differ from the current one by less than CROP_DEAD_BAND of its side does not replace it.
FULL_FRAME_ABOVE = 0.8
FULL_FRAME_BELOW = 0.7
CROP_DEAD_BAND = 0.05
TFJS_CROP = {"crop_dead_band": 0.0, "crop_full_frame": None}  # PoseTracker(..., **TFJS_CROP): TF.js' crop

# TF.js KEYPOINT_FILTER_CONFIG (constants.ts of tfjs-models 2021-2022), for coordinates
# normalised to the image (x / width, y / height) and time in seconds: the TF.js detector
# filters keypoints *before* multiplying them by the image size. Later TF.js releases use
# min_cutoff 2.5, beta 300, derivative_cutoff 2.5 (``TFJS_ONE_EURO_2023``).
TFJS_ONE_EURO = {"frequency": 30.0, "min_cutoff": 6.36, "beta": 636.61, "derivative_cutoff": 4.77,
                 "threshold_cutoff": 0.5, "threshold_beta": 5.0}
TFJS_ONE_EURO_2023 = {**TFJS_ONE_EURO, "min_cutoff": 2.5, "beta": 300.0, "derivative_cutoff": 2.5}
# ours, same units: on the Pareto front of jitter vs lag of benchmarks/video_jitter.py --sweep
# (docs/video.md). TF.js' large beta opens the filter on half a pixel of noise, so it removes only
# 9-18 % of the jitter; these remove about 40 %. A 4 Hz minimum cut-off is a 40 ms time constant:
# a lag of at most one frame at 25 fps, less when moving.
ONE_EURO = {**TFJS_ONE_EURO, "min_cutoff": 4.0, "beta": 30.0, "derivative_cutoff": 2.5}
SMOOTHING_PRESETS = {"default": ONE_EURO, "tfjs": TFJS_ONE_EURO, "tfjs-2023": TFJS_ONE_EURO_2023}


# ---------------------------------------------------------------- crop region (TF.js)
def full_frame_box(width: int, height: int) -> Box:
    """The whole frame padded to a square on both sides (TF.js ``initCropRegion`` when
    tracking is lost)."""
    side = float(max(width, height))
    return ((width - side) / 2, (height - side) / 2, side, side)


TORSO_KEYPOINTS = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")  # what tracking follows


def torso_visible(keypoints: np.ndarray, schema: KeypointSchema = COCO17,
                  threshold: float = MIN_CROP_KEYPOINT_SCORE) -> bool:
    """TF.js ``torsoVisible``: a hip and a shoulder score above ``threshold``."""
    s = keypoints[:, 2]
    hips = s[[schema.find("left_hip"), schema.find("right_hip")]]
    shoulders = s[[schema.find("left_shoulder"), schema.find("right_shoulder")]]
    return bool((hips > threshold).any() and (shoulders > threshold).any())


def torso_and_body_range(keypoints: np.ndarray, center_x: float, center_y: float,
                         schema: KeypointSchema = COCO17,
                         threshold: float = MIN_CROP_KEYPOINT_SCORE) -> tuple[float, float, float, float]:
    """TF.js ``determineTorsoAndBodyRange``, in pixels: the largest |dx|, |dy| from the centre
    of the 4 torso keypoints (whatever their score, as TF.js) and of all keypoints scoring at
    least ``threshold``. Returns (torso_x, torso_y, body_x, body_y)."""
    torso = [schema.find(n) for n in TORSO_KEYPOINTS]
    d = np.abs(keypoints[:, :2] - np.array([center_x, center_y], np.float32))
    torso_x, torso_y = d[torso].max(axis=0)
    confident = keypoints[:, 2] >= threshold
    body_x, body_y = d[confident].max(axis=0) if confident.any() else (0.0, 0.0)
    return float(torso_x), float(torso_y), float(body_x), float(body_y)


def determine_crop_region(keypoints: np.ndarray, width: int, height: int,
                          schema: KeypointSchema = COCO17,
                          threshold: float = MIN_CROP_KEYPOINT_SCORE) -> Box:
    """TF.js ``determineNextCropRegion`` in pixels: a square centred on the hip midpoint with
    half side max(1.9 x torso range, 1.2 x body range), capped at the farthest image edge
    from that centre; the whole frame padded to a square when the torso is not visible or
    the crop would be larger than half the longer image side."""
    if not torso_visible(keypoints, schema, threshold):
        return full_frame_box(width, height)
    hips = keypoints[[schema.find("left_hip"), schema.find("right_hip")], :2]
    cx, cy = (float(v) for v in hips.mean(axis=0))
    torso_x, torso_y, body_x, body_y = torso_and_body_range(keypoints, cx, cy, schema, threshold)
    half = max(TORSO_EXPANSION * torso_x, TORSO_EXPANSION * torso_y,
               BODY_EXPANSION * body_x, BODY_EXPANSION * body_y)
    half = min(half, max(cx, width - cx, cy, height - cy))
    if half > max(width, height) / 2:
        return full_frame_box(width, height)
    half = max(half, MIN_CROP_HALF_SIDE)
    return (cx - half, cy - half, 2 * half, 2 * half)


class LowPassFilter:
    """Exponential smoothing ``y += alpha * (x - y)`` (TF.js ``LowPassFilter``), elementwise."""

    def __init__(self, alpha: float = CROP_FILTER_ALPHA):
        self.alpha = alpha
        self.value: np.ndarray | None = None

    def reset(self) -> None:
        self.value = None

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        self.value = x.copy() if self.value is None else self.value + self.alpha * (x - self.value)
        return self.value.copy()


def same_crop(a: Box, b: Box, dead_band: float = CROP_DEAD_BAND) -> bool:
    """True when the square ``b`` differs from ``a`` by less than ``dead_band`` of ``a``'s side,
    in the distance of their centres and in their sides."""
    shift = np.hypot(b[0] + b[2] / 2 - a[0] - a[2] / 2, b[1] + b[3] / 2 - a[1] - a[3] / 2)
    return bool(shift < dead_band * a[2] and abs(b[2] - a[2]) < dead_band * a[2])


class CropTracker:
    """The tracking crop of one person across frames: ``update(keypoints)`` -> the box to look
    at in the next frame (``box``; None = the whole frame padded to a square).

    TF.js: ``determine_crop_region`` of the keypoints, corners low-pass filtered (``alpha``).
    Ours, against the jitter that a moving crop adds: with ``full_frame = (above, below)``, a
    crop larger than ``above`` x the full-frame square (or no torso) means the whole frame,
    which is left again only for a crop under ``below`` x that square; a new crop within
    ``dead_band`` of the current one (``same_crop``) keeps the current one.
    ``full_frame=None, dead_band=0`` is TF.js' loop."""

    def __init__(self, width: int, height: int, alpha: float = CROP_FILTER_ALPHA,
                 dead_band: float = CROP_DEAD_BAND,
                 full_frame: tuple[float, float] | None = (FULL_FRAME_ABOVE, FULL_FRAME_BELOW),
                 schema: KeypointSchema = COCO17):
        self.width, self.height = width, height
        self.dead_band = dead_band
        self.full_frame = full_frame
        self.schema = schema
        self.filter = CropFilter(alpha)
        self.box: Box | None = None

    def reset(self) -> None:
        self.box = None
        self.filter.reset()

    def current(self) -> Box:
        """The box to look at now: the tracking crop, or the whole frame padded to a square."""
        return self.box if self.box is not None else full_frame_box(self.width, self.height)

    def update(self, keypoints: np.ndarray) -> Box | None:
        """Take this frame's keypoints [K,3] (pixels); returns the new ``box``."""
        target = determine_crop_region(keypoints, self.width, self.height, self.schema)
        if self.full_frame is not None:
            full = full_frame_box(self.width, self.height)
            limit = self.full_frame[1] if self.box is None else self.full_frame[0]
            if target == full or target[2] > limit * full[2]:
                self.reset()
                return None
        if self.box is not None and self.dead_band > 0 and same_crop(self.box, target, self.dead_band):
            return self.box
        self.box = self.filter(target)
        return self.box


class CropFilter:
    """Low-pass filter on the corners of square crop boxes (TF.js ``filterCropRegion``).
    A blend of squares is a square, so the result stays square."""

    def __init__(self, alpha: float = CROP_FILTER_ALPHA):
        self.corners = LowPassFilter(alpha)

    def reset(self) -> None:
        self.corners.reset()

    def __call__(self, box: Box) -> Box:
        x0, y0, w, h = box
        fx0, fy0, fx1, fy1 = self.corners([x0, y0, x0 + w, y0 + h])
        return (float(fx0), float(fy0), float(fx1 - fx0), float(fy1 - fy0))


# ---------------------------------------------------------------- One Euro filter
class OneEuroFilter:
    """One Euro filter (Casiez et al. 2012) as in TF.js/MediaPipe, vectorised over any array
    of values (e.g. [K,2] keypoint coordinates), including the TF.js asinh threshold.

    The parameters are those of TF.js, for values in units of ``scale`` (TF.js: coordinates
    normalised to the image): filtering ``values`` with ``scale`` is filtering
    ``values / scale`` with these parameters, times ``scale``. For pixel keypoints pass
    ``scale=(width, height)`` (broadcast against the values); in pixel units that is
    ``beta / width`` and ``threshold_cutoff * width`` (``min_cutoff``, ``derivative_cutoff`` in
    Hz and ``threshold_beta`` in seconds do not change). The state is kept in the units of the
    values, so ``scale`` may change from call to call (``PoseTracker`` passes the side of the
    crop the model looked at: parameters relative to the model's view, whatever the person's
    size). Defaults: ``ONE_EURO``; TF.js' values are ``TFJS_ONE_EURO``, ``TFJS_ONE_EURO_2023``.
    Timestamps are in seconds; without them samples are 1 / ``frequency`` apart. A sample
    whose timestamp equals the previous one is returned unfiltered (as TF.js); an earlier one
    starts the filter over (another video, or a seek back; TF.js would pass every sample
    through unfiltered until the time caught up)."""

    def __init__(self, frequency: float = ONE_EURO["frequency"],
                 min_cutoff: float = ONE_EURO["min_cutoff"], beta: float = ONE_EURO["beta"],
                 derivative_cutoff: float = ONE_EURO["derivative_cutoff"],
                 threshold_cutoff: float | None = ONE_EURO["threshold_cutoff"],
                 threshold_beta: float = ONE_EURO["threshold_beta"], scale=1.0):
        self.default_frequency = frequency
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.derivative_cutoff = derivative_cutoff
        self.threshold_cutoff = threshold_cutoff
        self.threshold_beta = threshold_beta
        self.scale = np.asarray(scale, np.float64)
        self.reset()

    def reset(self) -> None:
        self.frequency = self.default_frequency
        self.last_time: float | None = None
        self.raw: np.ndarray | None = None  # last input
        self.filtered: np.ndarray | None = None
        self.derivative: np.ndarray | None = None

    def _alpha(self, cutoff):
        return 1.0 / (1.0 + self.frequency / (2 * np.pi * cutoff))

    def __call__(self, values, timestamp: float | None = None, scale=None) -> np.ndarray:
        """Filter one sample; ``scale``, when given, replaces the constructor's for it."""
        x = np.asarray(values, np.float64)
        scale = self.scale if scale is None else np.asarray(scale, np.float64)
        if timestamp is None:
            timestamp = 0.0 if self.last_time is None else self.last_time + 1.0 / self.frequency
        if self.last_time is not None and timestamp < self.last_time:
            self.reset()
        if self.last_time is not None and timestamp == self.last_time:
            return x.copy()
        if self.last_time is not None:
            self.frequency = 1.0 / (timestamp - self.last_time)
        self.last_time = timestamp
        if self.filtered is None or self.filtered.shape != x.shape:
            self.raw, self.filtered, self.derivative = x, x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self.raw) * self.frequency
        self.derivative = self.derivative + self._alpha(self.derivative_cutoff) * (dx - self.derivative)
        speed = np.abs(self.derivative) / scale
        alpha = self._alpha(self.min_cutoff + self.beta * speed)
        step = x - self.filtered
        if self.threshold_cutoff is not None:
            # TF.js: compress large jumps, asinh(d / t) * t ~ d for small d, ~log for large d
            threshold = (self.threshold_cutoff + self.threshold_beta * speed) * scale
            step = threshold * np.arcsinh(step / threshold)
        self.filtered = self.filtered + alpha * step
        self.raw = x
        return self.filtered.copy()


def keypoint_filter(width: int, height: int, **params) -> OneEuroFilter:
    """A One Euro filter for [K,2] pixel coordinates of a ``width`` x ``height`` frame with our
    defaults (``ONE_EURO``) overridden by ``params`` (e.g. ``**TFJS_ONE_EURO``)."""
    return OneEuroFilter(**{**ONE_EURO, **params}, scale=(float(width), float(height)))


def keypoint_jitter(keypoints: np.ndarray, threshold: float = 0.3) -> float:
    """Mean keypoint acceleration magnitude |p[t+1] - 2 p[t] + p[t-1]| of a [T,K,3] track (in
    pixels per frame^2), over keypoints scoring above ``threshold`` in all three frames."""
    k = np.asarray(keypoints, np.float64)
    acc = np.linalg.norm(k[2:, :, :2] - 2 * k[1:-1, :, :2] + k[:-2, :, :2], axis=-1)
    confident = (k[2:, :, 2] > threshold) & (k[1:-1, :, 2] > threshold) & (k[:-2, :, 2] > threshold)
    return float(acc[confident].mean()) if confident.any() else 0.0


# ---------------------------------------------------------------- identity tracking
def object_keypoint_similarity(a: np.ndarray, b: np.ndarray, sigmas: np.ndarray,
                               threshold: float = 0.3, min_keypoints: int = 4) -> float:  # TF.js defaults
    """TF.js ``KeypointTracker.oks`` between pose ``a`` and track pose ``b`` ([K,3] pixels):
    mean over keypoints scoring >= ``threshold`` in both of exp(-d^2 / (2 area (2 sigma)^2)),
    area = box of ``b``'s confident keypoints; 0 with fewer than ``min_keypoints``."""
    both = (a[:, 2] >= threshold) & (b[:, 2] >= threshold)
    if both.sum() < max(min_keypoints, 1):
        return 0.0
    x0, y0, x1, y1 = keypoint_box(b, threshold)
    area = (x1 - x0) * (y1 - y0) + 1e-6
    d2 = ((a[both, :2] - b[both, :2]) ** 2).sum(axis=1)
    return float(np.exp(-d2 / (2 * area * (2 * sigmas[both]) ** 2)).mean())


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Track:
    id: int
    keypoints: np.ndarray
    last_seen: int


@dataclass
class IdentityTracker:
    """Greedy identity tracking of poses across frames (TF.js ``Tracker``): pairs of (pose,
    track) are taken by decreasing similarity (``"oks"``: ``object_keypoint_similarity`` with
    the schema's sigmas; ``"iou"``: IoU of the keypoint boxes) while at least
    ``min_similarity``; unmatched poses start new tracks; a track unseen for more than
    ``max_age`` frames is dropped. TF.js defaults: min similarity 0.2 (OKS) / 0.15 (IoU),
    18 tracks, 1 s of age (``max_age`` here counts frames)."""

    metric: str = "oks"
    # None: TF.js' default for the metric (DEFAULT_KEYPOINT_TRACKER_CONFIG / _BOUNDING_BOX_)
    min_similarity: float | None = None
    max_age: int = 30  # frames; TF.js maxAge is 1000 ms, 30 frames at 30 fps
    max_tracks: int = 18  # TF.js maxTracks
    keypoint_threshold: float = 0.3  # TF.js keypointConfidenceThreshold
    schema: KeypointSchema = COCO17
    tracks: list[Track] = field(default_factory=list)
    frame: int = -1
    next_id: int = 1

    def __post_init__(self) -> None:
        if self.metric not in ("oks", "iou"):
            raise ValueError(f"metric must be 'oks' or 'iou', got {self.metric!r}")
        if self.min_similarity is None:
            self.min_similarity = 0.15 if self.metric == "iou" else 0.2

    def similarity(self, pose: np.ndarray, track: np.ndarray) -> float:
        if self.metric == "iou":
            return box_iou(keypoint_box(pose, self.keypoint_threshold),
                           keypoint_box(track, self.keypoint_threshold))
        return object_keypoint_similarity(pose, track, np.asarray(self.schema.sigmas) / 10.0,
                                          self.keypoint_threshold)

    def update(self, poses: np.ndarray, fixed_ids: list[int | None] | None = None) -> np.ndarray:
        """Assign ids to this frame's poses [P,K,3]. ``fixed_ids[i]``, when not None, is the
        id pose i already belongs to (a live track). Returns ids [P] (int64)."""
        self.frame += 1
        ids = np.zeros(len(poses), np.int64)
        fixed = list(fixed_ids) if fixed_ids is not None else [None] * len(poses)
        by_id = {t.id: t for t in self.tracks}
        taken = {i for i in fixed if i is not None}
        free = [t for t in self.tracks if t.id not in taken]
        pairs = sorted(((self.similarity(poses[p], t.keypoints), p, t.id) for p in range(len(poses))
                        if fixed[p] is None for t in free), reverse=True)
        for sim, p, tid in pairs:
            if sim < self.min_similarity:
                break
            if fixed[p] is None and tid not in taken:
                fixed[p] = tid
                taken.add(tid)
        for p, tid in enumerate(fixed):
            if tid is None or tid not in by_id:
                tid = tid if tid is not None else self._new_id()
                by_id[tid] = Track(tid, poses[p], self.frame)
                self.tracks.append(by_id[tid])
            by_id[tid].keypoints, by_id[tid].last_seen = poses[p], self.frame
            ids[p] = tid
        self.tracks = [t for t in self.tracks if self.frame - t.last_seen <= self.max_age]
        self.tracks = sorted(self.tracks, key=lambda t: -t.last_seen)[:self.max_tracks]
        return ids

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def live_ids(self) -> set[int]:
        return {t.id for t in self.tracks}


# ---------------------------------------------------------------- predictors over time
def predict_people(predictor: Predictor, img: np.ndarray, box: Box | None = None, max_people: int = 6,
                   center_threshold: float | None = None, min_score: float = 0.0, refine: bool = True,
                   known: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every person in ``img`` (or in the crop ``box``), keeping those whose
    ``decode.person_score`` is at least ``min_score``. Returns keypoints [P,K,3], scores [P]
    and boxes [P,4] (x0, y0, x1, y1 around the keypoints scoring above 0.2), in image pixels,
    strongest first.

    Without ``refine``: one pass, ``decode.decode_multi`` (centre peaks above
    ``center_threshold``, default 0.1). With ``refine`` (ours, top-down): the pass only
    proposes people (``person_candidates``: centre peaks above ``center_threshold``, default
    ``REFINE_CENTER_THRESHOLD``); each is looked at again in a square crop around its regressed
    keypoints (``refine_crop``, single-person decoding there: one more forward pass per
    candidate; the first pass's pose is kept where only it reaches ``min_score``; people smaller than
    ``REFINE_MIN_EXTENT`` of the image are dropped), and ``decode.distinct_people`` drops the
    duplicates. Google's single-pose heads
    give off-centre people weak centres and keypoints, but the centre regression still places
    them. Candidates that are the same person as one of ``known`` (poses [K,3] found
    elsewhere, e.g. in tracking crops) are not looked at again."""
    _check_heads(predictor)
    if not refine:
        threshold = CENTER_THRESHOLD if center_threshold is None else center_threshold
        batch, box = predictor.preprocess(img) if box is None else predictor.preprocess_crop(img, box)
        heat, center, reg, off = (o[0] for o in predictor.run(batch))
        kpts, scores, boxes = decode_multi(heat, center, reg, off, max_people, threshold,
                                           predictor.distance_offset, predictor.coord_scale)
        keep = scores >= min_score
        corners = to_image_coords(boxes[keep].reshape(-1, 2, 2), box).reshape(-1, 4)
        return to_image_coords(kpts[keep], box), scores[keep], corners
    threshold = REFINE_CENTER_THRESHOLD if center_threshold is None else center_threshold
    first, first_scores, rough = person_candidates(predictor, img, box, 2 * max_people + 2, threshold)
    min_extent = REFINE_MIN_EXTENT * (max(img.shape[:2]) if box is None else box[2])
    looked: list[np.ndarray] = []
    people, scores = [], []
    for pose, first_score, points in zip(first, first_scores, rough):
        region = np.concatenate([points.min(axis=0), points.max(axis=0)])
        as_pose = np.concatenate([points, np.ones((len(points), 1), np.float32)], axis=1)
        if (region[2:] - region[:2]).max() < min_extent or \
                any(box_iou(region, other) > CANDIDATE_OVERLAP for other in looked) or \
                any(_same_person(as_pose, other) for other in known):
            continue
        looked.append(region)
        kpts, score = predict_centred(predictor, img, refine_crop(points))
        if score < min_score <= first_score:  # the first look is kept where the second loses the person
            kpts, score = pose, float(first_score)
        found = keypoint_box(kpts)
        if (found[2:] - found[:2]).max() < min_extent:
            continue
        people.append(kpts)
        scores.append(score)
    k = rough.shape[1]
    kept = [i for i in distinct_people(np.asarray(people).reshape(-1, k, 3), np.asarray(scores), max_people)
            if scores[i] >= min_score]
    kpts = np.asarray([people[i] for i in kept], np.float32).reshape(-1, k, 3)
    boxes = np.asarray([keypoint_box(p) for p in kpts], np.float32).reshape(-1, 4)
    return kpts, np.asarray([scores[i] for i in kept], np.float32), boxes


def person_candidates(predictor: Predictor, img: np.ndarray, box: Box | None = None, max_candidates: int = 14,
                      center_threshold: float = REFINE_CENTER_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over ``img`` (or the crop ``box``): each centre peak above ``center_threshold``
    (``decode.center_peaks``, strongest first) decoded around its centre. Returns, in image
    pixels, keypoints [P,K,3], person scores [P] and the regressed keypoints [P,K,2]
    (``decode.regressed_keypoints``)."""
    batch, box = predictor.preprocess(img) if box is None else predictor.preprocess_crop(img, box)
    heat, center, reg, off = (o[0] for o in predictor.run(batch))
    k, h, w = heat.shape
    center_map = center.reshape(h, w)
    peaks = center_peaks(center_map, center_threshold, max_candidates)
    kpts = np.zeros((len(peaks), k, 3), np.float32)
    rough = np.zeros((len(peaks), k, 2), np.float32)
    scores = np.zeros(len(peaks), np.float32)
    for i, (cy, cx) in enumerate(peaks):
        decoded = decode_at_center(heat, reg, off, int(cy), int(cx), predictor.distance_offset, predictor.coord_scale)
        scores[i] = person_score(float(center_map[cy, cx]), decoded)
        kpts[i] = to_image_coords(decoded, box)
        rough[i] = to_image_coords(regressed_keypoints(reg, int(cy), int(cx), predictor.coord_scale), box)
    return kpts, scores, rough


def refine_crop(points: np.ndarray, expansion: float = REFINE_EXPANSION) -> Box:
    """The square crop centred on the box of ``points`` [K,>=2] (pixels), ``expansion`` times
    its longer side."""
    x0, y0 = points[:, :2].min(axis=0)
    x1, y1 = points[:, :2].max(axis=0)
    half = max(expansion * max(x1 - x0, y1 - y0) / 2, MIN_CROP_HALF_SIDE)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (float(cx - half), float(cy - half), float(2 * half), float(2 * half))


def tracker_schema(predictor: Predictor, schema: KeypointSchema | None, track: bool) -> KeypointSchema:
    """The keypoints a tracker reads: ``schema``, else the predictor's (COCO17 for a predictor
    that does not say). They must be the predictor's in number, and tracking crops follow the
    hips and shoulders, which they must name."""
    own = getattr(predictor, "schema", None)
    schema = schema or own or COCO17
    if own is not None and own.num_keypoints != schema.num_keypoints:
        raise MoveNetError(f"schema {schema.name} has {schema.num_keypoints} keypoints, the model "
                           f"{own.num_keypoints} ({own.name})")
    if track and any(schema.find(name) is None for name in TORSO_KEYPOINTS):  # (LHip is left_hip)
        raise MoveNetError(f"tracking follows a person by the hips and shoulders, which the model's keypoints "
                           f"({schema.name}) do not name: use --no-track")
    return schema


def _check_heads(predictor: Predictor) -> None:
    if getattr(predictor, "prior", None) is None:
        raise MoveNetError(f"{getattr(predictor, 'path', type(predictor).__name__)}: several people need "
                           "a model with MoveNet's four heads (this one outputs keypoints only)")


def predict_person(predictor: Predictor, img: np.ndarray, box: Box | None = None,
                   refine: bool = True) -> np.ndarray:
    """The central person of ``img`` (or of the crop ``box``) -> keypoints [K,3] in pixels.

    One pass is ``predictor(img, box)``: the whole image padded to a square, where a person
    who fills part of the frame covers as small a part of the output grid. With ``refine`` (ours) the
    person is looked at again in the square crop ``SECOND_LOOK_EXPANSION`` times the box of
    the first pose's keypoints, single-person decoding there (what TF.js does from the second
    frame of a video on); a first pose collapsed on a spot (under ``REFINE_MIN_EXTENT`` of the
    image) is kept as it is. Two forward passes instead of one."""
    return look_twice(predictor, img, box, refine)[0]


def look_twice(predictor: Predictor, img: np.ndarray, box: Box | None = None, refine: bool = True,
               max_side: float | None = None) -> tuple[np.ndarray, Box | None]:
    """``predict_person``'s passes -> (keypoints [K,3], the box of the pass kept; None = the
    whole image). ``max_side``: no second look when its crop would be larger than this."""
    first = predictor(img, box)
    if not refine:
        return first, box
    crop = refine_crop(first, SECOND_LOOK_EXPANSION)
    side = max(img.shape[:2]) if box is None else box[2]
    collapsed = crop[2] < SECOND_LOOK_EXPANSION * REFINE_MIN_EXTENT * side
    if collapsed or (max_side is not None and crop[2] > max_side):
        return first, box
    return predictor(img, crop), crop


def predict_centred(predictor: Predictor, img: np.ndarray, box: Box) -> tuple[np.ndarray, float]:
    """Single-person prediction in the crop ``box`` (the person nearest the crop centre, as
    ``decode_single``) -> (keypoints [K,3] in pixels, ``decode.person_score``)."""
    _check_heads(predictor)
    batch, box = predictor.preprocess_crop(img, box)
    heat, center, reg, off = (o[0] for o in predictor.run(batch))
    h, w = heat.shape[1:]
    center_map = center.reshape(h, w)
    cy, cx = divmod(int(np.argmax(center_map * predictor.prior)), w)
    kpts = decode_at_center(heat, reg, off, cy, cx, predictor.distance_offset, predictor.coord_scale)
    return to_image_coords(kpts, box), person_score(float(center_map[cy, cx]), kpts)


class PoseTracker:
    """One person through a video, the TF.js MoveNet way, around any ``Predictor``:
    ``tracker(frame_rgb, timestamp_s) -> [K,3]`` keypoints in pixels.

    ``track``: look at a square crop around the person found in the previous frame
    (``CropTracker``: ``determine_crop_region``, corners low-pass filtered with ``crop_alpha``,
    ``crop_dead_band`` and ``crop_full_frame`` against crop jitter; ``**TFJS_CROP`` is TF.js'
    crop); the first frame, and any frame after the torso is lost, looks at the whole frame
    padded to a square. Without it every frame is predicted whole (``predictor(frame)``, then
    the second look with ``refine``). ``refine`` (ours): a look at the whole frame is followed
    by ``predict_person``'s second look, in a crop around the pose found; with ``track`` only
    when that crop is small enough for the tracker to leave the whole frame (under
    ``crop_full_frame[1]`` x the frame's square), so that a person filling the frame keeps one
    pass per frame.
    ``smooth``: One Euro filter on the keypoint coordinates (``filter_params`` override
    ``ONE_EURO``, e.g. ``filter_params=TFJS_ONE_EURO``) in units of the side of the square the
    model looked at (TF.js: of the frame's width and height, the same for the whole frame of a
    square video); the next crop is computed from the smoothed keypoints, as TF.js.
    A pose score (mean keypoint score above 0.2) at or below ``reset_score`` resets the state
    (TF.js: 0); so do a new frame size and a timestamp earlier than the last (another video)."""

    def __init__(self, predictor: Predictor, track: bool = True, smooth: bool = True,
                 filter_params: dict | None = None, crop_alpha: float = CROP_FILTER_ALPHA,
                 crop_dead_band: float = CROP_DEAD_BAND,
                 crop_full_frame: tuple[float, float] | None = (FULL_FRAME_ABOVE, FULL_FRAME_BELOW),
                 reset_score: float = 0.0, schema: KeypointSchema | None = None, refine: bool = True):
        schema = tracker_schema(predictor, schema, track)
        self.predictor = predictor
        self.track = track
        self.refine = refine
        self.smooth = smooth
        self.filter_params = dict(filter_params or {})
        self.crop_params = dict(alpha=crop_alpha, dead_band=crop_dead_band, full_frame=crop_full_frame,
                                schema=schema)
        self.reset_score = reset_score
        self.schema = schema
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames (the next frame is looked at whole)."""
        self.size: tuple[int, int] | None = None
        self.keypoint_filter: OneEuroFilter | None = None
        self.crop_tracker: CropTracker | None = None
        self.last_time: float | None = None

    @property
    def crop(self) -> Box | None:
        """The crop the next frame is looked at (None: the whole frame)."""
        return self.crop_tracker.box if self.crop_tracker is not None else None

    def _start(self, width: int, height: int) -> None:
        self.reset()
        self.size = (width, height)
        self.keypoint_filter = keypoint_filter(width, height, **self.filter_params)
        self.crop_tracker = CropTracker(width, height, **self.crop_params)

    def __call__(self, frame: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        check_rgb_image(frame)
        h, w = frame.shape[:2]
        if self.size != (w, h) or _went_back(timestamp, self.last_time):
            self._start(w, h)
        self.last_time = timestamp if timestamp is not None else self.last_time
        if self.track:
            box = self.crop_tracker.current()
            if self.refine and self.crop_tracker.box is None:  # a look at the whole frame
                full_frame = self.crop_params["full_frame"]
                kpts, box = look_twice(self.predictor, frame, box,
                                       max_side=full_frame[1] * box[2] if full_frame else None)
            else:
                kpts = self.predictor(frame, box)
            view = box[2]  # the side of the square the model saw
        else:
            kpts, box = look_twice(self.predictor, frame, refine=self.refine)
            view = float(max(w, h)) if box is None else box[2]
        if pose_score(kpts) <= self.reset_score:
            self._start(w, h)
            return kpts
        if self.smooth:
            kpts = kpts.copy()
            kpts[:, :2] = self.keypoint_filter(kpts[:, :2], timestamp, scale=view)
        if self.track:
            self.crop_tracker.update(kpts)
        return kpts


class MultiPoseTracker:
    """Several people through a video: ``tracker(frame_rgb, timestamp_s) -> (keypoints
    [P,K,3] pixels, scores [P], ids [P])``.

    Every frame the whole frame is decoded for all people (``predict_people``, with its
    second look at each candidate when ``refine``). With ``track``, each person seen in the
    previous frame is also predicted in its own tracking crop (a ``CropTracker`` per id, as
    ``PoseTracker``; a person whose crop would be the whole frame has none), which keeps small
    people at the model's resolution; whole-frame people that duplicate a crop prediction are
    dropped (and not refined). Ids come from ``IdentityTracker`` (crop predictions keep their
    track's id). ``smooth``: a One Euro filter per id, in units of the tracking crop's side
    (of the whole frame's for people found in the whole frame). People scoring below
    ``min_score`` (``decode.person_score``) are not reported. A new frame size or a timestamp
    earlier than the last (another video) forgets the people seen (new ones get new ids)."""

    def __init__(self, predictor: Predictor, track: bool = True, smooth: bool = True, refine: bool = True,
                 max_people: int = 6, center_threshold: float | None = None, min_score: float = MIN_PERSON_SCORE,
                 filter_params: dict | None = None, crop_alpha: float = CROP_FILTER_ALPHA,
                 crop_dead_band: float = CROP_DEAD_BAND,
                 crop_full_frame: tuple[float, float] | None = (FULL_FRAME_ABOVE, FULL_FRAME_BELOW),
                 identity: IdentityTracker | None = None, schema: KeypointSchema | None = None):
        _check_heads(predictor)  # before the first frame
        schema = tracker_schema(predictor, schema, track)
        self.predictor = predictor
        self.track = track
        self.smooth = smooth
        self.refine = refine
        self.max_people = max_people
        self.center_threshold = center_threshold
        self.min_score = min_score
        self.filter_params = dict(filter_params or {})
        self.crop_params = dict(alpha=crop_alpha, dead_band=crop_dead_band, full_frame=crop_full_frame,
                                schema=schema)
        self.identity = identity or IdentityTracker(schema=schema)
        self.schema = schema
        self.filters: dict[int, OneEuroFilter] = {}
        self.crops: dict[int, CropTracker] = {}
        self.size: tuple[int, int] | None = None
        self.last_time: float | None = None

    def __call__(self, frame: np.ndarray, timestamp: float | None = None):
        check_rgb_image(frame)
        h, w = frame.shape[:2]
        if self.size != (w, h) or _went_back(timestamp, self.last_time):
            self.size = (w, h)
            self.filters.clear()
            self.crops.clear()
            self.identity.tracks.clear()
        self.last_time = timestamp if timestamp is not None else self.last_time
        poses, scores, fixed, views = self._crop_people(frame) if self.track else ([], [], [], [])
        kpts, det_scores, _ = predict_people(self.predictor, frame, None, self.max_people, self.center_threshold,
                                             self.min_score, self.refine, known=poses)
        for k, s in zip(kpts, det_scores):
            if len(poses) >= self.max_people:
                break
            if not any(_same_person(k, p) for p in poses):
                poses.append(k)
                scores.append(float(s))
                fixed.append(None)
                views.append(float(max(w, h)))
        empty = np.zeros((0, self.schema.num_keypoints, 3), np.float32)
        stacked = np.stack(poses) if poses else empty
        ids = self.identity.update(stacked, fixed)
        live = self.identity.live_ids()
        self.filters = {i: f for i, f in self.filters.items() if i in live}
        crops = {}
        out = stacked.copy()
        for n, tid in enumerate(ids):
            if self.smooth:
                filt = self.filters.setdefault(int(tid), keypoint_filter(w, h, **self.filter_params))
                out[n, :, :2] = filt(out[n, :, :2], timestamp, scale=views[n])
            if self.track and torso_visible(out[n], self.schema):
                crops[int(tid)] = self.crops.get(int(tid)) or CropTracker(w, h, **self.crop_params)
                crops[int(tid)].update(out[n])
        self.crops = crops
        return out, np.asarray(scores, np.float32), ids

    def _crop_people(self, frame: np.ndarray) -> tuple[list, list, list, list]:
        """Predictions in the crops of the people tracked in the previous frame, oldest track
        first; a crop that found someone already found by an older track is dropped. Returns
        poses, scores, track ids and crop sides."""
        poses, scores, fixed, views = [], [], [], []
        for tid in sorted(self.crops):
            box = self.crops[tid].box
            if box is None:  # whole frame: the whole-frame decoding finds this person
                continue
            kpts, score = predict_centred(self.predictor, frame, box)
            if score >= self.min_score and not any(_same_person(kpts, p) for p in poses):
                poses.append(kpts)
                scores.append(score)
                fixed.append(tid)
                views.append(box[2])
        return poses, scores, fixed, views


def _went_back(timestamp: float | None, last: float | None) -> bool:
    return timestamp is not None and last is not None and timestamp < last


def _same_person(a: np.ndarray, b: np.ndarray, min_overlap: float = 0.5,
                 threshold: float = MIN_CROP_KEYPOINT_SCORE) -> bool:
    """Keypoint boxes overlapping by at least ``min_overlap`` of the smaller one (a side view
    of a person found in its crop and a narrower one from the whole frame do)."""
    box_a, box_b = keypoint_box(a, threshold), keypoint_box(b, threshold)
    iw = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
    ih = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
    if iw < 0 or ih < 0:
        return False
    smaller = min((box_a[2] - box_a[0]) * (box_a[3] - box_a[1]), (box_b[2] - box_b[0]) * (box_b[3] - box_b[1]))
    return bool(iw * ih >= min_overlap * smaller)
