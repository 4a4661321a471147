"""Tracking crop (TF.js rules), One Euro filter, identity tracking and the PoseTracker wrappers."""
from __future__ import annotations

import numpy as np
import pytest

from movenet.schema import COCO17
from movenet.tracking import (TFJS_ONE_EURO, CropFilter, IdentityTracker, MultiPoseTracker, OneEuroFilter,
                              PoseTracker, determine_crop_region, full_frame_box, keypoint_filter,
                              keypoint_jitter, object_keypoint_similarity, torso_and_body_range,
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


def test_reduces_jitter_of_a_noisy_constant_signal():
    rng = np.random.default_rng(0)
    noisy = 200 + rng.normal(0, 0.5, (200, 17, 2))  # half a pixel of noise on a 360 px frame
    f = keypoint_filter(360, 360)
    smooth = np.stack([f(x, i / 25) for i, x in enumerate(noisy)])
    # TF.js' large beta lets the filter open up at once: the defaults smooth only a little
    assert jitter(smooth[20:]) < 0.85 * jitter(noisy[20:])
    assert np.abs(smooth[20:] - 200).mean() < np.abs(noisy[20:] - 200).mean()
    stronger = keypoint_filter(360, 360, min_cutoff=1.0, beta=50.0)  # lower cut-off, less speed-up
    smoother = np.stack([stronger(x, i / 25) for i, x in enumerate(noisy)])
    assert jitter(smoother[20:]) < 0.5 * jitter(noisy[20:])


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
    in_pixels, normalised = keypoint_filter(640, 480), OneEuroFilter(**TFJS_ONE_EURO)
    for i, x in enumerate(norm):
        np.testing.assert_allclose(in_pixels(x * size, i / 30), normalised(x, i / 30) * size, rtol=1e-9)


def test_timestamps_not_increasing_pass_the_value_through():
    f = OneEuroFilter(scale=100.0)
    f(np.array([0.0]), 1.0)
    f(np.array([10.0]), 1.04)
    assert f(np.array([50.0]), 1.04)[0] == 50.0
    assert f(np.array([50.0]), 0.5)[0] == 50.0
    f.reset()
    assert f(np.array([7.0]), 0.0)[0] == 7.0


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
    tracker = PoseTracker(predictor, track=False, smooth=False)
    for frame in yoga[:3]:
        np.testing.assert_array_equal(tracker(frame), predictor(frame))


def test_smoothing_reduces_jitter_on_video(predictor, yoga):
    raw, smooth = PoseTracker(predictor, track=False, smooth=False), PoseTracker(predictor, track=False)
    a = np.stack([raw(f, i / 25) for i, f in enumerate(yoga)])
    b = np.stack([smooth(f, i / 25) for i, f in enumerate(yoga)])
    assert (a[..., 2] > 0.3).all(axis=0).sum() >= 10
    assert keypoint_jitter(b) < 0.95 * keypoint_jitter(a)
    assert np.abs(b[..., :2] - a[..., :2]).mean() < 3.0  # no big lag either


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
