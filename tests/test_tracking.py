"""Tracking crop (TF.js rules), One Euro filter, identity tracking and the PoseTracker wrappers."""
from __future__ import annotations

import numpy as np
import pytest

from movenet import tracking
from movenet.schema import COCO17
from movenet.tracking import (box_iou, ONE_EURO, SMOOTHING_PRESETS, TFJS_CROP, TFJS_ONE_EURO, TFJS_ONE_EURO_2023, CropFilter,
                              CropTracker, IdentityTracker, MultiPoseTracker, OneEuroFilter, PoseTracker,
                              determine_crop_region, full_frame_box, keypoint_filter, keypoint_jitter,
                              object_keypoint_similarity, predict_person, same_crop, torso_and_body_range,
                              torso_visible)

L_SH, R_SH, L_HIP, R_HIP = 5, 6, 11, 12


def jitter(track: np.ndarray) -> float:
    """Mean magnitude of the second difference (acceleration) of a [T,...,2] track."""
    acc = track[2:] - 2 * track[1:-1] + track[:-2]
    return float(np.linalg.norm(acc, axis=-1).mean())


def test_keypoint_jitter_is_the_acceleration_of_confident_keypoints():
    t = np.arange(10, dtype=np.float64)
    track = np.zeros((10, 2, 3))
    track[:, 0, 0] = 0.5 * 3.0 * t ** 2  # constant acceleration 3 px/frame^2
    track[:, 0, 1] = 7 * t  # constant speed adds none
    track[:, :, 2] = 0.9
    track[:, 1, :2] = np.random.default_rng(0).normal(0, 50, (10, 2))  # wild, but not confident
    track[:, 1, 2] = 0.1
    assert keypoint_jitter(track) == pytest.approx(3.0)
    track[4, 0, 2] = 0.2  # frames 3..5 no longer count
    assert keypoint_jitter(track) == pytest.approx(3.0)
    assert keypoint_jitter(track[:, 1:]) == 0.0


# ---------------------------------------------------------------- One Euro
def test_constant_signal_stays_constant():
    f = keypoint_filter(640, 480)
    x = np.random.default_rng(0).uniform(0, 480, (17, 2))
    for i in range(50):
        np.testing.assert_allclose(f(x, i / 30), x, atol=1e-9)


def test_step_response_settles_without_overshoot():
    f = OneEuroFilter(scale=360.0)
    out = [float(f(np.array([0.0]), i / 25)[0]) for i in range(10)]
    out += [float(f(np.array([100.0]), (10 + i) / 25)[0]) for i in range(40)]
    after = np.array(out[10:])
    assert 0 < after[0] < 100  # lags behind the step...
    assert np.all(np.diff(after) >= -1e-9) and np.all(after <= 100 + 1e-9)  # ...monotonically...
    assert abs(after[-1] - 100) < 0.01  # ...and settles


def filtered(values: np.ndarray, fps: float = 25.0, width: int = 360, **params) -> np.ndarray:
    f = keypoint_filter(width, width, **params)
    return np.stack([f(x, i / fps) for i, x in enumerate(values)])


def test_defaults_remove_noise_that_tfjs_values_let_through():
    rng = np.random.default_rng(0)
    noisy = 200 + rng.normal(0, 0.5, (200, 17, 2))  # half a pixel of noise on a 360 px frame
    smooth = filtered(noisy)
    assert smooth[20:].var() < 0.45 * noisy[20:].var()  # 0.38 when written
    assert jitter(smooth[20:]) < 0.5 * jitter(noisy[20:])  # 0.41
    # TF.js' large beta opens the filter on the noise itself: its values smooth only a little
    tfjs = filtered(noisy, **TFJS_ONE_EURO)
    assert tfjs[20:].var() > 0.7 * noisy[20:].var()
    assert filtered(noisy, **TFJS_ONE_EURO_2023)[20:].var() > 0.5 * noisy[20:].var()


@pytest.mark.parametrize("speed,max_lag", [(0.5, 1.0), (2.0, 0.6), (5.0, 0.35), (10.0, 0.2)])
def test_ramp_lag_is_small_and_shrinks_with_speed(speed, max_lag):
    """A keypoint moving at ``speed`` px/frame (360 px frame, 25 fps) is followed within
    ``max_lag`` frames once the filter has settled (One Euro: faster motion, higher cut-off)."""
    ramp = 100 + speed * np.arange(60.0)[:, None, None] * np.ones((1, 17, 2))
    lag = (ramp[-1] - filtered(ramp)[-1]) / speed
    assert np.all(lag > 0) and np.all(lag <= max_lag)


def test_step_settles_within_two_frames_at_25_fps():
    signal = np.where(np.arange(40)[:, None, None] < 10, 100.0, 150.0) * np.ones((1, 17, 2))
    out = filtered(signal)
    assert np.all(out[10] < 150) and np.all(out[10] > 140)  # follows a 50 px jump at once...
    assert np.all(np.abs(out[11:] - 150) < 2.5)  # ...within 5 % one frame later


def test_presets():
    assert SMOOTHING_PRESETS == {"default": ONE_EURO, "tfjs": TFJS_ONE_EURO, "tfjs-2023": TFJS_ONE_EURO_2023}
    f = OneEuroFilter()
    assert (f.min_cutoff, f.beta, f.derivative_cutoff) == (ONE_EURO["min_cutoff"], ONE_EURO["beta"],
                                                          ONE_EURO["derivative_cutoff"])


def test_vectorised_filter_equals_one_filter_per_value():
    rng = np.random.default_rng(1)
    xs = np.cumsum(rng.normal(0, 3, (60, 4, 2)), axis=0)
    times = np.cumsum(rng.uniform(0.02, 0.06, 60))
    together = OneEuroFilter(scale=(640.0, 480.0))
    alone = [[OneEuroFilter(scale=s) for s in (640.0, 480.0)] for _ in range(4)]
    for x, t in zip(xs, times):
        got = together(x, t)
        want = [[alone[k][a](x[k, a:a + 1], t)[0] for a in range(2)] for k in range(4)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_pixel_units_are_normalised_units_times_image_size():
    """Filtering pixels with scale=(w, h) equals filtering TF.js' normalised coordinates."""
    rng = np.random.default_rng(2)
    norm = 0.5 + np.cumsum(rng.normal(0, 0.01, (50, 17, 2)), axis=0)
    size = np.array([640.0, 480.0])
    in_pixels, normalised = keypoint_filter(640, 480, **TFJS_ONE_EURO), OneEuroFilter(**TFJS_ONE_EURO)
    for i, x in enumerate(norm):
        np.testing.assert_allclose(in_pixels(x * size, i / 30), normalised(x, i / 30) * size, rtol=1e-9)


def test_filter_is_scale_invariant_and_takes_the_scale_per_call():
    """The same motion relative to the scale is filtered the same: a person 3x larger in a
    3x larger crop moves 3x as many pixels and is smoothed alike."""
    rng = np.random.default_rng(4)
    xs = 100 + np.cumsum(rng.normal(0, 2, (60, 17, 2)), axis=0)
    small, large, per_call = OneEuroFilter(scale=120.0), OneEuroFilter(scale=360.0), OneEuroFilter(scale=1.0)
    for i, x in enumerate(xs):
        want = small(x, i / 30)
        np.testing.assert_allclose(large(3 * x, i / 30), 3 * want, rtol=1e-9)
        np.testing.assert_allclose(per_call(x, i / 30, scale=120.0), want, rtol=1e-12)


def test_a_repeated_timestamp_passes_through_and_an_earlier_one_starts_over():
    f = OneEuroFilter(scale=100.0)
    f(np.array([0.0]), 1.0)
    f(np.array([10.0]), 1.04)
    assert f(np.array([50.0]), 1.04)[0] == 50.0  # (as TF.js; the state is unchanged)
    rng = np.random.default_rng(0)
    second = np.cumsum(rng.normal(0, 5, (20, 1)), axis=0)
    fresh = OneEuroFilter(scale=100.0)
    # Another video from t = 0: filtered as by a new filter, not passed through until t > 1.04
    out = [f(x, i / 30) for i, x in enumerate(second)]
    np.testing.assert_array_equal(out, [fresh(x, i / 30) for i, x in enumerate(second)])
    assert not np.allclose(out, second)  # (filtered, not passed through)
    f.reset()
    assert f(np.array([7.0]), 0.0)[0] == 7.0


def test_trackers_start_over_when_time_goes_back(monkeypatch):
    rng = np.random.default_rng(0)
    seq = [spread_pose(200 + 3 * i, 200, spread=60) for i in range(6)]
    for s in seq:
        s[:, :2] += rng.normal(0, 4, (17, 2))
    frame = np.zeros((400, 400, 3), np.uint8)
    reused, fresh = (PoseTracker(FakePredictor(s), refine=False) for s in (seq + seq, seq))
    for i in range(6):
        reused(frame, i / 30)
    assert reused.crop is not None
    for i in range(6):  # a second video: whole first frame, then the same crops and smoothing as anew
        np.testing.assert_array_equal(reused(frame, i / 30), fresh(frame, i / 30))
        assert reused.crop == fresh.crop
    poses = iter([s[None] for s in seq + seq])
    monkeypatch.setattr(tracking, "predict_people",
                        lambda *a, **k: (next(poses).astype(np.float32), np.array([0.9], np.float32), None))
    multi = MultiPoseTracker(FakePredictor([]), track=False, refine=False)
    first = [multi(frame, i / 30) for i in range(6)]
    second = [multi(frame, i / 30) for i in range(6)]
    assert {int(ids[0]) for _, _, ids in first} == {1} and {int(ids[0]) for _, _, ids in second} == {2}
    for (a, _, _), (b, _, _) in zip(first, second):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- crop region
def pose(points: dict[int, tuple[float, float]], score: float = 0.9, rest: float = 0.0) -> np.ndarray:
    kpts = np.zeros((17, 3), np.float32)
    kpts[:, 2] = rest
    for k, (x, y) in points.items():
        kpts[k] = (x, y, score)
    return kpts


STANDING = {L_SH: (310, 200), R_SH: (290, 200), L_HIP: (308, 260), R_HIP: (292, 260),
            0: (300, 180), 15: (305, 350), 16: (295, 352)}


def test_crop_centred_on_hips_with_tfjs_half_side():
    kpts = pose(STANDING)
    box = determine_crop_region(kpts, 640, 480)
    cx, cy = 300.0, 260.0  # hip midpoint
    torso_x, torso_y, body_x, body_y = torso_and_body_range(kpts, cx, cy)
    assert (torso_x, torso_y) == (10.0, 60.0)
    assert (body_x, body_y) == (10.0, 92.0)  # ankle at y=352
    half = max(1.9 * 60, 1.2 * 92)
    np.testing.assert_allclose(box, (cx - half, cy - half, 2 * half, 2 * half), rtol=1e-6)


def test_body_range_ignores_unconfident_keypoints():
    kpts = pose(STANDING)
    kpts[9] = (600, 20, 0.1)  # a wrist far away but scoring under 0.2
    assert torso_and_body_range(kpts, 300, 260)[2:] == (10.0, 92.0)
    kpts[9, 2] = 0.5
    assert torso_and_body_range(kpts, 300, 260)[2:] == (300.0, 240.0)


@pytest.mark.parametrize("hidden", [(L_HIP, R_HIP), (L_SH, R_SH)])
def test_torso_not_visible_gives_the_whole_frame(hidden):
    kpts = pose(STANDING)
    kpts[list(hidden), 2] = 0.15
    assert not torso_visible(kpts)
    assert determine_crop_region(kpts, 640, 480) == full_frame_box(640, 480) == (0.0, -80.0, 640.0, 640.0)
    kpts[hidden[0], 2] = 0.25  # one hip (or shoulder) is enough
    assert torso_visible(kpts)


def test_crop_is_capped_by_the_image():
    """Half side capped at the farthest image edge from the hips; beyond half the longer
    side the whole frame is used instead."""
    tall = {L_SH: (330, 100), R_SH: (300, 100), L_HIP: (330, 300), R_HIP: (310, 300), 15: (320, 470)}
    # hips at x = 320 (the middle): the cap is 320 = half the longer side, still a crop
    assert determine_crop_region(pose(tall), 640, 480) == (0.0, -20.0, 640.0, 640.0)
    moved = {k: (x + 10, y) for k, (x, y) in tall.items()}  # cap 330 > 320: whole frame
    assert determine_crop_region(pose(moved), 640, 480) == full_frame_box(640, 480)
    assert full_frame_box(300, 500) == (-100.0, 0.0, 500.0, 500.0)


def test_crop_tracker_uses_the_whole_frame_for_a_crop_nearly_as_large_with_hysteresis():
    crops = CropTracker(640, 480)  # full-frame square: 640
    assert crops.box is None and crops.current() == full_frame_box(640, 480)
    standing = pose(STANDING)  # half side 114: a 228 px crop
    assert crops.update(standing) == determine_crop_region(standing, 640, 480)
    big = pose({k: (300 + 2.5 * (x - 300), 260 + 2.5 * (y - 260)) for k, (x, y) in STANDING.items()})
    assert 0.8 * 640 < determine_crop_region(big, 640, 480)[2] < 640  # TF.js would crop
    assert crops.update(big) is None and crops.current() == full_frame_box(640, 480)
    middle = pose({k: (300 + 2.1 * (x - 300), 260 + 2.1 * (y - 260)) for k, (x, y) in STANDING.items()})
    assert 0.7 * 640 < determine_crop_region(middle, 640, 480)[2] < 0.8 * 640
    assert crops.update(middle) is None  # from the whole frame, a crop needs to be under 0.7
    assert crops.update(standing) is not None
    assert crops.update(middle) is not None  # ...and a crop stays one up to 0.8
    tfjs = CropTracker(640, 480, dead_band=0.0, full_frame=None)
    assert tfjs.update(big) == determine_crop_region(big, 640, 480)


def test_crop_tracker_keeps_its_crop_while_the_person_barely_moves():
    crops = CropTracker(640, 480)
    first = crops.update(pose(STANDING))
    for dx in (2.0, -3.0, 5.0, 1.0):  # under 5 % of the 228 px side
        assert crops.update(pose({k: (x + dx, y) for k, (x, y) in STANDING.items()})) == first
    moved = crops.update(pose({k: (x + 40, y) for k, (x, y) in STANDING.items()}))
    assert moved[0] == pytest.approx(first[0] + 0.9 * 40)  # TF.js' low-pass once it moves
    assert same_crop(first, (first[0] + 10, first[1], first[2], first[3]))
    assert not same_crop(first, (first[0], first[1], first[2] * 1.1, first[3] * 1.1))


def test_crop_filter_is_a_low_pass_on_corners_and_keeps_squares():
    f = CropFilter(alpha=0.9)
    assert f((0, 0, 100, 100)) == (0, 0, 100, 100)
    x0, y0, w, h = f((100, 50, 200, 200))
    assert (x0, y0) == pytest.approx((90, 45)) and w == pytest.approx(h) == pytest.approx(190)


# ---------------------------------------------------------------- identity
def walker(x: float, y: float) -> np.ndarray:
    offsets = np.random.default_rng(3).uniform(-20, 20, (17, 2))
    return np.concatenate([np.array([x, y]) + offsets, np.full((17, 1), 0.8)], axis=1).astype(np.float32)


def test_oks_of_a_pose_with_itself_is_one_and_falls_with_distance():
    a = walker(100, 100)
    sigmas = np.asarray(COCO17.sigmas) / 10
    assert object_keypoint_similarity(a, a, sigmas) == pytest.approx(1.0)
    near, far = walker(103, 100), walker(160, 100)
    assert 0.2 < object_keypoint_similarity(near, a, sigmas) < 1.0
    assert object_keypoint_similarity(far, a, sigmas) < 0.01


@pytest.mark.parametrize("metric", ["oks", "iou"])
def test_identities_follow_people_in_any_order_and_expire(metric):
    tracker = IdentityTracker(metric=metric, max_age=2)
    ids = tracker.update(np.stack([walker(100, 100), walker(300, 100)]))
    assert ids.tolist() == [1, 2]
    for step in range(1, 4):  # they walk, listed in the other order
        ids = tracker.update(np.stack([walker(300 + 3 * step, 100), walker(100 + 3 * step, 100)]))
        assert ids.tolist() == [2, 1]
    for _ in range(3):  # person 2 leaves for 3 frames (> max_age)
        assert tracker.update(walker(112, 100)[None]).tolist() == [1]
    assert tracker.live_ids() == {1}
    assert tracker.update(np.stack([walker(112, 100), walker(309, 100)])).tolist() == [1, 3]


def test_fixed_ids_are_kept_and_not_given_to_others():
    tracker = IdentityTracker()
    tracker.update(np.stack([walker(100, 100), walker(300, 100)]))
    ids = tracker.update(np.stack([walker(100, 100), walker(300, 100)]), fixed_ids=[2, None])
    assert ids.tolist() == [2, 3]  # pose 1 matches track 2 best, but 2 is taken


# ---------------------------------------------------------------- with the model
@pytest.fixture(scope="module")
def predictor(lightning):
    from movenet.predict import TorchPredictor

    return TorchPredictor(lightning)


@pytest.fixture(scope="module")
def yoga(shared_dir):
    import cv2

    cap = cv2.VideoCapture(str(shared_dir / "data" / "media" / "yoga.mp4"))
    frames = []
    while len(frames) < 30:
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


def test_without_track_and_smooth_the_wrapper_is_the_predictor(predictor, yoga):
    tracker = PoseTracker(predictor, track=False, smooth=False, refine=False)
    refined = PoseTracker(predictor, track=False, smooth=False)
    for frame in yoga[:3]:
        np.testing.assert_array_equal(tracker(frame), predictor(frame))
        np.testing.assert_array_equal(refined(frame), predict_person(predictor, frame))  # movenet predict


def track_of(tracker, frames) -> np.ndarray:
    return np.stack([tracker(f, i / 25) for i, f in enumerate(frames)])


def test_smoothing_reduces_jitter_on_video(predictor, yoga):
    raw = track_of(PoseTracker(predictor, track=False, smooth=False, refine=False), yoga)
    smooth = track_of(PoseTracker(predictor, track=False, refine=False), yoga)
    tfjs = track_of(PoseTracker(predictor, track=False, filter_params=TFJS_ONE_EURO, refine=False), yoga)
    assert (raw[..., 2] > 0.3).all(axis=0).sum() >= 10
    assert keypoint_jitter(smooth) < 0.7 * keypoint_jitter(raw)  # 0.59 when written
    assert keypoint_jitter(tfjs) > 0.9 * keypoint_jitter(raw)  # TF.js' values: 0.94
    assert np.abs(smooth[..., :2] - raw[..., :2]).mean() < 1.5  # no big lag either


def test_tracking_crop_adds_no_jitter_when_the_person_fills_the_frame(predictor, yoga):
    """yoga.mp4: TF.js' crop is almost the whole frame but jumps between it and a shifted
    square, and the keypoints jump with it; ours stays on the whole frame."""
    whole = track_of(PoseTracker(predictor, track=False, smooth=False, refine=False), yoga)
    tracker = PoseTracker(predictor, smooth=False)
    tracked = track_of(tracker, yoga)
    assert tracker.crop is None
    assert keypoint_jitter(tracked) < 1.05 * keypoint_jitter(whole)
    tfjs = track_of(PoseTracker(predictor, smooth=False, **TFJS_CROP), yoga)
    assert keypoint_jitter(tfjs) > 1.3 * keypoint_jitter(whole)  # 1.6x when written


class CountingCalls:
    """A predictor that counts its forward passes."""

    def __init__(self, predictor):
        self.predictor, self.calls = predictor, 0

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def __call__(self, img, box=None):
        self.calls += 1
        return self.predictor(img, box)


def passes_per_frame(tracker, predictor: CountingCalls, frames) -> list[int]:
    counts = []
    for n, frame in enumerate(frames):
        before = predictor.calls
        tracker(frame, n / 25)
        counts.append(predictor.calls - before)
    return counts


def test_second_look_at_the_whole_frame_only_when_the_tracker_would_crop(predictor, yoga, lsp_dir):
    """A person filling the frame (yoga.mp4) keeps one pass per frame; a small person's first
    frame is looked at twice, the next ones once (in the tracking crop); without tracking every
    frame is looked at twice, as `movenet predict`; `refine=False`: one pass, always."""
    counting = CountingCalls(predictor)
    assert passes_per_frame(PoseTracker(counting), counting, yoga[:5]) == [1] * 5
    frames = small_person_frames(lsp_dir, [1])[0][0]
    assert passes_per_frame(PoseTracker(counting), counting, frames) == [2, 1, 1, 1]
    assert passes_per_frame(PoseTracker(counting, track=False), counting, frames) == [2] * 4
    for track in (True, False):
        assert passes_per_frame(PoseTracker(counting, track=track, refine=False), counting, frames) == [1] * 4


def small_person_frames(lsp_dir, indices, scale: float = 0.6, frames: int = 4):
    """LSP photo ``i`` scaled by ``scale`` on a grey 640x480 frame, ``frames`` times:
    [(frames, limb truth [12, 2])]."""
    import cv2

    from movenet.datasets import read_lsp_joints
    from movenet.image import read_image

    paths, joints = read_lsp_joints(lsp_dir)
    clips = []
    for i in indices:
        img = cv2.resize(read_image(paths[i]), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frame = np.full((480, 640, 3), 118, np.uint8)
        frame[200:200 + img.shape[0], 300:300 + img.shape[1]] = img
        clips.append(([frame] * frames, joints[i][5:, :2] * scale + (300, 200)))
    return clips


def test_second_look_finds_small_people_sooner(predictor, lsp_dir):
    """LSP people at a third of their size on a 640x480 frame: with the second look at the first
    frame the tracker starts from a better pose and crop (benchmarks/small_people.py: PCK@0.2
    0.366 -> 0.513 over 200 people; here the mean limb error falls to 0.41x when written)."""
    errors = {True: [], False: []}
    for frames, limbs in small_person_frames(lsp_dir, range(8), scale=1 / 3):
        for refine in (True, False):
            kpts = track_of(PoseTracker(predictor, smooth=False, refine=refine), frames)[-1]
            errors[refine].append(np.median(np.linalg.norm(kpts[5:, :2] - limbs, axis=1)))
    assert np.mean(errors[True]) < 0.8 * np.mean(errors[False])


def test_tracking_crop_closes_in_on_a_small_person(predictor, lsp_dir):
    """A small LSP person on a large grey frame: the crop shrinks around it, and the
    keypoints found in the crop are closer to the truth than whole-frame ones."""
    import cv2

    from movenet.datasets import read_lsp_joints
    from movenet.image import read_image

    paths, joints = read_lsp_joints(lsp_dir)
    errors = {"crop": [], "whole": []}
    for i in (1, 3, 4):
        img = cv2.resize(read_image(paths[i]), None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
        frame = np.full((480, 640, 3), 118, np.uint8)
        frame[200:200 + img.shape[0], 300:300 + img.shape[1]] = img
        truth = joints[i][:, :2] * 0.6 + (300, 200)
        tracker = PoseTracker(predictor, smooth=False)
        for n in range(4):
            kpts = tracker(frame, n / 25)
        x0, y0, side, _ = tracker.crop
        assert side < 320
        limbs = truth[5:]
        assert (limbs >= (x0, y0)).all() and (limbs <= (x0 + side, y0 + side)).all()
        errors["crop"].append(np.linalg.norm(kpts[5:, :2] - limbs, axis=1).mean())
        errors["whole"].append(np.linalg.norm(predictor(frame)[5:, :2] - limbs, axis=1).mean())
    assert np.mean(errors["crop"]) < np.mean(errors["whole"])


def test_multi_pose_tracker_keeps_ids_of_two_still_people(predictor, lsp_dir):
    import cv2

    from movenet.image import read_image

    left, right = (read_image(lsp_dir / "images" / f"im000{i}.jpg") for i in (1, 2))
    frame = np.concatenate([cv2.resize(p, (round(p.shape[1] * 256 / p.shape[0]), 256)) for p in (left, right)], axis=1)
    tracker = MultiPoseTracker(predictor)
    seen = [tracker(frame, n / 25) for n in range(4)]
    for kpts, scores, ids in seen:
        assert kpts.shape[1:] == (17, 3) and len(kpts) == len(scores) == len(ids) >= 2
        assert len(set(ids.tolist())) == len(ids)
    first = {int(i): k for k, i in zip(seen[0][0], seen[0][2])}
    last = {int(i): k for k, i in zip(seen[-1][0], seen[-1][2])}
    kept = [i for i in first if i in last and np.median(np.linalg.norm(first[i][:, :2] - last[i][:, :2], axis=1)) < 15]
    assert len(kept) >= 2


class ReversedKeypoints:
    """A model whose keypoints are COCO's in reverse order, and whose schema says so."""

    def __init__(self, predictor):
        from movenet.schema import KeypointSchema

        last = COCO17.num_keypoints - 1
        self.predictor = predictor
        self.schema = KeypointSchema(
            "coco17_reversed", COCO17.keypoints[::-1], tuple((last - a, last - b) for a, b in COCO17.flip_pairs),
            tuple((last - a, last - b) for a, b in COCO17.skeleton), COCO17.sigmas[::-1])
        self.prior = getattr(predictor, "prior", None)

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def __call__(self, img, box=None):
        return self.predictor(img, box)[::-1].copy()


def test_trackers_read_the_models_own_keypoints(predictor, shared_dir):
    """Without a schema argument a tracker takes the predictor's: the reversed model tracks
    exactly as the original (its torso looked up by name, not at COCO's places)."""
    import cv2

    from movenet.errors import MoveNetError
    from movenet.schema import KeypointSchema

    cap = cv2.VideoCapture(str(shared_dir / "data" / "media" / "pedestrians.avi"))  # a small person: crops
    frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(6)]
    reversed_model = ReversedKeypoints(predictor)
    original, tracker = PoseTracker(predictor), PoseTracker(reversed_model)
    expected = [original(f, n / 25) for n, f in enumerate(frames)]
    got = [tracker(f, n / 25)[::-1] for n, f in enumerate(frames)]
    assert original.crop is not None and tracker.crop == original.crop
    np.testing.assert_allclose(np.stack(got), np.stack(expected), atol=1e-4)
    assert tracker.schema is reversed_model.schema and MultiPoseTracker(reversed_model).schema is reversed_model.schema

    five = KeypointSchema("five", ("a", "b", "c", "d", "e"), (), ())
    with pytest.raises(MoveNetError, match="schema five has 5 keypoints, the model 17"):
        PoseTracker(predictor, schema=five)
    with pytest.raises(MoveNetError, match=r"hips and shoulders, which the model's keypoints \(five\) do not name"):
        PoseTracker(type("Five", (), {"schema": five, "__call__": lambda self, img, box=None: None})())
    PoseTracker(type("Five", (), {"schema": five})(), track=False)  # whole frames need no torso


def test_video_json_names_the_models_keypoints(predictor, shared_dir, tmp_path):
    import json

    from movenet.video import run_video

    js = tmp_path / "reversed.jsonl"
    run_video(str(shared_dir / "data" / "media" / "yoga.mp4"), ReversedKeypoints(predictor), json_out=str(js),
              max_frames=2, progress=False)
    lines = [json.loads(line) for line in js.read_text().splitlines()]
    assert [r["keypoint_names"] for r in lines] == [list(COCO17.keypoints[::-1])] * 2


# ---------------------------------------------------------------- edges found by mutation testing
def reference_one_euro(xs, freq, min_cutoff, beta, dcutoff):
    """Casiez et al. / TF.js, scalar, no threshold, scale 1."""
    def alpha(c):
        return 1.0 / (1.0 + freq / (2 * np.pi * c))

    x_prev, y, dx_hat, out = xs[0], xs[0], 0.0, [xs[0]]
    for x in xs[1:]:
        dx = (x - x_prev) * freq
        dx_hat = dx_hat + alpha(dcutoff) * (dx - dx_hat)
        y = y + alpha(min_cutoff + beta * abs(dx_hat)) * (x - y)
        x_prev = x
        out.append(y)
    return np.array(out)


def test_one_euro_matches_the_reference_step_by_step():
    xs = np.random.default_rng(1).normal(0, 1, 30).cumsum()
    params = dict(frequency=30.0, min_cutoff=1.0, beta=0.7, derivative_cutoff=3.0)
    f = OneEuroFilter(**params, threshold_cutoff=None)
    got = np.array([float(f(np.array([x]))[0]) for x in xs])
    np.testing.assert_allclose(got, reference_one_euro(xs, 30.0, 1.0, 0.7, 3.0), rtol=1e-9, atol=1e-9)


def spread_pose(x, y, spread=40.0, score=0.9):
    """17 keypoints scattered +-``spread`` around (x, y), all scored ``score``."""
    offs = np.random.default_rng(3).uniform(-spread, spread, (17, 2))
    return np.concatenate([np.array([x, y]) + offs, np.full((17, 1), score)], axis=1)


def test_oks_exact_value_with_area_of_the_track_pose():
    b = spread_pose(100, 100)
    a = b.copy()
    a[:, 0] += 5.0
    sig = np.asarray(COCO17.sigmas) / 10
    x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 0].max(), b[:, 1].max()
    area = (x1 - x0) * (y1 - y0) + 1e-6
    expect = np.exp(-25.0 / (2 * area * (2 * sig) ** 2)).mean()
    assert object_keypoint_similarity(a, b, sig) == pytest.approx(expect, rel=1e-6)
    # the tracker divides the schema's sigmas by 10 (TF.js)
    assert IdentityTracker().similarity(a, b) == pytest.approx(expect, rel=1e-6)
    # area is the track's (b), not the pose's: a pose twice as large around the same centre
    a2 = b.copy()
    a2[:, :2] = (b[:, :2] - 100) * 2 + 100
    d2 = ((a2[:, :2] - b[:, :2]) ** 2).sum(1)
    expect = np.exp(-d2 / (2 * area * (2 * sig) ** 2)).mean()
    assert object_keypoint_similarity(a2, b, sig) == pytest.approx(expect, rel=1e-6)


def test_oks_needs_four_keypoints_in_common():
    b = spread_pose(100, 100)
    a = b.copy()
    a[3:, 2] = 0.1  # only 3 confident in both
    assert object_keypoint_similarity(a, b, np.asarray(COCO17.sigmas) / 10) == 0.0


def test_box_iou_exact():
    assert box_iou(np.array([0, 0, 2, 2.0]), np.array([1, 1, 3, 3.0])) == pytest.approx(1 / 7)


def test_similarity_below_0_2_starts_a_new_track():
    t = IdentityTracker()
    b = spread_pose(100, 100)
    t.update(b[None])
    sig = np.asarray(COCO17.sigmas) / 10
    # shift until OKS is ~0.1 (between 0.05 and 0.2)
    for dx in np.linspace(1, 60, 600):
        a = b.copy()
        a[:, 0] += dx
        if object_keypoint_similarity(a, b, sig) < 0.1:
            break
    assert 0.05 < object_keypoint_similarity(a, b, sig) < 0.2
    assert t.update(a[None]).tolist() == [2]


def test_track_survives_exactly_max_age_unseen_frames():
    t = IdentityTracker(max_age=2)
    a, far = spread_pose(100, 100), spread_pose(900, 900)
    assert t.update(a[None]).tolist() == [1]
    t.update(far[None])
    t.update(far[None])  # person 1 unseen for 2 frames (= max_age)
    assert 1 in t.live_ids()
    assert t.update(np.stack([far, a])).tolist() == [2, 1]


def test_max_tracks_keeps_the_most_recent():
    t = IdentityTracker(max_tracks=2)
    t.update(np.stack([spread_pose(100, 100), spread_pose(400, 100)]))
    ids = t.update(spread_pose(900, 900)[None])
    assert ids.tolist() == [3] and 3 in t.live_ids()


class FakePredictor:
    schema = COCO17
    input_size = 192
    prior = np.ones((48, 48), np.float32)
    distance_offset, coord_scale = 1.8, None

    def __init__(self, seq):
        self.seq, self.i = list(seq), 0

    def __call__(self, img, box=None):
        k = self.seq[min(self.i, len(self.seq) - 1)]
        self.i += 1
        return k.astype(np.float32)


def test_a_pose_scoring_zero_resets_the_tracker():
    good = spread_pose(200, 200, spread=60)
    lost = good.copy()
    lost[:, 2] = 0.1
    lost[:, :2] += 50  # pose_score 0, elsewhere
    fake = FakePredictor([good, good, good, lost, good])
    tr = PoseTracker(fake, refine=False)
    frame = np.zeros((400, 400, 3), np.uint8)
    for i in range(3):
        tr(frame, i / 30)
    assert tr.crop is not None
    out = tr(frame, 3 / 30)
    assert tr.crop is None
    # TF.js: a score of 0 resets the tracker, and the pose comes back as it is (unsmoothed)
    np.testing.assert_array_equal(out, lost.astype(np.float32))
    np.testing.assert_array_equal(tr(frame, 4 / 30), good.astype(np.float32))  # the filter starts afresh


def test_multi_tracker_smooths_whole_frame_people_in_units_of_the_longer_side(monkeypatch):
    w, h = 640, 240
    rng = np.random.default_rng(0)
    seq = [spread_pose(300, 120, spread=50)[None] for _ in range(6)]
    for i, s in enumerate(seq):
        s[0, :, :2] += rng.normal(0, 3, (17, 2)) + 2 * i
    it = iter(seq)
    monkeypatch.setattr(tracking, "predict_people",
                        lambda *a, **k: (next(it).astype(np.float32), np.array([0.9], np.float32), None))
    mt = MultiPoseTracker(FakePredictor([]), track=False, refine=False)
    ref = keypoint_filter(w, h)
    frame = np.zeros((h, w, 3), np.uint8)
    for i, s in enumerate(seq):
        out, _, _ = mt(frame, i / 30)
        np.testing.assert_allclose(out[0, :, :2], ref(s[0, :, :2], i / 30, scale=float(max(w, h))), atol=1e-4)


def test_collapsed_pose_threshold_is_relative_to_the_longer_side():
    img = np.zeros((200, 1000, 3), np.uint8)
    k = spread_pose(500, 100, spread=20)  # crop side 1.25 * ~40 = ~50 px: under 1.25*0.05*1000=62.5, over 12.5
    fake = FakePredictor([k, k])
    tracking.look_twice(fake, img)
    assert fake.i == 1  # treated as collapsed: one pass only


def test_no_second_look_for_a_crop_between_below_and_above():
    # first pose's refine crop: 1.25 x 240 = 300 px = 0.75 of the 400 px frame: the tracker would not
    # leave the whole frame for it (below 0.7), so the whole-frame look is not followed by a second
    k = spread_pose(200, 200, spread=0)
    k[:, :2] = np.random.default_rng(5).uniform(80, 320, (17, 2))
    k[0, :2] = (80, 80)
    k[1, :2] = (320, 320)
    fake = FakePredictor([k] * 4)
    PoseTracker(fake, smooth=False)(np.zeros((400, 400, 3), np.uint8))
    assert fake.i == 1


def test_a_small_pose_inside_a_large_one_is_the_same_person():
    big = spread_pose(200, 200, spread=100)
    small = spread_pose(200, 200, spread=30)
    assert tracking._same_person(small, big) and tracking._same_person(big, small)


def _fake_candidates(monkeypatch, regions):
    calls = []
    def cands(predictor, img, box, n, thr):
        rough = np.stack([np.array([[r[0], r[1]], [r[2], r[3]]] * 8 + [[r[0], r[1]]], np.float32) for r in regions])
        kpts = np.concatenate([rough, np.full(rough.shape[:2] + (1,), 0.9, np.float32)], axis=2)
        return kpts, np.full(len(regions), 0.9, np.float32), rough
    def centred(predictor, img, box):
        calls.append(box)
        x0, y0, s, _ = box
        k = np.zeros((17, 3), np.float32)
        k[:, 2] = 0.9
        k[:, :2] = [x0 + s / 2, y0 + s / 2]
        k[0, :2] = [x0 + s * 0.2, y0 + s * 0.2]
        k[1, :2] = [x0 + s * 0.8, y0 + s * 0.8]
        return k, 0.9
    monkeypatch.setattr(tracking, "person_candidates", cands)
    monkeypatch.setattr(tracking, "predict_centred", centred)
    return calls


def test_people_smaller_than_5_percent_of_the_longer_side_are_dropped(monkeypatch):
    calls = _fake_candidates(monkeypatch, [(500, 100, 520, 130)])  # 30 px < 0.05 x 1000, > 0.05 x 200
    kpts, _, _ = tracking.predict_people(FakePredictor([]), np.zeros((200, 1000, 3), np.uint8))
    assert len(kpts) == 0 and not calls


def test_candidates_overlapping_more_than_half_are_looked_at_once(monkeypatch):
    calls = _fake_candidates(monkeypatch, [(100, 100, 300, 300), (130, 130, 330, 330)])  # IoU ~0.56..0.7
    iou = box_iou(np.array([100, 100, 300, 300.]), np.array([130, 130, 330, 330.]))
    assert 0.5 < iou < 0.9
    tracking.predict_people(FakePredictor([]), np.zeros((600, 600, 3), np.uint8))
    assert len(calls) == 1


def test_crop_predictions_below_min_score_are_not_kept(monkeypatch):
    weak = spread_pose(200, 200).astype(np.float32)
    monkeypatch.setattr(tracking, "predict_centred", lambda p, img, box: (weak, 0.1))
    mt = MultiPoseTracker(FakePredictor([]))
    ct = tracking.CropTracker(400, 400)
    ct.box = (100.0, 100.0, 200.0, 200.0)
    mt.crops = {1: ct}
    poses, scores, fixed, views = mt._crop_people(np.zeros((400, 400, 3), np.uint8))
    assert poses == [] and fixed == []


def test_pose_tracker_smooths_in_units_of_the_crop_it_looked_at(monkeypatch):
    scales = []

    class Recorder:
        def __call__(self, values, timestamp=None, scale=None):
            scales.append(float(scale))
            return values

    monkeypatch.setattr(tracking, "keypoint_filter", lambda w, h, **p: Recorder())
    k = spread_pose(200, 200, spread=30)
    fake = FakePredictor([k] * 3)
    tr = PoseTracker(fake, refine=False)
    frame = np.zeros((400, 400, 3), np.uint8)
    tr(frame, 0.0)
    crop = tr.crop
    assert crop is not None and crop[2] < 300
    tr(frame, 1 / 30)
    assert scales == [400.0, pytest.approx(crop[2])]


def test_the_similarity_threshold_is_tfjs_default_for_the_metric():
    assert IdentityTracker().min_similarity == 0.2 and IdentityTracker(metric="iou").min_similarity == 0.15
    assert IdentityTracker(metric="iou", min_similarity=0.5).min_similarity == 0.5
    with pytest.raises(ValueError, match="metric must be 'oks' or 'iou'"):
        IdentityTracker(metric="l2")


def test_a_pose_collapsed_on_one_spot_still_gets_a_croppable_square():
    from movenet.image import crop_and_resize

    spot = pose({k: (200.0, 150.0) for k in range(17)})  # torso visible, every keypoint on one pixel
    box = determine_crop_region(spot, 640, 480)
    assert box == (198.0, 148.0, 4.0, 4.0)  # MIN_CROP_HALF_SIDE around the hips
    frame = np.zeros((480, 640, 3), np.uint8)
    assert np.isfinite(crop_and_resize(frame, box, 64).astype(np.float32)).all()


def test_a_crop_found_again_after_the_whole_frame_starts_afresh_where_the_person_is():
    crops = CropTracker(640, 480)
    crops.update(pose(STANDING))
    lost = pose(STANDING)
    lost[[L_HIP, R_HIP], 2] = 0.1  # torso lost: the whole frame
    assert crops.update(lost) is None
    elsewhere = pose({k: (x - 150, y) for k, (x, y) in STANDING.items()})
    assert crops.update(elsewhere) == determine_crop_region(elsewhere, 640, 480)  # not blended with the old crop


def test_two_poses_near_one_track_do_not_share_its_id():
    t = IdentityTracker()
    a = spread_pose(100, 100)
    assert t.update(a[None]).tolist() == [1]
    b = a.copy()
    b[:, 0] += 2  # both close enough to track 1
    ids = t.update(np.stack([a, b]))
    assert sorted(ids.tolist()) == [1, 2]


def test_candidates_beyond_max_people_are_looked_at_when_the_first_are_dropped(monkeypatch):
    # the two strongest candidates are too small to be people: the next ones still are looked at
    calls = _fake_candidates(monkeypatch, [(500, 100, 520, 130), (600, 100, 620, 130), (100, 20, 300, 180)])
    every = tracking.person_candidates
    monkeypatch.setattr(tracking, "person_candidates",  # the strongest n, as the real one
                        lambda predictor, img, box, n, thr: tuple(a[:n] for a in every(predictor, img, box, n, thr)))
    kpts, _, _ = tracking.predict_people(FakePredictor([]), np.zeros((200, 1000, 3), np.uint8), max_people=1)
    assert len(kpts) == 1 and len(calls) == 1


def test_refined_people_below_min_score_are_not_reported(monkeypatch):
    _fake_candidates(monkeypatch, [(100, 20, 300, 180), (600, 20, 800, 180)])
    every, centred = tracking.person_candidates, tracking.predict_centred

    def candidates(*args):  # the second person scores under min_score in the first look...
        kpts, _, rough = every(*args)
        return kpts, np.array([0.9, 0.1], np.float32), rough

    second_look = iter([0.9, 0.2])  # ...and in the second
    monkeypatch.setattr(tracking, "person_candidates", candidates)
    monkeypatch.setattr(tracking, "predict_centred", lambda *args: (centred(*args)[0], next(second_look)))
    kpts, scores, _ = tracking.predict_people(FakePredictor([]), np.zeros((200, 1000, 3), np.uint8), min_score=0.3)
    assert len(kpts) == 1 and scores.tolist() == [pytest.approx(0.9)] and kpts[0, :, 0].max() < 400


def test_people_far_apart_on_a_diagonal_are_not_the_same_person():
    a, b = spread_pose(100, 100, spread=20), spread_pose(300, 300, spread=20)
    assert not tracking._same_person(a, b) and not tracking._same_person(b, a)


def test_multi_tracker_reports_at_most_max_people_with_crop_people(monkeypatch):
    people = [spread_pose(x, 200, spread=30).astype(np.float32) for x in (100, 300, 500)]
    monkeypatch.setattr(tracking, "predict_people",
                        lambda *a, **k: (np.stack(people[1:]), np.array([0.9, 0.8], np.float32), None))
    mt = MultiPoseTracker(FakePredictor([]), max_people=2, smooth=False, refine=False)
    monkeypatch.setattr(mt, "_crop_people", lambda frame: ([people[0]], [0.95], [None], [200.0]))
    kpts, scores, ids = mt(np.zeros((400, 600, 3), np.uint8), 0.0)
    assert len(kpts) == len(scores) == len(ids) == 2 and scores.tolist() == pytest.approx([0.95, 0.9])


def test_multi_tracker_keeps_each_persons_crop_while_they_barely_move(monkeypatch):
    still = spread_pose(300, 200, spread=40).astype(np.float32)
    moved = still.copy()
    moved[:, 0] += 2  # under the dead band of the crop
    found = iter([still[None], np.zeros((0, 17, 3), np.float32)])
    monkeypatch.setattr(tracking, "predict_people", lambda *a, **k: (next(found), np.array([0.9], np.float32), None))
    monkeypatch.setattr(tracking, "predict_centred", lambda predictor, img, box: (moved, 0.9))
    mt = MultiPoseTracker(FakePredictor([]), smooth=False, refine=False)
    frame = np.zeros((600, 800, 3), np.uint8)
    mt(frame, 0.0)
    (first,) = [c.box for c in mt.crops.values()]
    assert first is not None
    _, _, ids = mt(frame, 1 / 30)
    assert ids.tolist() == [1] and mt.crops[1].box == first


def test_one_pass_people_below_min_score_are_not_reported(monkeypatch):
    class OnePass(FakePredictor):
        def preprocess(self, img):
            return None, (0.0, 0.0, 100.0, 100.0)

        def run(self, batch):
            return [np.zeros((1, 17, 48, 48), np.float32)] * 4

    kpts = np.stack([spread_pose(0.3, 0.5, spread=0.1), spread_pose(0.7, 0.5, spread=0.1)]).astype(np.float32)
    boxes = np.array([[0.2, 0.4, 0.4, 0.6], [0.6, 0.4, 0.8, 0.6]], np.float32)
    monkeypatch.setattr(tracking, "decode_multi", lambda *a: (kpts, np.array([0.9, 0.1], np.float32), boxes))
    found, scores, corners = tracking.predict_people(OnePass([]), np.zeros((100, 100, 3), np.uint8), refine=False,
                                                     min_score=0.3)
    assert scores.tolist() == [pytest.approx(0.9)] and len(found) == len(corners) == 1
    assert found[0, :, 0].max() < 50  # the person on the left


def test_collapsed_pose_threshold_is_relative_to_the_box_looked_at():
    img = np.zeros((1000, 1000, 3), np.uint8)
    k = spread_pose(450, 450, spread=15)  # crop side 1.25 * ~30 px: over 1.25*0.05*100, under 1.25*0.05*1000
    fake = FakePredictor([k, k])
    tracking.look_twice(fake, img, (400.0, 400.0, 100.0, 100.0))
    assert fake.i == 2  # not collapsed in a 100 px box: looked at again


def test_two_crops_finding_one_person_leave_them_to_the_older_track(monkeypatch):
    same = spread_pose(200, 200).astype(np.float32)
    monkeypatch.setattr(tracking, "predict_centred", lambda p, img, box: (same, 0.9))
    mt = MultiPoseTracker(FakePredictor([]))
    for tid in (2, 1):
        mt.crops[tid] = tracking.CropTracker(400, 400)
        mt.crops[tid].box = (100.0, 100.0, 200.0, 200.0)
    poses, scores, fixed, views = mt._crop_people(np.zeros((400, 400, 3), np.uint8))
    assert fixed == [1] and len(poses) == 1


def test_a_repeated_or_missing_timestamp_is_not_another_video(monkeypatch):
    person = spread_pose(200, 200, spread=50)[None].astype(np.float32)
    monkeypatch.setattr(tracking, "predict_people", lambda *a, **k: (person, np.array([0.9], np.float32), None))
    mt = MultiPoseTracker(FakePredictor([]), track=False, smooth=False, refine=False)
    frame = np.zeros((400, 400, 3), np.uint8)
    ids = [mt(frame, t)[2].tolist() for t in (1.0, 1.0, None, 0.5)]
    assert ids == [[1], [1], [1], [2]]  # time going back after a frame without a timestamp: another video


def test_pose_tracker_looks_at_the_whole_frame_when_time_goes_back_after_a_missing_timestamp():
    boxes = []

    class Recording(FakePredictor):
        def __call__(self, img, box=None):
            boxes.append(box)
            return super().__call__(img, box)

    tr = PoseTracker(Recording([spread_pose(200, 200, spread=30)]), refine=False)
    frame = np.zeros((400, 400, 3), np.uint8)
    for t in (1.0, None, 0.5):
        tr(frame, t)
    assert boxes[1] != full_frame_box(400, 400)  # the tracking crop...
    assert boxes[2] == full_frame_box(400, 400)  # ...until another video starts
