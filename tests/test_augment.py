"""Geometry (one affine for image and keypoints), the left/right flip, photometric changes and
pose-cluster balancing."""
import numpy as np
import pytest

from movenet import augment
from movenet.augment import AugmentConfig, Geometry
from movenet.image import crop_and_resize
from movenet.schema import COCO17

S = 96
FLIP = COCO17.flip_index()
L_WRIST, R_WRIST = COCO17.index("left_wrist"), COCO17.index("right_wrist")


def textured(h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def two_people(seed=0):
    rng = np.random.default_rng(seed)
    kpts = np.zeros((2, 17, 3))
    kpts[..., 0] = rng.uniform(0, S, (2, 17))
    kpts[..., 1] = rng.uniform(0, S, (2, 17))
    kpts[..., 2] = rng.integers(0, 3, (2, 17))
    return kpts


def test_crop_matrix_without_rotation_is_crop_and_resize():
    img = textured()
    geom = Geometry(center=(70.0, 55.0), side=80.0)
    m = augment.crop_matrix(geom, S)
    expected = crop_and_resize(img, (30.0, 15.0, 80.0, 80.0), S)
    np.testing.assert_array_equal(augment.warp(img, m, S), expected)


def test_flip_in_the_matrix_equals_mirroring_the_crop():
    img = textured()
    people = two_people()
    geom = Geometry(center=(80.0, 60.0), side=100.0, angle_deg=17.0)
    m = augment.crop_matrix(geom, S)
    m_flip = augment.crop_matrix(Geometry(geom.center, geom.side, geom.angle_deg, flip=True), S)
    crop, kp = augment.warp(img, m, S), augment.transform_keypoints(people, m)
    mirrored, kp_mirrored = augment.hflip(crop, kp, FLIP)
    # OpenCV interpolates in fixed point: sub-pixel positions differ in rounding only.
    assert np.abs(augment.warp(img, m_flip, S).astype(int) - mirrored).max() <= 1
    np.testing.assert_allclose(augment.swap_labels(augment.transform_keypoints(people, m_flip), FLIP),
                               kp_mirrored, atol=1e-9)


def test_flip_twice_is_identity():
    img, people = textured(), two_people(1)
    once = augment.hflip(img, people, FLIP)
    twice = augment.hflip(*once, FLIP)
    np.testing.assert_array_equal(twice[0], img)
    np.testing.assert_allclose(twice[1], people)
    assert not np.array_equal(once[0], img)


def test_flip_swaps_left_and_right_labels_of_all_people():
    img = textured(w=S, h=S)
    people = two_people(2)
    people[:, :, 2] = 2
    _, out = augment.hflip(img, people, FLIP)
    for p in range(2):
        # The left wrist becomes the right wrist at the mirrored position, for every person.
        assert out[p, R_WRIST, 0] == pytest.approx(S - people[p, L_WRIST, 0])
        assert out[p, R_WRIST, 1] == pytest.approx(people[p, L_WRIST, 1])
        assert out[p, L_WRIST, 0] == pytest.approx(S - people[p, R_WRIST, 0])
        nose = COCO17.index("nose")
        assert out[p, nose, 0] == pytest.approx(S - people[p, nose, 0])
    # Not a reversal of the person list: person 0 stays person 0.
    assert out[0, 0, 1] == pytest.approx(people[0, 0, 1])


def test_keypoints_follow_the_image_content():
    rng = np.random.default_rng(3)
    cfg = AugmentConfig(rotation_prob=1.0, rotation_deg=45, flip_prob=0.5)
    for trial in range(10):
        img = np.zeros((200, 240, 3), np.uint8)
        x, y = rng.uniform(60, 180), rng.uniform(60, 140)
        xi, yi = int(round(x)), int(round(y))
        img[yi - 1:yi + 2, xi - 1:xi + 2] = 255
        kp = np.array([[[xi + 0.5, yi + 0.5, 2.0]]])  # the dot's centre, continuous coordinates
        base = augment.base_geometry(np.array([x - 40, y - 40, 80, 80]), 1.25)
        geom = augment.random_geometry(base, cfg, rng)
        m = augment.crop_matrix(geom, S)
        crop = augment.warp(img, m, S).astype(float).sum(axis=2)
        where = augment.transform_keypoints(kp, m)[0, 0, :2]
        ys, xs = np.nonzero(crop > 0.5 * crop.max())
        weights = crop[ys, xs]
        centroid = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)]) + 0.5
        assert np.abs(centroid - where).max() < 0.35, trial


def test_random_geometry_respects_ranges():
    rng = np.random.default_rng(4)
    cfg = AugmentConfig(scale_range=(0.5, 0.8), translate=0.0, rotation_prob=0.0, flip_prob=0.0)
    base = Geometry(center=(10.0, 20.0), side=100.0)
    for _ in range(50):
        g = augment.random_geometry(base, cfg, rng)
        assert 50 <= g.side <= 80 and g.center == base.center and g.angle_deg == 0 and not g.flip


def test_random_shifts_and_rotations_go_both_ways():
    rng = np.random.default_rng(5)
    cfg = AugmentConfig(scale_range=(1.0, 1.0), translate=0.1, rotation_prob=1.0, rotation_deg=30.0)
    base = Geometry(center=(0.0, 0.0), side=100.0)
    draws = [augment.random_geometry(base, cfg, rng) for _ in range(500)]
    shifts = np.array([g.center for g in draws])
    angles = np.array([g.angle_deg for g in draws])
    assert np.abs(shifts).max() <= 10 and np.abs(angles).max() <= 30
    for values, spread in ((shifts[:, 0], 10), (shifts[:, 1], 10), (angles, 30)):
        assert values.min() < -spread / 2 and values.max() > spread / 2  # not one way only
        assert abs(values.mean()) < spread / 10  # centred


def test_a_positive_angle_turns_the_content_counter_clockwise_on_screen():
    m = augment.crop_matrix(Geometry(center=(100.0, 100.0), side=100.0, angle_deg=90.0), 100)
    right, above = np.array([[120.0, 100.0, 2], [100.0, 80.0, 2]])
    np.testing.assert_allclose(augment.transform_keypoints(np.stack([right, above]), m)[:, :2],
                               [[50, 30], [30, 50]], atol=1e-9)  # right of the centre -> above; above -> left


def test_photometric_changes_and_switches():
    rng = np.random.default_rng(5)
    img = textured(64, 64)
    on = AugmentConfig(color_prob=1.0, blur_prob=1.0, occlusion_prob=1.0)
    out = augment.photometric(img, on, rng)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    off = AugmentConfig(color_prob=0.0, blur_prob=0.0, occlusion_prob=0.0)
    np.testing.assert_array_equal(augment.photometric(img, off, rng), img)


def test_hue_shift_rotates_colours():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0, hue=0.2, gray_prob=0)
    out = augment.color_jitter(red, cfg, np.random.default_rng(6))
    assert out[..., 1:].max() > 20  # some green or blue appeared


def test_occlusion_pastes_boxes():
    img = np.zeros((64, 64, 3), np.uint8)
    cfg = AugmentConfig(occlusion_max_boxes=1, occlusion_size=(0.25, 0.25))
    out = augment.occlude(img, cfg, np.random.default_rng(7))
    changed = (out != 0).any(axis=2)
    assert 0 < changed.sum() <= 16 * 16


def test_normalised_poses_are_translation_and_scale_invariant():
    people = two_people(8)
    people[..., 2] = 2
    moved = people.copy()
    moved[..., :2] = moved[..., :2] * 3.0 + 40
    np.testing.assert_allclose(augment.normalised_poses(people), augment.normalised_poses(moved), atol=1e-9)


def test_kmeans_and_cluster_weights_favour_rare_poses():
    rng = np.random.default_rng(9)
    common = rng.normal(0, 0.05, (90, 4))
    rare = rng.normal(5, 0.05, (10, 4))
    labels = augment.kmeans(np.vstack([common, rare]), 2)
    assert len(set(labels[:90])) == 1 and len(set(labels[90:])) == 1 and labels[0] != labels[95]
    w = augment.cluster_weights(labels, power=1.0)
    assert w.mean() == pytest.approx(1.0)
    assert w[95] == pytest.approx(9 * w[0])  # cluster sizes 90 vs 10


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=2)
    with pytest.raises(ValueError, match="unknown"):
        AugmentConfig.from_dict({"flip": 0.5})
    cfg = AugmentConfig(scale_range=(0.6, 1.0))
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
