"""`movenet predict`: JSON schema, drawings, the built-in photo and bad inputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from movenet.cli import BUILTIN_IMAGE, main
from movenet.schema import COCO17


@pytest.fixture()
def images(tmp_path, lightning):
    img = cv2.imread(str(BUILTIN_IMAGE))
    good = tmp_path / "person.jpg"
    cv2.imwrite(str(good), img)
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    wide = tmp_path / "wide16.png"
    cv2.imwrite(str(wide), (cv2.copyMakeBorder(img, 0, 0, 0, 400, cv2.BORDER_CONSTANT).astype(np.uint16) * 257))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0garbage")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {"good": good, "gray": gray, "wide": wide, "corrupt": corrupt, "empty": empty}


def test_json_schema_and_drawings(tmp_path, images, capsys):
    out = tmp_path / "out.json"
    srcs = [str(images[k]) for k in ("good", "gray", "wide")]
    assert main(["predict", *srcs, "--json", str(out), "--save-dir", str(tmp_path / "draw")]) == 0
    data = json.loads(out.read_text())
    assert [r["image"] for r in data] == srcs
    for r in data:
        assert set(r) == {"image", "width", "height", "keypoint_names", "people"}
        assert r["keypoint_names"] == list(COCO17.keypoints)
        assert len(r["people"]) == 1 and set(r["people"][0]) == {"keypoints", "score"}
        kp = np.array(r["people"][0]["keypoints"])
        assert kp.shape == (17, 3)
        side = max(r["width"], r["height"])  # keypoints may lie past the frame, not past the square
        assert (kp[:, :2] >= -side * 0.05).all() and (kp[:, :2] <= side * 1.05).all()
    assert data[2]["width"] == 912 and data[2]["height"] == 512
    # the padded wide image holds the same person at the same place (padding is right/bottom);
    # she is smaller at the input resolution, so compare the confident face points only
    np.testing.assert_allclose(np.array(data[2]["people"][0]["keypoints"])[:3, :2],
                               np.array(data[0]["people"][0]["keypoints"])[:3, :2], atol=8)
    nose = np.array(data[0]["people"][0]["keypoints"])[0]
    assert 180 < nose[0] < 260 and 80 < nose[1] < 160 and nose[2] > 0.3  # the astronaut's face
    for name in ("person", "gray", "wide16"):
        assert cv2.imread(str(tmp_path / "draw" / f"{name}.jpg")) is not None


def test_a_phone_photo_stored_sideways_is_predicted_upright(tmp_path, images, capsys):
    """Pixels stored turned a quarter to the left, with EXIF orientation 6 (turn right to view):
    the keypoints are those of the upright photo, in its frame."""
    image = pytest.importorskip("PIL.Image")
    upright = cv2.cvtColor(cv2.imread(str(images["good"])), cv2.COLOR_BGR2RGB)
    stored = image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    out = tmp_path / "out.json"
    assert main(["predict", str(images["good"]), str(tmp_path / "phone.jpg"), "--json", str(out)]) == 0
    plain, phone = json.loads(out.read_text())
    assert (phone["width"], phone["height"]) == (plain["width"], plain["height"])
    a, b = (np.array(r["people"][0]["keypoints"]) for r in (plain, phone))
    confident = (a[:, 2] > 0.3) & (b[:, 2] > 0.3)
    assert confident.sum() >= 5
    np.testing.assert_allclose(b[confident, :2], a[confident, :2], atol=10)  # 2% of the side: JPEG noise


def test_predict_looks_again_at_the_person_unless_no_refine(tmp_path, images, lightning):
    from movenet.image import read_image
    from movenet.predict import TorchPredictor
    from movenet.tracking import predict_person

    predictor = TorchPredictor(lightning)
    img = read_image(images["wide"])
    for flags, refine in (([], True), (["--no-refine"], False)):
        out = tmp_path / f"{refine}.json"
        assert main(["predict", str(images["wide"]), "--json", str(out), "--threads", "1", *flags]) == 0
        kp = np.array(json.loads(out.read_text())[0]["people"][0]["keypoints"])
        np.testing.assert_allclose(kp, predict_person(predictor, img, refine=refine), atol=0.01)
    one, two = (np.array(json.loads((tmp_path / f"{r}.json").read_text())[0]["people"][0]["keypoints"])
                for r in (False, True))
    assert np.abs(one[:, :2] - two[:, :2]).max() > 0.5  # the second look moved the keypoints


def test_bad_inputs_are_reported_and_others_processed(tmp_path, images, capsys):
    out = tmp_path / "out.json"
    srcs = [str(images["corrupt"]), str(images["good"]), str(images["empty"]), str(tmp_path / "missing.jpg")]
    assert main(["predict", *srcs, "--json", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("movenet: error:")]
    assert len(errors) == 3
    assert any("corrupt.jpg" in e and "not a readable image" in e for e in errors)
    assert any("empty.png" in e and "empty file" in e for e in errors)
    assert any("missing.jpg" in e and "not found" in e for e in errors)
    assert "Traceback" not in "\n".join(err)
    assert [r["image"] for r in json.loads(out.read_text())] == [str(images["good"])]


def test_no_images_and_outputs_under_a_file_are_one_line_errors(tmp_path, images, capsys):
    none, blocker = tmp_path / "none", tmp_path / "afile"
    none.mkdir()
    blocker.write_text("kept")
    assert main(["predict", str(none)]) == 2
    assert main(["predict", str(images["good"]), "--json", str(blocker / "out.json")]) == 2
    assert main(["predict", str(images["good"]), "--save-dir", str(blocker)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"movenet: error: {none}: no images (.avif, .bmp, .gif, .jfif, .jpe, .jpeg, .jpg, .pgm, .png, "
                   ".ppm, .tif, .tiff, .webp)",
                   f"movenet: error: {blocker}: cannot create the folder ({blocker} is a file)",
                   f"movenet: error: {blocker}: cannot create the folder ({blocker} is a file)"]
    assert blocker.read_text() == "kept" and not list(none.iterdir())
    for name in ("IMG_0001.HEIC", "IMG_0002.heic"):  # an iPhone's photos
        (none / name).write_bytes(b"")
    assert main(["predict", str(none)]) == 2
    assert capsys.readouterr().err.strip().endswith("; 2 HEIC photos there, which OpenCV does not read: convert "
                                                    "them to JPEG")


def test_builtin_photo_without_arguments(tmp_path, lightning):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "movenet", "predict"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "movenet-output/astronaut.jpg" in r.stdout
    assert cv2.imread(str(tmp_path / "movenet-output" / "astronaut.jpg")).shape == (512, 512, 3)


def test_json_to_stdout_is_pure_json(tmp_path, lightning):
    """``--json /dev/stdout`` (a pipe here) is written in place, and the status lines go to
    stderr so that the data read from stdout parse."""
    r = subprocess.run([sys.executable, "-m", "movenet", "predict", str(BUILTIN_IMAGE), "--json", "/dev/stdout",
                        "--threads", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["image"] == str(BUILTIN_IMAGE)
    assert "wrote /dev/stdout (1 image)" in r.stderr and list(tmp_path.iterdir()) == []
    log = tmp_path / "log.txt"  # `>> log`: /dev/stdout is that file, appended to, not replaced
    log.write_text("PREVIOUS\n")
    with open(log, "a") as stdout:
        r = subprocess.run([sys.executable, "-m", "movenet", "predict", str(BUILTIN_IMAGE), "--json", "/dev/stdout",
                            "--threads", "1"], cwd=tmp_path, stdout=stdout, stderr=subprocess.PIPE, text=True,
                           timeout=300)
    assert r.returncode == 0, r.stderr
    previous, data = log.read_text().split("\n", 1)
    assert previous == "PREVIOUS" and json.loads(data)[0]["image"] == str(BUILTIN_IMAGE)


def test_python_m_movenet_is_the_movenet_command():
    # torchrun starts training as `torchrun ... -m movenet train ...`
    r = subprocess.run([sys.executable, "-m", "movenet", "train", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: movenet train" in r.stdout and "torchrun" in r.stdout


def test_unknown_model_is_one_line_error(capsys):
    assert main(["predict", str(BUILTIN_IMAGE), "--model", "nonexistent.pt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nonexistent.pt" in err


def test_sigterm_ends_a_command_as_ctrl_c_does_and_removes_what_it_was_writing(tmp_path, images, monkeypatch,
                                                                              capsys):
    """kill, timeout and schedulers send SIGTERM: the output being written is removed, the exit
    status is 143 with one line, and the process' own handler is back afterwards."""
    import signal
    import time

    import movenet.fileio

    def killed_while_writing(path, obj, indent=2):
        with movenet.fileio.atomic_path(path) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises before this ends
            pytest.fail("SIGTERM did not stop the command")

    monkeypatch.setattr(movenet.fileio, "write_json_atomic", killed_while_writing)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out" / "poses.json"
    assert main(["predict", str(images["good"]), "--json", str(out)]) == 143
    assert capsys.readouterr().err == "movenet: error: terminated\n"
    assert not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGTERM) is before
