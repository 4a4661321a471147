"""MPII annotations (HRNet/mmpose JSON records and the official .mat) into COCO person
keypoints: joint mapping with correct left/right, masked face points and missing joints,
boxes, loading as a training/eval source, `movenet data convert` round trips, bad inputs."""
import json
import re

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from movenet import samples
from movenet.augment import AugmentConfig
from movenet.cli import main
from movenet.datasets import (MPII_JOINTS, load_keypoint_dataset, mpii_image_root, mpii_to_coco,
                              read_mpii)
from movenet.errors import MoveNetError
from movenet.metrics import head_size
from movenet.schema import COCO17

# MPII index -> COCO-17 index, written out by hand (person-centric left/right in both).
EXPECTED = {0: 16, 1: 14, 2: 12, 3: 11, 4: 13, 5: 15, 10: 10, 11: 8, 12: 6, 13: 5, 14: 7, 15: 9}
IMAGE_SIZE = (160, 200)  # h, w


def joints(x0=20.0, y0=15.0) -> np.ndarray:
    """[16,2] distinct MPII joint positions (MATLAB coordinates) inside a 200x160 image."""
    j = np.arange(16, dtype=np.float64)
    return np.stack([x0 + 7 * j, y0 + 8 * j], axis=1)


def record(image, xy, vis=None, center=(60.0, 70.0), scale=0.6) -> dict:
    return {"image": image, "joints": xy.tolist(), "joints_vis": vis or [1] * 16,
            "center": list(center), "scale": scale}


def write_image(path, size=IMAGE_SIZE):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 100, np.uint8))


def coco_kpts(ann) -> np.ndarray:
    return np.asarray(ann["keypoints"]).reshape(17, 3)


@pytest.fixture
def mpii_json(tmp_path):
    """HRNet layout: annot/train.json + images/; image b.jpg holds two people."""
    xy_a, xy_b, xy_c = joints(), joints(30, 10), joints(90, 5)
    occluded_and_missing = [1] * 16
    for j in (0, 5, 9):  # r_ankle at -1,-1; l_ankle at 0,0: missing. head_top: occluded
        occluded_and_missing[j] = 0
    xy_b[0], xy_b[5] = (-1, -1), (0, 0)
    records = [record("a.jpg", xy_a), record("b.jpg", xy_b, occluded_and_missing),
               record("b.jpg", xy_c, center=(150.0, 80.0), scale=0.5)]
    path = tmp_path / "mpii" / "annot" / "train.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(records))
    for name in ("a.jpg", "b.jpg"):
        write_image(tmp_path / "mpii" / "images" / name)
    return path


def test_json_joints_land_on_the_right_coco_keypoints(mpii_json):
    coco = mpii_to_coco(mpii_json)
    assert [c["name"] for c in coco["categories"]] == ["person"]
    assert coco["categories"][0]["keypoints"] == list(COCO17.keypoints)
    kp = coco_kpts(coco["annotations"][0])
    xy = joints() - 0.5  # MATLAB pixel indices -> pixel centres at i + 0.5
    for mpii_idx, coco_idx in EXPECTED.items():
        np.testing.assert_allclose(kp[coco_idx, :2], xy[mpii_idx])
        assert kp[coco_idx, 2] == 2
    assert COCO17.keypoints[EXPECTED[MPII_JOINTS.index("left_wrist")]] == "left_wrist"
    np.testing.assert_allclose(kp[COCO17.index("left_wrist"), :2], xy[15])
    np.testing.assert_allclose(kp[COCO17.index("right_wrist"), :2], xy[10])
    np.testing.assert_array_equal(kp[:5], 0)  # nose, eyes, ears: no MPII counterpart
    ann = coco["annotations"][0]
    assert ann["num_keypoints"] == 12
    # The box holds every MPII joint, the head top (joint 9, not a COCO keypoint) included.
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    np.testing.assert_allclose(ann["bbox"], [x0, y0, x1 - x0, y1 - y0])
    assert ann["area"] == pytest.approx((x1 - x0) * (y1 - y0))
    np.testing.assert_allclose(ann["neck"], xy[8])
    np.testing.assert_allclose(ann["head_top"], xy[9])


def test_missing_joints_are_unlabelled_and_hidden_ones_occluded(mpii_json):
    coco = mpii_to_coco(mpii_json)
    kp = coco_kpts(coco["annotations"][1])
    right_ankle, left_ankle = COCO17.index("right_ankle"), COCO17.index("left_ankle")
    np.testing.assert_array_equal(kp[[right_ankle, left_ankle]], 0)
    assert coco["annotations"][1]["num_keypoints"] == 10
    assert set(kp[5:, 2][kp[5:, 2] > 0]) == {2}
    # head top flagged 0 at real coordinates: annotated but hidden, still a head size for PCKh
    np.testing.assert_allclose(coco["annotations"][1]["head_top"], joints(30, 10)[9] - 0.5)
    box = coco["annotations"][1]["bbox"]
    assert box[0] > 0 and box[1] > 0  # the -1/0 markers do not drag the box to the origin


def test_records_of_one_image_are_one_image_with_its_sizes(mpii_json, tmp_path):
    coco = mpii_to_coco(mpii_json)
    assert [im["file_name"] for im in coco["images"]] == ["a.jpg", "b.jpg"]
    assert [a["image_id"] for a in coco["annotations"]] == [1, 2, 2]
    assert len({a["id"] for a in coco["annotations"]}) == 3
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (200, 160)
    # Without the image files the sizes are left out (the loader treats them as unknown).
    bare = tmp_path / "bare.json"
    bare.write_text(mpii_json.read_text())
    im = mpii_to_coco(bare)["images"][0]
    assert "width" not in im and "height" not in im
    assert load_keypoint_dataset(bare).images[0].width == 0


def test_people_without_joints_get_the_center_scale_box(tmp_path):
    xy = np.full((16, 2), -1.0)
    path = tmp_path / "train.json"
    path.write_text(json.dumps([record("x.jpg", xy, [0] * 16, center=(101.0, 81.0), scale=0.5),
                                record("x.jpg", xy, [0] * 16, center=(-1.0, -1.0), scale=-1)]))
    coco = mpii_to_coco(path)
    assert len(coco["annotations"]) == 1  # the second places nobody: dropped
    ann = coco["annotations"][0]
    assert ann["num_keypoints"] == 0 and not np.asarray(ann["keypoints"]).any()
    np.testing.assert_allclose(ann["bbox"], [100.5 - 50, 80.5 - 50, 100, 100])  # 0.5 x 200 px
    assert "neck" not in ann and "head_box" not in ann


def test_a_hidden_joint_on_the_image_edge_is_annotated_and_a_head_needs_both_points(tmp_path):
    """MPII's missing-joint marker is (-1, -1) or (0, 0), both coordinates: a hidden joint at
    x = 0 is annotated (occluded). The head size for PCKh needs the neck and the head top."""
    edge = joints()
    edge[3] = (0, 50)  # left hip, hidden, on the left edge
    no_head_top = joints()
    no_head_top[9] = (-1, -1)
    vis = [1] * 16
    vis[3] = vis[9] = 0
    path = tmp_path / "train.json"
    path.write_text(json.dumps([record("e.jpg", edge, vis), record("h.jpg", no_head_top, vis)]))
    first, second = mpii_to_coco(path)["annotations"]
    assert coco_kpts(first)[COCO17.index("left_hip")].tolist() == [-0.5, 49.5, 1.0]
    assert first["num_keypoints"] == 12 and "head_top" in first
    assert "neck" not in second and "head_top" not in second


def test_records_without_joints_vis_or_without_joints(tmp_path):
    xy = joints()
    xy[4] = (-1, -1)
    no_vis = {"image": "v.jpg", "joints": xy.tolist()}
    test_style = {"image": "t.jpg", "center": [50.0, 60.0], "scale": 0.25}  # HRNet's test.json
    path = tmp_path / "records.json"
    path.write_text(json.dumps([no_vis, test_style]))
    coco = mpii_to_coco(path)
    kp = coco_kpts(coco["annotations"][0])
    assert kp[COCO17.index("left_knee"), 2] == 0 and coco["annotations"][0]["num_keypoints"] == 11
    assert kp[COCO17.index("right_knee")].tolist() == [xy[1, 0] - 0.5, xy[1, 1] - 0.5, 2.0]
    np.testing.assert_allclose(coco["annotations"][1]["bbox"], [49.5 - 25, 59.5 - 25, 50, 50])


def test_loads_as_a_source_and_builds_training_samples(mpii_json, tmp_path):
    data = load_keypoint_dataset(mpii_json, check_files=True)
    assert mpii_image_root(mpii_json) == tmp_path / "mpii" / "images"
    assert [e.path for e in data.images] == [tmp_path / "mpii" / "images" / n for n in ("a.jpg", "b.jpg")]
    assert data.num_people == 3 and data.images[1].width == 200
    other = tmp_path / "elsewhere"
    write_image(other / "a.jpg")
    explicit = load_keypoint_dataset(mpii_json, image_root=other)
    assert explicit.images[0].path == other / "a.jpg"

    cfg = samples.DataConfig(sources=[{"path": str(mpii_json)}], val_fraction=0.0)
    train, val = samples.build_datasets(cfg, AugmentConfig(), verbose=False)
    assert val is None and len(train) == 3
    plain = samples.PoseSampleDataset(data, cfg, train=False, verbose=False)
    by_ann = {p.id: p for e in data.images for p in e.people}
    for i in range(len(plain)):
        x = plain[i]
        assert x["heatmap_weight"][:5].sum() == 0  # face points are masked, never background
        kp, m = x["keypoints"].numpy(), x["meta"]["affine"].numpy()
        truth = by_ann[int(x["meta"]["ann_id"])].keypoints
        np.testing.assert_array_equal(kp[:, 2] > 0, truth[:, 2] > 0)
        taught = kp[:, 2] > 0
        back = kp[:, :2] @ m[:, :2].T + m[:, 2]
        np.testing.assert_allclose(back[taught], truth[taught, :2], atol=0.05)
    x = train[0]
    assert x["image"].shape == (3, 192, 192) and x["heatmap_weight"][:5].sum() == 0


# ---------------------------------------------------------------- the official .mat
def struct_array(items: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """A MATLAB 1xN struct array; fields an item lacks are empty, as in MATLAB."""
    arr = np.empty((1, len(items)), dtype=[(f, object) for f in fields])
    for i, item in enumerate(items):
        for f in fields:
            arr[0, i][f] = item.get(f, np.zeros((0, 0)))
    return arr


def point(joint, xy, is_visible) -> dict:
    return {"id": joint, "x": float(xy[0]), "y": float(xy[1]), "is_visible": is_visible}


RECT_FIELDS = ("x1", "y1", "x2", "y2", "annopoints", "scale", "objpos")


def write_release(path, annolist, img_train):
    release = {"annolist": struct_array(annolist, ("image", "annorect")),
               "img_train": np.array([img_train]), "single_person": np.zeros((1, len(img_train)), object)}
    savemat(str(path), {"RELEASE": release})


@pytest.fixture
def mpii_mat(tmp_path):
    """The irregular shapes of the official file: struct arrays of rects and points, a single
    rect and a single point (squeezed to plain structs), is_visible as int, '1', '0' and '',
    a rect without annopoints, a test image without joints."""
    xy = joints()
    full = [point(j, xy[j], v) for j, v in zip(range(16), [1, "1", "0", "", 0] + [1] * 11)]
    del full[6]  # pelvis not annotated
    rect_full = {"x1": 100.0, "y1": 10.0, "x2": 130.0, "y2": 50.0, "scale": 0.7,
                 "objpos": {"x": 80.0, "y": 90.0},
                 "annopoints": {"point": struct_array(full, ("id", "x", "y", "is_visible"))}}
    rect_position_only = {"scale": 0.4, "objpos": {"x": 150.0, "y": 60.0}}
    rect_nothing = {}
    one_point = {"scale": 0.3, "objpos": {"x": 10.0, "y": 10.0},
                 "annopoints": {"point": point(15, (42.0, 43.0), 1)}}
    annolist = [
        {"image": {"name": "m1.jpg"},
         "annorect": struct_array([rect_full, rect_position_only, rect_nothing], RECT_FIELDS)},
        {"image": {"name": "m2.jpg"}, "annorect": one_point},  # a single rect: a 1x1 struct
        {"image": {"name": "test.jpg"}, "annorect": {"scale": 1.0, "objpos": {"x": 5.0, "y": 5.0}}},
        {"image": {"name": "empty.jpg"}},
    ]
    path = tmp_path / "mpii" / "mpii_human_pose_v1_u12_2" / "mpii_human_pose_v1_u12_1.mat"
    path.parent.mkdir(parents=True)
    write_release(path, annolist, [1, 1, 0, 1])
    write_image(tmp_path / "mpii" / "images" / "m1.jpg")
    write_image(tmp_path / "mpii" / "images" / "m2.jpg")
    write_image(tmp_path / "mpii" / "images" / "empty.jpg")
    return path


def test_mat_irregular_structs_convert(mpii_mat):
    images = read_mpii(mpii_mat)
    assert [name for name, _ in images] == ["m1.jpg", "m2.jpg", "empty.jpg"]  # train images only
    (_, m1), (_, m2), (_, empty) = images
    assert len(m1) == 2 and len(m2) == 1 and empty == []  # the rect with nothing is dropped
    v = m1[0].joints[:, 2]
    assert v.tolist()[:7] == [2, 2, 1, 2, 1, 2, 0]  # int 1, '1', '0', '' (not stated), int 0, -, missing
    np.testing.assert_allclose(m1[0].joints[15, :2], joints()[15] - 0.5)
    assert m1[0].head_box == (99.5, 9.5, 30.0, 40.0)
    assert m1[1].joints[:, 2].sum() == 0 and m1[1].scale == pytest.approx(0.4)
    assert m2[0].joints[15].tolist() == [41.5, 42.5, 2.0]

    coco = mpii_to_coco(mpii_mat)
    kp = coco_kpts(coco["annotations"][0])
    for mpii_idx, coco_idx in EXPECTED.items():
        np.testing.assert_allclose(kp[coco_idx, :2], joints()[mpii_idx] - 0.5)
    assert kp[COCO17.index("left_hip"), 2] == 2 and kp[COCO17.index("right_hip"), 2] == 1
    np.testing.assert_array_equal(kp[:5], 0)
    assert coco["annotations"][0]["head_box"] == [99.5, 9.5, 30.0, 40.0]
    # PCKh takes MPII's head size from the head box: 0.6 x its diagonal.
    assert head_size(coco["annotations"][:1])[0] == pytest.approx(0.6 * np.hypot(30, 40))
    single = coco_kpts(coco["annotations"][2])
    assert single[COCO17.index("left_wrist")].tolist() == [41.5, 42.5, 2.0]
    assert single[:, 2].sum() == 2


def test_mat_splits_and_direct_loading(mpii_mat, tmp_path):
    assert [n for n, _ in read_mpii(mpii_mat, split="test")] == ["test.jpg"]
    assert len(read_mpii(mpii_mat, split="all")) == 4
    test_people = read_mpii(mpii_mat, split="test")[0][1]
    assert test_people[0].joints[:, 2].sum() == 0 and test_people[0].center == (4.5, 4.5)
    with pytest.raises(MoveNetError, match="unknown MPII split"):
        read_mpii(mpii_mat, split="val")
    data = load_keypoint_dataset(mpii_mat)  # images/ one folder up, as the official archives unpack
    assert data.images[0].path == tmp_path / "mpii" / "images" / "m1.jpg"
    assert data.num_people == 3 and data.images[0].width == 200
    train, _ = samples.build_datasets(samples.DataConfig(sources=[{"path": str(mpii_mat)}], val_fraction=0),
                                      verbose=False)
    # Targets: the full person only. The one with no joints has nothing to teach; the one with
    # a single joint no size to crop it at.
    assert len(train) == 1 and train.skipped["people without keypoints"] == 1
    assert train.skipped["people with no size to crop (labelled points at one spot, no box)"] == 1


# ---------------------------------------------------------------- movenet data convert
def test_cli_convert_round_trips(mpii_json, tmp_path, capsys):
    for out in (mpii_json.parent.parent / "mpii_coco.json", tmp_path / "out" / "converted.json"):
        assert main(["data", "convert", str(mpii_json), str(out)]) == 0
        line = capsys.readouterr().out.strip()
        assert line == f"wrote {out}: 2 images, 3 people, 34 labelled keypoints"
        written = json.loads(out.read_text())
        assert isinstance(written, dict) and "annotations" in written
        again, original = load_keypoint_dataset(out), load_keypoint_dataset(mpii_json)
        assert [e.path.resolve() for e in again.images] == [e.path.resolve() for e in original.images]
        for a, b in zip(again.images, original.images):
            assert (a.width, a.height) == (b.width, b.height)
            for p, q in zip(a.people, b.people):
                np.testing.assert_array_equal(p.keypoints, q.keypoints)
                assert p.bbox == q.bbox
        assert again.coco["annotations"][0]["neck"] == original.coco["annotations"][0]["neck"]
    assert json.loads((tmp_path / "out" / "converted.json").read_text())["images"][0]["file_name"] \
        == "../mpii/images/a.jpg"


def test_cli_convert_mat_with_image_root(mpii_mat, tmp_path, capsys):
    out = tmp_path / "coco" / "mpii.json"
    images = tmp_path / "mpii" / "images"
    assert main(["data", "convert", str(mpii_mat), str(out), "--images", str(images)]) == 0
    assert "3 images, 3 people" in capsys.readouterr().out
    assert load_keypoint_dataset(out).images[0].path.resolve() == (images / "m1.jpg").resolve()


def test_cli_convert_coco_source(coco_mini, tmp_path, capsys):
    out = tmp_path / "coco.json"
    assert main(["data", "convert", str(coco_mini), str(out)]) == 0
    capsys.readouterr()
    again, original = load_keypoint_dataset(out, check_files=True), load_keypoint_dataset(coco_mini)
    assert again.num_people == original.num_people
    np.testing.assert_array_equal(again.images[3].people[0].keypoints, original.images[3].people[0].keypoints)


# ---------------------------------------------------------------- bad inputs
def bad_json(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, text, problem", [
    ("broken.json", '[{"image": "a.jpg", ', "not valid JSON"),
    ("preds.json", '[{"image_id": 1, "keypoints": []}]', r"records\[0\] is not an MPII record"),
    ("short.json", json.dumps([record("a.jpg", joints()[:15])]), r"a\.jpg\): 15 joints, expected 16"),
    ("pairs.json", json.dumps([{"image": "a.jpg", "joints": [[1, 2, 3]] * 16}]), r"\[x, y\] pairs"),
    ("vis.json", json.dumps([record("a.jpg", joints(), vis=[1] * 15)]), "15 joints_vis values"),
    ("text.json", json.dumps([{"image": "a.jpg", "joints": [["a", 1]] * 16}]), "list of numbers"),
    ("empty.json", "[]", "non-empty JSON list"),
    ("nothing.json", json.dumps([{"image": "a.jpg"}]), "neither 'joints' nor"),
])
def test_bad_json_is_one_line_naming_the_file(tmp_path, capsys, name, text, problem):
    path = bad_json(tmp_path, name, text)
    with pytest.raises(MoveNetError, match=rf"^{re.escape(str(path))}: .*{problem}"):
        load_keypoint_dataset(path)
    out = tmp_path / "out.json"
    assert main(["data", "convert", str(path), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"movenet: error: {path}: ") and "\n" not in err
    assert not out.exists()


def test_bad_mat_files(tmp_path):
    lsp_like = tmp_path / "joints.mat"
    savemat(str(lsp_like), {"joints": np.zeros((3, 14, 2))})
    with pytest.raises(MoveNetError, match=rf"^{re.escape(str(lsp_like))}: no RELEASE struct"):
        load_keypoint_dataset(lsp_like)
    garbage = bad_json(tmp_path, "garbage.mat", "not a MATLAB file")
    with pytest.raises(MoveNetError, match=rf"^{re.escape(str(garbage))}: cannot read the MATLAB file"):
        mpii_to_coco(garbage)
    flags = tmp_path / "flags.mat"
    write_release(flags, [{"image": {"name": "a.jpg"}}], [1, 0])
    with pytest.raises(MoveNetError, match="2 flags for 1 images"):
        read_mpii(flags)
    bad_id = tmp_path / "bad_id.mat"
    write_release(bad_id, [{"image": {"name": "a.jpg"},
                            "annorect": {"annopoints": {"point": point(16, (1, 2), 1)}}}], [1])
    with pytest.raises(MoveNetError, match=r"annolist\(1\)\.annorect\(1\) \(a\.jpg\): joint id 16"):
        read_mpii(bad_id)
    with pytest.raises(MoveNetError, match="file not found"):
        read_mpii(tmp_path / "missing.mat")
