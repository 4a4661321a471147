"""`movenet data convert` / `data stats` and the LSP reader on small synthetic folders: both LSP
layouts read the same people, and bad folders fail in one line before anything is written."""
import json

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from movenet.cli import main
from movenet.datasets import LSP_TO_COCO, load_keypoint_dataset, read_lsp_joints
from movenet.errors import DataWarning, MoveNetError
from movenet.schema import COCO17
from train_helpers import write_coco_folder

W, H = 80, 60


def lsp_joints(n: int, seed: int = 0) -> np.ndarray:
    """[3,14,n] LSP joints inside a W x H image, flag 1 (occluded) on a few."""
    rng = np.random.default_rng(seed)
    joints = np.stack([rng.uniform(5, W - 5, (14, n)), rng.uniform(5, H - 5, (14, n)),
                       (rng.random((14, n)) < 0.3).astype(float)])
    return joints


def write_lsp(folder, joints: np.ndarray, extended: bool = False, images: int | None = None):
    (folder / "images").mkdir(parents=True)
    n = joints.shape[2]
    for i in range(n if images is None else images):
        name = f"im{i + 1:05d}.jpg" if extended else f"im{i + 1:04d}.jpg"
        cv2.imwrite(str(folder / "images" / name), np.full((H, W, 3), 90, np.uint8))
    if extended:  # 14 x 3 x N, flag 1 = visible
        stored = joints.transpose(1, 0, 2).copy()
        stored[:, 2] = 1 - stored[:, 2]
    else:
        stored = joints
    savemat(str(folder / "joints.mat"), {"joints": stored})
    return folder


def test_lsp_and_lsp_extended_layouts_read_the_same_people(tmp_path):
    joints = lsp_joints(3)
    plain, _ = write_lsp(tmp_path / "lsp", joints), None
    extended = write_lsp(tmp_path / "lspet", joints, extended=True)
    paths_a, kpts_a = read_lsp_joints(plain)
    paths_b, kpts_b = read_lsp_joints(extended)
    assert [p.name for p in paths_a] == ["im0001.jpg", "im0002.jpg", "im0003.jpg"]
    assert [p.name for p in paths_b] == ["im00001.jpg", "im00002.jpg", "im00003.jpg"]
    np.testing.assert_array_equal(kpts_a, kpts_b)
    for lsp_idx, coco_idx in LSP_TO_COCO.items():  # LSP's flag 1 = occluded -> COCO v 1
        np.testing.assert_allclose(kpts_a[:, coco_idx, 0], joints[0, lsp_idx], rtol=1e-6)
        np.testing.assert_allclose(kpts_a[:, coco_idx, 1], joints[1, lsp_idx], rtol=1e-6)
        np.testing.assert_array_equal(kpts_a[:, coco_idx, 2], np.where(joints[2, lsp_idx] > 0.5, 1, 2))
    out = tmp_path / "lspet.json"
    assert main(["data", "convert", str(extended), str(out)]) == 0
    data = load_keypoint_dataset(out, check_files=True)
    assert [(e.width, e.height) for e in data.images] == [(W, H)] * 3


def test_lsp_joints_are_named_as_lsp_orders_them_and_boxed_by_their_extent(tmp_path):
    from movenet.datasets import lsp_to_coco
    from movenet.schema import COCO17

    lsp_order = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
                 "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"]  # then neck, head top
    assert {i: COCO17.keypoints[c] for i, c in LSP_TO_COCO.items()} == dict(enumerate(lsp_order))
    joints = lsp_joints(2)
    coco = lsp_to_coco(write_lsp(tmp_path / "lsp", joints))
    for ann, n in zip(coco["annotations"], range(2)):
        xy = joints[:2, :12, n].T  # the 12 limb joints
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        np.testing.assert_allclose(ann["bbox"], [x0, y0, x1 - x0, y1 - y0], rtol=1e-6)
        assert ann["area"] == pytest.approx((x1 - x0) * (y1 - y0))


@pytest.mark.parametrize("content, message", [
    ({"points": np.zeros((3, 14, 2))}, "no 'joints' variable (found: points)"),
    ({"joints": np.zeros((3, 15, 2))}, "'joints' is 3 x 15 x 2; expected 3 x 14 x N (LSP) or 14 x 3 x N"),
    ({"joints": np.array([[np.zeros(3), np.zeros(2)]], dtype=object)}, "'joints' is not a numeric array"),
])
def test_bad_joints_files_fail_in_one_line(tmp_path, capsys, content, message):
    (tmp_path / "images").mkdir()
    savemat(str(tmp_path / "joints.mat"), content)
    with pytest.raises(MoveNetError, match="joints.mat: " + message.replace("(", r"\(").replace(")", r"\)")):
        read_lsp_joints(tmp_path)
    assert main(["data", "convert", str(tmp_path), str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and not (tmp_path / "out.json").exists()


def test_convert_refuses_missing_images_and_overwriting_its_input(tmp_path, capsys):
    lsp = write_lsp(tmp_path / "lsp", lsp_joints(5), images=3)
    out = tmp_path / "out.json"
    assert main(["data", "convert", str(lsp), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "2 of 5 image files missing (first: " in err and "im0004.jpg" in err and not out.exists()

    write_coco_folder(tmp_path / "coco", 2, 64)
    source = tmp_path / "coco" / "person_keypoints.json"
    before = source.read_text()
    for target in (source, tmp_path / "coco"):
        assert main(["data", "convert", str(tmp_path / "coco"), str(target)]) == 2
        assert "would overwrite this input" in capsys.readouterr().err
    assert main(["data", "convert", str(source), str(source)]) == 2
    assert source.read_text() == before

    # a COCO file that does not give image sizes gets them from the files
    coco = json.loads(before)
    for im in coco["images"]:
        del im["width"], im["height"]
    source.write_text(json.dumps(coco))
    assert main(["data", "convert", str(source), str(out)]) == 0
    assert {(im["width"], im["height"]) for im in json.loads(out.read_text())["images"]} == {(64, 64)}


def test_convert_checks_every_image_file(tmp_path, capsys):
    """Its output is not written over an image; an empty or non-image file is an error even
    where the JSON gives its size; a size that differs from the file's is warned about."""
    write_coco_folder(tmp_path / "coco", 3, 64)
    source, images = tmp_path / "coco" / "person_keypoints.json", sorted((tmp_path / "coco" / "images").iterdir())
    photo = images[0].read_bytes()
    assert main(["data", "convert", str(source), str(images[0])]) == 2
    assert "would overwrite this image of the data set" in capsys.readouterr().err
    assert images[0].read_bytes() == photo
    out = tmp_path / "out.json"
    for broken in (b"", b"plain text, not a picture"):
        images[1].write_bytes(broken)
        assert main(["data", "convert", str(source), str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"{images[1]}: not a readable image (empty, corrupt or not an image)") and "\n" not in err
        assert not out.exists()
    cv2.imwrite(str(images[1]), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(images[2]), np.zeros((40, 64, 3), np.uint8))  # the JSON says 64 x 64
    with pytest.warns(DataWarning, match="2.png: the image is 64x40, its annotation says 64x64"):
        assert main(["data", "convert", str(source), str(out)]) == 0
    assert [(im["width"], im["height"]) for im in json.loads(out.read_text())["images"]] == [(64, 64)] * 3


def test_image_headers_are_read_whatever_the_image_size(tmp_path):
    """PIL refuses to open images over ~179 megapixels (a decompression-bomb guard); a header
    read for the size is no risk."""
    import warnings

    from PIL import Image

    from movenet.datasets import _image_size

    path = tmp_path / "huge.png"
    Image.new("L", (20000, 10000)).save(path)  # 200 megapixels, a few hundred KB as PNG
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _image_size(path) == (20000, 10000)
    assert Image.MAX_IMAGE_PIXELS is not None  # the guard is back for everything else


def test_stats_reads_the_image_headers(tmp_path, capsys):
    write_coco_folder(tmp_path / "coco", 4, 64)
    images = sorted((tmp_path / "coco" / "images").iterdir())
    cv2.imwrite(str(images[1]), np.zeros((32, 64, 3), np.uint8))  # the JSON says 64 x 64
    images[2].write_bytes(b"")
    out = tmp_path / "s"
    assert main(["data", "stats", str(tmp_path / "coco"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{images[2]}: not a readable image (empty, corrupt or not an image)")
    with pytest.warns(DataWarning) as caught:
        assert main(["data", "stats", str(tmp_path / "coco"), "data.on_bad_image=skip", "--out", str(out)]) == 0
    messages = [str(w.message) for w in caught]
    assert any(f"{images[1]}: the image is 64x32, its annotation says 64x64" in m for m in messages), messages
    assert any(f"{images[2]}: not a readable image (1 in all; on_bad_image=skip skips them)" in m for m in messages)


def test_stats_of_a_data_source_takes_overrides(tmp_path, capsys):
    lsp = write_lsp(tmp_path / "lsp", lsp_joints(5), images=3)
    assert main(["data", "stats", str(lsp), "--out", str(tmp_path / "s")]) == 2
    assert "on_bad_image=skip skips them" in capsys.readouterr().err
    assert main(["data", "stats", str(lsp), "data.on_bad_image=skip", "model.overrides.input_size=128",
                 "--out", str(tmp_path / "s")]) == 0
    assert "3 targets at input 128" in capsys.readouterr().out
    assert (tmp_path / "s" / "target_sizes.png").exists()
    assert main(["data", "stats", str(lsp), "data.no_such_key=1", "--out", str(tmp_path / "s")]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_a_display_backend_setting_plays_no_part_in_the_plots(tmp_path):
    import os
    import subprocess
    import sys

    write_coco_folder(tmp_path / "d", 3, 64)
    env = {**os.environ, "MPLBACKEND": "nonsense", "OMP_NUM_THREADS": "1"}  # (matplotlib refuses to import)
    proc = subprocess.run([sys.executable, "-m", "movenet", "data", "stats", str(tmp_path / "d"), "--out",
                           str(tmp_path / "s")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s" / "target_sizes.png").exists()


def test_an_annotation_file_with_a_byte_order_mark_reads_as_without(tmp_path):
    write_coco_folder(tmp_path / "d", 3, 64)
    path = tmp_path / "d" / "person_keypoints.json"
    plain = load_keypoint_dataset(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))  # as Windows tools write
    marked = load_keypoint_dataset(path)
    assert [len(im.people) for im in marked.images] == [len(im.people) for im in plain.images] == [1, 1, 1]


def test_plotting_target_sizes_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from movenet.samples import plot_target_sizes

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a caller's own choice (a notebook's, a GUI's)
    try:
        sizes = np.array([[50.0, 2000.0], [80.0, 5000.0]])
        plot_target_sizes(sizes, sizes * 1.2, 192, tmp_path / "sizes.png")
        assert matplotlib.get_backend().lower() == "svg"
        assert (tmp_path / "sizes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)


def test_convert_keeps_a_files_own_keypoints(tmp_path, capsys):
    """A COCO file of other keypoints than COCO's 17 (a hand, a 5-point body) converts with its
    own names and order; before, it needed COCO's and was refused."""
    write_coco_folder(tmp_path / "data", 2, 64)
    source = tmp_path / "data" / "person_keypoints.json"
    coco = json.loads(source.read_text())
    names = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
    coco["categories"][0]["keypoints"] = names
    for ann in coco["annotations"]:
        ann["keypoints"] = ann["keypoints"][:15]
        ann["num_keypoints"] = 5
    source.write_text(json.dumps(coco))
    out = tmp_path / "out.json"
    assert main(["data", "convert", str(source), str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["categories"][0]["keypoints"] == names
    assert [a["keypoints"] for a in written["annotations"]] == [a["keypoints"] for a in coco["annotations"]]
    # COCO's 17 and one more, in another order: all of them, in the file's order
    more = json.loads(source.read_text())
    more["categories"][0]["keypoints"] = [*reversed(COCO17.keypoints), "left_foot"]
    for ann in more["annotations"]:
        ann["keypoints"] = [v for i in range(18) for v in (10.0 + i, 20.0 + i, 2)]
        ann["num_keypoints"] = 18
    source.write_text(json.dumps(more))
    assert main(["data", "convert", str(source), str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["categories"][0]["keypoints"] == more["categories"][0]["keypoints"]
    assert written["annotations"][0]["keypoints"] == more["annotations"][0]["keypoints"]
    # a COCO-17 file converts as before: COCO's names in COCO's order
    write_coco_folder(tmp_path / "coco", 2, 64)
    assert main(["data", "convert", str(tmp_path / "coco"), str(tmp_path / "o2.json")]) == 0
    assert json.loads((tmp_path / "o2.json").read_text())["categories"][0]["keypoints"] == list(COCO17.keypoints)
