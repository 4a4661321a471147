"""Targets mirror the decoder: encode -> decode gives the keypoints back."""
import numpy as np
import pytest
import torch

from movenet import decode, targets
from movenet.targets import TargetParams

S = 192
G = S // 4


def random_person(rng, center=(96.0, 96.0), side=120.0, k=17, unlabelled=(1, 2)):
    pts = np.zeros((k, 3))
    pts[:, :2] = np.asarray(center) + rng.uniform(-side / 2, side / 2, size=(k, 2))
    pts[:, 2] = 2
    pts[list(unlabelled), 2] = 0
    return pts


def decode_target(enc, use_center_cell=False):
    if use_center_cell:
        cy, cx = enc["center_cell"]
        return decode.decode_at_center(enc["heatmaps"], enc["regression"], enc["offsets"], int(cy), int(cx))
    return decode.decode_single(enc["heatmaps"], enc["center"], enc["regression"], enc["offsets"])


@pytest.mark.parametrize("kernel", targets.KERNELS)
@pytest.mark.parametrize("center_mode", ["box", "mean"])
def test_encode_decode_round_trip(kernel, center_mode):
    rng = np.random.default_rng(0)
    params = TargetParams(kernel=kernel, center_mode=center_mode)
    for _ in range(20):
        person = random_person(rng)
        # Crops are centred on the person: keep its centre near the grid centre, where the
        # decoder's centre prior cannot move the chosen centre out of the regression patch.
        person[:, :2] += 96 + rng.uniform(-8, 8, 2) - targets.person_center(person, center_mode)
        enc = targets.encode(person, np.zeros((0, 17, 3)), S, params)
        out = decode_target(enc)
        lab = person[:, 2] > 0
        # Exact up to float32: the offset carries the sub-cell residual.
        np.testing.assert_allclose(out[lab, :2] * S, person[lab, :2], atol=1e-3)
        np.testing.assert_allclose(out[lab, 2], 1.0)


def test_round_trip_batched_torch_decoder():
    rng = np.random.default_rng(1)
    people = [random_person(rng) for _ in range(6)]
    encs = [targets.encode(p, np.zeros((0, 17, 3)), S) for p in people]
    stack = {k: torch.from_numpy(np.stack([e[k] for e in encs])) for k in ("heatmaps", "center", "regression", "offsets")}
    out = decode.decode_batch_torch(stack["heatmaps"], stack["center"], stack["regression"], stack["offsets"]).numpy()
    for p, o in zip(people, out):
        lab = p[:, 2] > 0
        np.testing.assert_allclose(o[lab, :2] * S, p[lab, :2], atol=1e-3)


def test_round_trip_with_other_people_in_view():
    rng = np.random.default_rng(2)
    target = random_person(rng, side=80)
    others = np.stack([random_person(rng, center=c, side=60, unlabelled=()) for c in ((20, 30), (170, 160))])
    enc = targets.encode(target, others, S)
    out = decode_target(enc, use_center_cell=True)
    lab = target[:, 2] > 0
    np.testing.assert_allclose(out[lab, :2] * S, target[lab, :2], atol=1e-3)
    # Other people's keypoints are peaks of the all-people heatmaps...
    for person in others:
        cells = targets.to_cell(person[:, :2])
        inside = targets.in_grid(person, S)
        for j in np.flatnonzero(inside):
            assert enc["heatmaps"][j, cells[j, 1], cells[j, 0]] == pytest.approx(1.0)
    # ...and their centres peaks of the centre map; regression only at the target's centre.
    assert (enc["center"] > 0.999).sum() == 3
    cy, cx = enc["center_cell"]
    assert enc["regression_mask"].sum(axis=0).max() == 2 * lab.sum()
    assert enc["regression_mask"][:, cy - 1:cy + 2, cx - 1:cx + 2].sum() == 9 * 2 * lab.sum()


def test_every_regression_cell_points_at_the_keypoint_cell():
    rng = np.random.default_rng(3)
    person = random_person(rng)
    enc = targets.encode(person, np.zeros((0, 17, 3)), S, TargetParams(regression_radius=2))
    cy, cx = enc["center_cell"]
    kcells = targets.to_cell(person[:, :2])
    lab = person[:, 2] > 0
    for y in range(cy - 2, cy + 3):
        for x in range(cx - 2, cx + 3):
            reg = enc["regression"][:, y, x].reshape(17, 2)
            np.testing.assert_array_equal(reg[lab, 0] + y, kcells[lab, 1])
            np.testing.assert_array_equal(reg[lab, 1] + x, kcells[lab, 0])
            out = decode.decode_at_center(enc["heatmaps"], enc["regression"], enc["offsets"], y, x)
            np.testing.assert_allclose(out[lab, :2] * S, person[lab, :2], atol=1e-3)


def test_offsets_neighbourhood_decodes_a_peak_one_cell_off():
    person = np.zeros((17, 3))
    person[:, :2] = [[90.3 + j, 95.7 - j] for j in range(17)]
    person[:, 2] = 2
    off, mask = targets.offset_targets(person, G, S, radius=1)
    u = person[0, :2] / 4
    cell = np.floor(u).astype(int)
    assert 0 <= off[1, cell[1], cell[0]] < 1 and 0 <= off[0, cell[1], cell[0]] < 1
    # At a neighbouring cell the offset still lands on the keypoint.
    x = cell[0] + 1
    assert x + off[1, cell[1], x] == pytest.approx(u[0])
    assert mask[:2].sum() == 2 * 9


def test_unlabelled_keypoints_get_no_target_and_zero_weight():
    rng = np.random.default_rng(4)
    person = random_person(rng, unlabelled=(0, 3, 15))
    enc = targets.encode(person, np.zeros((0, 17, 3)), S)
    for j in (0, 3, 15):
        assert enc["heatmap_weight"][j, 0, 0] == 0
        assert enc["heatmaps"][j].max() == 0
        assert enc["regression_mask"][2 * j:2 * j + 2].sum() == 0
        assert enc["offset_mask"][2 * j:2 * j + 2].sum() == 0
    assert enc["heatmap_weight"][5, 0, 0] == 1


def test_keypoints_outside_the_crop_are_masked():
    person = np.zeros((17, 3))
    person[:, :2] = np.linspace(40, 150, 17)[:, None]
    person[:, 2] = 2
    person[9, :2] = (-12.0, 50.0)     # left of the crop
    person[10, :2] = (S + 5.0, 80.0)  # right of the crop
    person[16, :2] = (100.0, S)       # exactly on the far border: outside [0, S)
    enc = targets.encode(person, np.zeros((0, 17, 3)), S)
    for j in (9, 10, 16):
        assert enc["heatmaps"][j].max() == 0
        assert enc["regression_mask"][2 * j:2 * j + 2].sum() == 0
        assert enc["offset_mask"][2 * j:2 * j + 2].sum() == 0
        # Labelled but out of view: correctly taught as "not in this crop".
        assert enc["heatmap_weight"][j, 0, 0] == 1
    assert enc["heatmaps"][5].max() == pytest.approx(1.0)


def test_center_clipped_into_grid_and_neighbourhood_clipped_at_border():
    person = np.zeros((17, 3))
    person[:, :2] = np.linspace(-60, 2, 17)[:, None]  # centre outside the crop, top-left
    person[:, 2] = 2
    enc = targets.encode(person, np.zeros((0, 17, 3)), S)
    assert tuple(enc["center_cell"]) == (0, 0)
    assert enc["center"][0, 0, 0] == pytest.approx(1.0)
    assert enc["regression_mask"].any(axis=0).sum() == 4  # 2x2 of the 3x3 inside the grid


def test_kernel_peak_shape_and_sigma_follow_person_size():
    params = TargetParams()
    small = np.zeros((17, 3))
    small[:, :2] = np.linspace(90, 100, 17)[:, None]
    small[:, 2] = 2
    big = small.copy()
    big[:, :2] = np.linspace(10, 180, 17)[:, None]
    assert targets.person_sigma(small, params) == params.sigma_min
    assert targets.person_sigma(big, params) > targets.person_sigma(small, params)
    for kind in targets.KERNELS:
        heat = targets.draw_peaks(G, np.array([[20, 24]]), np.array([2.0]), kind)
        assert heat[24, 20] == 1.0
        row = heat[24, 20:]
        assert np.all(np.diff(row) <= 0) and row[7] == 0  # decreasing, cut at 3 sigma
        assert heat[24, 21] == pytest.approx(np.exp(-1 / 8) if kind == "gaussian" else np.exp(-0.5))


def test_target_without_labels_is_rejected():
    with pytest.raises(ValueError, match="no labelled keypoint"):
        targets.encode(np.zeros((17, 3)), np.zeros((0, 17, 3)), S)
    with pytest.raises(ValueError, match="kernel"):
        TargetParams(kernel="box")


# ---------------------------------------------------------------- edges and settings
def _person(lo=60.0, hi=130.0, seed=0):
    rng = np.random.default_rng(seed)
    p = np.zeros((17, 3))
    p[:, :2] = rng.uniform(lo, hi, (17, 2))
    p[:, 2] = 2
    return p


NOBODY = np.zeros((0, 17, 3))


def test_keypoints_on_or_beyond_the_crops_top_and_right_edges():
    p = _person()
    p[0, :2] = (100.0, 1.0)  # inside, in the top row of cells
    p[1, :2] = (100.0, -3.0)  # above the crop
    p[2, :2] = (float(S), 100.0)  # on the right border: the crop is [0, S)
    enc = targets.encode(p, NOBODY, S)
    assert enc["heatmaps"][0].max() == 1.0
    assert enc["offset_mask"][:, G - 1, :].sum() == 0  # the top row's neighbourhood does not wrap to the bottom
    for j in (1, 2):
        assert enc["heatmaps"][j].max() == 0
        assert enc["regression_mask"][2 * j:2 * j + 2].sum() == 0 and enc["offset_mask"][2 * j:2 * j + 2].sum() == 0


def test_the_gaussian_is_round_and_cut_beyond_three_sigma():
    heat = targets.draw_peaks(G, np.array([[20, 24]]), np.array([2.0]), "gaussian")  # (x, y), sigma 2 cells
    assert heat[25, 20] == pytest.approx(heat[24, 21]) == pytest.approx(np.exp(-1 / 8))
    assert heat[24, 26] == pytest.approx(np.exp(-4.5)) and heat[30, 20] == pytest.approx(np.exp(-4.5))  # 3 sigma
    assert heat[24, 27] == 0 and heat[31, 20] == 0


def test_the_default_centre_is_the_keypoint_boxs_not_the_mean():
    p = np.zeros((17, 3))
    p[:, 2] = 2
    p[:, :2] = (80.0, 80.0)
    p[0, :2] = (140.0, 140.0)  # box centre 110, mean 83.5
    assert tuple(targets.encode(p, NOBODY, S)["center_cell"]) == (110 // 4, 110 // 4)
    mean = targets.encode(p, NOBODY, S, TargetParams(center_mode="mean"))["center_cell"]
    assert tuple(mean) == (int(p[:, 1].mean() // 4), int(p[:, 0].mean() // 4))


@pytest.mark.parametrize("kind", targets.KERNELS)
def test_the_centre_takes_the_kernel_and_its_sigma_scale(kind):
    p = _person(20, 170)
    sigma = targets.person_sigma(p, TargetParams())
    for scale in (1.0, 2.0):
        enc = targets.encode(p, NOBODY, S, TargetParams(kernel=kind, center_sigma_scale=scale))
        cy, cx = enc["center_cell"]
        s = sigma * scale
        want = np.exp(-1 / (2 * s * s)) if kind == "gaussian" else np.exp(-1 / s)
        assert enc["center"][0, cy, cx + 1] == pytest.approx(want, rel=1e-5)


def test_other_peoples_peaks_have_their_own_width():
    small = _person(8, 28)  # ~20 px: sigma_min
    big = _person(90, 190, seed=1)
    enc = targets.encode(big, small[None], S)
    s = targets.person_sigma(small, TargetParams())
    assert s < targets.person_sigma(big, TargetParams())
    x, y = targets.to_cell(small[5, :2])
    assert enc["heatmaps"][5, y, x + 1] == pytest.approx(np.exp(-1 / (2 * s * s)), rel=1e-5)


def test_a_centre_beyond_the_bottom_right_is_clipped_into_the_grid():
    p = np.zeros((17, 3))
    p[:, 2] = 2
    p[:, :2] = np.linspace(185, 260, 17)[:, None]  # mostly outside the crop
    enc = targets.encode(p, NOBODY, S)
    assert tuple(enc["center_cell"]) == (G - 1, G - 1)
    assert enc["regression_mask"].any(axis=0).sum() == 4  # the 3x3 neighbourhood cut to the 2x2 inside


def test_the_calibrated_distance_offset_reaches_the_centre_prior_and_the_keypoint_weighting():
    rng = np.random.default_rng(0)
    heads = [rng.uniform(0, 1, (17, G, G)).astype(np.float32), rng.uniform(0, 1, (1, G, G)).astype(np.float32),
             rng.normal(0, 8, (34, G, G)).astype(np.float32), rng.uniform(0, 1, (34, G, G)).astype(np.float32)]
    for off in (0.3, 6.0):
        implicit = decode.decode_single(*heads, distance_offset=off)
        explicit = decode.decode_single(*heads, prior=decode.center_prior(G, off), distance_offset=off)
        np.testing.assert_array_equal(implicit, explicit)
        by_hand = 1.0 / (np.hypot(*np.mgrid[0:G, 0:G] - G / 2) + off)
        np.testing.assert_allclose(decode.center_prior(G, off), by_hand, rtol=1e-6)
        batch = decode.decode_batch_torch(*[torch.from_numpy(h[None]) for h in heads], distance_offset=off)
        np.testing.assert_allclose(batch.numpy()[0], implicit, atol=1e-5)
    assert not np.array_equal(decode.decode_single(*heads, distance_offset=0.3),
                              decode.decode_single(*heads, distance_offset=6.0))


def test_with_everyones_centres_a_centre_on_the_crops_edge_is_outside():
    target = _person(20, 60)
    other = _person(150, 170, seed=2)
    x0, x1 = other[:, 0].min(), other[:, 0].max()
    other[:, 0] += S - (x0 + x1) / 2  # its box centre exactly on the right edge (x = S)
    enc = targets.encode(target, other[None], S, TargetParams(center_all_people=True))
    assert enc["center"][0, :, G - 4:].max() == 0  # no centre drawn at the edge
    inside = other.copy()
    inside[:, 0] -= 2.0
    enc = targets.encode(target, inside[None], S, TargetParams(center_all_people=True))
    assert enc["center"][0, :, G - 4:].max() > 0.9
