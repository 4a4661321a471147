"""The second, top-down look at each person candidate of ``predict_people`` (``refine``):
regressed keypoints, crops, de-duplication, and real LSP photos side by side."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from movenet.decode import distinct_people, regressed_keypoints
from movenet.tracking import MultiPoseTracker, predict_people, refine_crop

K = 17


def test_regressed_keypoints_are_the_centre_plus_its_regression():
    reg = np.zeros((2 * K, 48, 48), np.float32)
    rng = np.random.default_rng(0)
    vectors = rng.uniform(-10, 10, (K, 2)).astype(np.float32)  # (dy, dx) in cells
    reg[:, 20, 30] = vectors.reshape(-1)
    rough = regressed_keypoints(reg, 20, 30)
    np.testing.assert_allclose(rough[:, 0], (30 + vectors[:, 1]) / 48, rtol=1e-6)
    np.testing.assert_allclose(rough[:, 1], (20 + vectors[:, 0]) / 48, rtol=1e-6)
    np.testing.assert_allclose(regressed_keypoints(reg, 20, 30, coord_scale=0.5), rough * 48 * 0.5, rtol=1e-6)


def person(x: float, y: float, size: float = 40.0, seed: int = 0) -> np.ndarray:
    offsets = np.random.default_rng(seed).uniform(-size / 2, size / 2, (K, 2))
    return np.concatenate([np.array([x, y]) + offsets, np.full((K, 1), 0.8)], axis=1).astype(np.float32)


def test_distinct_people_keeps_the_strongest_of_duplicates():
    a, b = person(100, 100), person(300, 100, seed=1)
    near_a = a.copy()
    near_a[:, :2] += 1.5  # the same person seen twice
    people = np.stack([a, b, near_a])
    assert distinct_people(people, np.array([0.5, 0.4, 0.9])) == [2, 1]
    assert distinct_people(people, np.array([0.5, 0.4, 0.9]), max_people=1) == [2]
    assert distinct_people(np.zeros((0, K, 3)), np.zeros(0)) == []


def test_refine_crop_is_a_square_around_the_points():
    points = np.array([[10.0, 20.0], [50.0, 120.0], [30.0, 60.0]])
    x0, y0, w, h = refine_crop(points, expansion=1.5)
    assert w == h == pytest.approx(150.0)
    assert (x0 + w / 2, y0 + h / 2) == pytest.approx((30.0, 70.0))


# ---------------------------------------------------------------- real photos
@pytest.fixture(scope="module")
def predictor(lightning):
    from movenet.predict import TorchPredictor

    return TorchPredictor(lightning)


@pytest.fixture(scope="module")
def lsp(lsp_dir):
    from movenet.datasets import read_lsp_joints
    from movenet.image import read_image

    paths, joints = read_lsp_joints(lsp_dir)
    return [read_image(p) for p in paths[:27]], joints[:27]


def side_by_side(lsp, indices, height: int = 256) -> tuple[np.ndarray, list[np.ndarray]]:
    """LSP photos scaled to ``height``, side by side, and their annotated keypoints there."""
    photos, joints = lsp
    tiles, truths, x = [], [], 0
    for i in indices:
        s = height / photos[i].shape[0]
        tile = cv2.resize(photos[i], (round(photos[i].shape[1] * s), height), interpolation=cv2.INTER_AREA)
        truth = joints[i][:, :2] * (tile.shape[1] / photos[i].shape[1], s) + (x, 0)
        tiles.append(tile)
        truths.append(truth)
        x += tile.shape[1]
    return np.concatenate(tiles, axis=1), truths


def matches(people: np.ndarray, truths: list[np.ndarray]) -> list[int | None]:
    """For each annotated person, the decoded person within 0.2 torso of at least half of its
    12 limb keypoints (greedily, each decoded person used once), or None."""
    used, out = set(), []
    for truth in truths:
        torso = np.linalg.norm(truth[5] - truth[12])
        pck = [float((np.linalg.norm(p[5:, :2] - truth[5:], axis=1) <= 0.2 * torso).mean()) for p in people]
        best = [int(i) for i in np.argsort(pck)[::-1] if i not in used and pck[i] >= 0.5]
        out.append(best[0] if best else None)
        used.update(best[:1])
    return out


def found(people: np.ndarray, truths: list[np.ndarray]) -> int:
    return sum(m is not None for m in matches(people, truths))


TRIPLES = [(0, 1, 2), (3, 4, 5), (24, 25, 26)]  # LSP im0001-im0003, im0004-im0006, im0025-im0027


def test_refine_finds_all_three_people_side_by_side(predictor, lsp):
    one_pass = 0
    for triple in TRIPLES:
        canvas, truths = side_by_side(lsp, triple)
        people, scores, boxes = predict_people(predictor, canvas, min_score=0.3)
        assert people.shape[1:] == (K, 3) and len(scores) == len(boxes) == len(people)
        assert np.all(np.diff(scores) <= 0)
        assert found(people, truths) == 3, triple
        one_pass += found(predict_people(predictor, canvas, min_score=0.3, refine=False)[0], truths)
    assert one_pass <= 6  # one pass over the canvas misses the off-centre people (5 of 9 found when written)


class CountingRuns:
    def __init__(self, predictor):
        self.predictor, self.calls = predictor, 0

    def __getattr__(self, name):
        return getattr(self.predictor, name)

    def run(self, batch):
        self.calls += 1
        return self.predictor.run(batch)


def test_known_people_are_not_looked_at_again(predictor, lsp):
    canvas, truths = side_by_side(lsp, TRIPLES[0])
    counting = CountingRuns(predictor)
    people, _, _ = predict_people(counting, canvas, min_score=0.3)
    every = counting.calls
    assert every >= 1 + 3  # the pass that proposes, and one look at each person
    counting.calls = 0
    rest, _, _ = predict_people(counting, canvas, min_score=0.3, known=list(people))
    assert counting.calls <= every - 3
    assert found(rest, truths) == 0


def test_multi_pose_tracker_finds_and_keeps_three_people(predictor, lsp):
    canvas, truths = side_by_side(lsp, TRIPLES[1])
    tracker = MultiPoseTracker(predictor)
    ids = []
    for t in (0.0, 0.04, 0.08):
        people, _, frame_ids = tracker(canvas, t)
        found_at = matches(people, truths)
        assert None not in found_at
        ids.append([int(frame_ids[i]) for i in found_at])
    assert ids[0] == ids[1] == ids[2] and len(set(ids[0])) == 3


def test_refine_keeps_a_person_only_the_first_look_finds(predictor, shared_dir):
    # An upside-down dancer filling the photo: the crop around its regressed keypoints scores
    # under 0.3, the whole-image look scores above; refine must not lose the person.
    from movenet.image import read_image
    from movenet.tracking import MIN_PERSON_SCORE

    img = read_image(shared_dir / "data" / "media" / "pexels-luis-quintero-1510540.jpg")
    single = predictor(img)
    kpts, scores, _ = predict_people(predictor, img, min_score=MIN_PERSON_SCORE)
    one_pass, _, _ = predict_people(predictor, img, min_score=MIN_PERSON_SCORE, refine=False)
    side = max(img.shape[:2])

    def found(people: np.ndarray) -> bool:
        return any(np.median(np.linalg.norm(p[:, :2] - single[:, :2], axis=1)) < 0.02 * side for p in people)

    assert found(one_pass) and found(kpts)
    assert all(s >= MIN_PERSON_SCORE for s in scores)


# ---------------------------------------------------------------- the single person's second look
class FixedPose:
    """A predictor that answers ``pose`` (in pixels) wherever it looks; records the boxes."""

    def __init__(self, pose: np.ndarray):
        self.pose, self.boxes = pose, []

    def __call__(self, img, box=None):
        self.boxes.append(box)
        return self.pose + (len(self.boxes) - 1)  # the n-th look is told apart by +n


def test_second_look_is_a_crop_of_1_25_times_the_first_pose():
    from movenet.tracking import SECOND_LOOK_EXPANSION, predict_person

    pose = person(300, 200, size=80)
    fake = FixedPose(pose)
    img = np.zeros((480, 640, 3), np.uint8)
    np.testing.assert_array_equal(predict_person(fake, img, refine=False), pose)
    assert fake.boxes == [None]
    fake.boxes.clear()
    second = predict_person(fake, img)
    np.testing.assert_array_equal(second, pose + 1)
    x0, y0, w, h = fake.boxes[1]
    (px0, py0), (px1, py1) = pose[:, :2].min(axis=0), pose[:, :2].max(axis=0)
    assert SECOND_LOOK_EXPANSION == 1.25
    assert w == h == pytest.approx(1.25 * max(px1 - px0, py1 - py0))
    assert (x0 + w / 2, y0 + h / 2) == pytest.approx(((px0 + px1) / 2, (py0 + py1) / 2))
    # inside a given crop, the first look is in that crop
    fake.boxes.clear()
    predict_person(fake, img, box=(100.0, 50.0, 400.0, 400.0))
    assert fake.boxes[0] == (100.0, 50.0, 400.0, 400.0) and fake.boxes[1] == pytest.approx((x0, y0, w, h))


def test_second_look_keeps_a_pose_collapsed_on_a_spot():
    from movenet.tracking import predict_person

    pose = person(300, 200, size=2)  # 2 px across in a 640 px image: nothing to look at again
    fake = FixedPose(pose)
    np.testing.assert_array_equal(predict_person(fake, np.zeros((480, 640, 3), np.uint8)), pose)
    assert fake.boxes == [None]


def on_canvas(photo: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = photo.shape[:2]
    side = max(h, w) * factor
    canvas = np.zeros((side, side, 3), np.uint8)
    y0, x0 = (side - h) // 2, (side - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = photo
    return canvas, np.array([x0, y0])


def test_second_look_finds_people_who_fill_half_or_a_third_of_the_frame(predictor, lsp):
    from movenet.tracking import predict_person

    photos, joints = lsp
    pck = {}
    for factor in (2, 3):
        hits = {"photo": [], "one pass": [], "second look": []}
        for photo, truth in zip(photos, joints):
            canvas, shift = on_canvas(photo, factor)
            torso = np.linalg.norm(truth[5, :2] - truth[12, :2])
            for name, kpts in (("photo", predictor(photo)[:, :2]),
                               ("one pass", predictor(canvas)[:, :2] - shift),
                               ("second look", predict_person(predictor, canvas)[:, :2] - shift)):
                hits[name] += list(np.linalg.norm(kpts[5:] - truth[5:, :2], axis=1) <= 0.2 * torso)
        pck[factor] = {name: float(np.mean(h)) for name, h in hits.items()}
    # when written (LSP im0001-im0027, hard ones): photo 0.710; canvas 2x: one pass 0.549,
    # second look 0.713; 3x: 0.235 and 0.651
    assert pck[2]["second look"] >= pck[2]["photo"] - 0.05, pck
    assert pck[3]["one pass"] < 0.4 and pck[3]["second look"] > pck[3]["one pass"] + 0.3, pck
