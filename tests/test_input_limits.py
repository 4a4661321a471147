"""Input a user may give that is valid in form but absurd in size, or damaged in ways that
reach a library's own assertions or log lines: each must still end in our one line (no
traceback, no library's lines before it), or be drawn and read as far as it can be."""
from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import torch

from movenet.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from movenet.cli import main
from movenet.config import load_config
from movenet.datasets import read_mpii
from movenet.draw import draw_pose
from movenet.errors import MoveNetError
from movenet.fileio import check_writable
from movenet.image import read_image
from movenet.model import create_model
from movenet.video import is_camera_index, open_source


def test_an_image_too_large_for_opencv_is_one_error(tmp_path):
    header_only = tmp_path / "huge.ppm"
    header_only.write_bytes(b"P6\n99999 99999\n255\n")  # 10^10 pixels claimed
    with pytest.raises(MoveNetError, match="huge.ppm: not a readable image \\(too large"):
        read_image(header_only)


@pytest.mark.parametrize("ext", [".tiff", ".bmp"])
def test_a_damaged_header_prints_no_opencv_log_line(tmp_path, capfd, ext):
    ok, buf = cv2.imencode(ext, np.full((64, 64, 3), 90, np.uint8))
    path = tmp_path / f"cut{ext}"
    path.write_bytes(buf.tobytes()[:40])
    with pytest.raises(MoveNetError, match=f"cut{ext}: not a readable image"):
        read_image(path)
    assert capfd.readouterr().err == ""


def test_a_float_image_holding_nan_reads_without_a_warning(tmp_path):
    img = np.full((8, 8, 3), 0.5, np.float32)
    img[2, 3] = np.nan
    ok, buf = cv2.imencode(".tiff", img)
    path = tmp_path / "float.tiff"
    path.write_bytes(buf.tobytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb[2, 3].tolist() == [0, 0, 0] and rgb[0, 0].tolist() == [128, 128, 128]


def test_keypoints_far_off_or_not_numbers_are_drawn_as_far_as_they_can_be():
    kpts = np.zeros((17, 3))
    kpts[:, :2], kpts[:, 2] = (50, 50), 1.0
    kpts[5] = (1e12, 50, 1.0)  # a label gone wrong: the bones to it are drawn towards the right
    kpts[6] = (np.nan, 50, 1.0)  # not drawn
    kpts[11] = (-3e15, 50, 1.0)
    out = draw_pose(np.zeros((100, 100, 3), np.uint8), kpts, threshold=0.5)
    assert out[50, 99].any() and out[50, 0].any()  # the lines to x = 1e12 and x = -3e15
    clean = kpts.copy()
    clean[6, 2] = 0  # NaN drawn as a hidden keypoint is
    np.testing.assert_array_equal(out, draw_pose(np.zeros((100, 100, 3), np.uint8), clean, threshold=0.5))


@pytest.mark.parametrize("schema, message", [
    ({"keypoints": ["a"]}, "bad keypoint schema in checkpoint"),
    (5, "bad keypoint schema in checkpoint"),
    ("nope", "bad keypoint schema in checkpoint"),
    ({"name": "two", "keypoints": ["a", "b"]}, "its keypoint schema two has 2 keypoints, its model 17"),
])
def test_a_checkpoint_with_a_bad_schema_is_one_error(tmp_path, schema, message):
    path = tmp_path / "m.pt"
    save_checkpoint(path, create_model("lightning", input_size=64))
    ckpt = torch.load(path, weights_only=False)
    ckpt["schema"] = schema
    with pytest.raises(MoveNetError, match=f"m.pt: {message}"):
        model_from_checkpoint(ckpt, path)
    if "bad keypoint schema" in message:  # read from the file (as init and teachers read it), too
        torch.save(ckpt, path)
        with pytest.raises(MoveNetError, match=f"m.pt: {message}"):
            read_checkpoint(path)


def test_a_torchscript_file_is_refused_without_torch_warning(tmp_path):
    path = tmp_path / "script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (torch.jit's own, in torch 2.13)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MoveNetError, match="script.pt: a TorchScript archive, not a movenet checkpoint"):
            read_checkpoint(path)


@pytest.mark.parametrize("argv, message", [
    (["predict", "--threads", "99999999999"], "argument --threads: must be at most 1024, got 99999999999"),
    (["eval", "data", "--threads", "5000"], "must be at most 1024"),
    (["eval", "data", "--px", "1e308"], "argument --px: must be a finite number > 0, got 1e308"),
    (["calibrate", "c.yaml", "--model", "m.pt", "-o", "o.pt", "--offsets", "1e39"], "must be a finite number > 0"),
    (["predict", "--bogus"], "movenet predict: error: unrecognized arguments: --bogus (usage: movenet predict --help)"),
    (["data", "stats", "x", "--bogus"],
     "movenet data stats: error: unrecognized arguments: --bogus (usage: movenet data stats"),
    (["data"], "movenet data: error: the following arguments are required: {stats,convert}"),
    ([], "movenet: error: the following arguments are required: {predict,weights,eval,"),
    (["predict", "--threshold", "nan"], "argument --threshold: must be in [0, 1], got nan"),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "usage:" in err and "--help" in err, err


def test_a_model_size_past_the_limit_is_one_error(tmp_path, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert main(["predict", str(image), "--model", "lightning@3200000000"]) == 2
    assert "at most 2048" in capsys.readouterr().err
    with pytest.raises(ValueError, match="input_size must be at most 2048, got 4096"):
        create_model("lightning", input_size=4096)


@pytest.mark.parametrize("text, message", [
    ("epochs: 2\nbatch_size: 4\nepochs: 3\n", "the key 'epochs' is given twice"),
    ("optim: {lr: 1.0e+300}\n", "optim.lr must be a finite number within float32's range, got 1e\\+300"),
    ("augment: {scale_range: [0.5, 1.0e+39]}\n", "augment.scale_range\\[1\\] must be a finite number within float32"),
    ("threads: 5000\n", "threads must be in \\[0, 1024\\]"),
])
def test_config_numbers_and_keys_that_cannot_be_meant(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(MoveNetError, match=message):
        load_config(path)


def test_an_override_given_twice_is_refused_and_yaml_errors_name_their_line(tmp_path):
    with pytest.raises(MoveNetError, match=r"the override epochs is given twice \(epochs=3 and epochs=4\)"):
        load_config(None, ["epochs=3", "batch_size=2", "epochs=4"])
    assert load_config(None, ["optim.lr=0.01", "ema.decay=0.9"]).optim.lr == 0.01
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\nbatch_size: 4\nepochs: 3\n")
    with pytest.raises(MoveNetError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: not valid YAML (the key 'epochs' is given twice, line 3, column 1)"
    path.write_text("a: [1\nb: 2\n")
    with pytest.raises(MoveNetError, match=r"c.yaml: not valid YAML \(expected ',' or '\]', but got ':', line 2, "
                                           r"column 2\)$"):
        load_config(path)


def test_a_repeated_key_in_separate_mappings_is_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 0.01}\nema: {decay: 0.9}\nlog: {images: 0}\n")
    assert load_config(path).optim.lr == 0.01


def test_a_file_named_like_a_camera_index_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_camera_index("2024")
    (tmp_path / "2024").write_bytes(b"not a video")
    assert not is_camera_index("2024")
    with pytest.raises(MoveNetError, match="^2024: not a readable video"):
        open_source("2024")
    with pytest.raises(MoveNetError, match="^camera 3000000000: cannot be opened"):
        open_source("3000000000")  # beyond C's int: OpenCV's own exception before


def test_an_output_name_ending_in_a_slash_is_refused(tmp_path):
    with pytest.raises(MoveNetError, match="out/: names a folder; give a file name"):
        check_writable(f"{tmp_path}/out/")
    assert not (tmp_path / "out").exists()
    check_writable(f"{tmp_path}/out/", folder=True)  # where a folder is meant, it is one


def test_an_mpii_scale_no_photo_can_hold_is_refused(tmp_path):
    path = tmp_path / "mpii.json"
    record = {"image": "a.jpg", "joints": [[20.0 + 7 * i, 15.0 + 8 * i] for i in range(16)], "joints_vis": [1] * 16,
              "center": [60.0, 70.0], "scale": 1e300}
    path.write_text(json.dumps([record]))
    with pytest.raises(MoveNetError, match="'scale' is not a finite number of a person's size, got 1e\\+300"):
        read_mpii(path)


class _Mkdir:
    """An object whose unpickling makes a folder: what a hostile .pt could do instead."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.mkdir, (self.path,)


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path):
    import pickle

    made = tmp_path / "made-by-the-file"
    path = tmp_path / "hostile.pt"
    torch.save({"format": "movenet-checkpoint-v1", "x": _Mkdir(made)}, path, pickle_module=pickle)
    with pytest.raises(MoveNetError, match=r"hostile.pt: holds posix.mkdir, which a checkpoint does not"):
        read_checkpoint(path)
    assert not made.exists()


@pytest.mark.parametrize("written_by", ["numpy.core", "numpy._core"])
def test_a_training_state_written_under_either_numpy_major_version_reads(tmp_path, written_by):
    """numpy 1.x pickles arrays as numpy.core.multiarray._reconstruct, numpy 2 as numpy._core...:
    a run's last.pt (its random states hold numpy arrays) must resume across that upgrade."""
    import io
    import zipfile

    from movenet.train import rng_state

    state = rng_state()
    path = tmp_path / "last.pt"
    torch.save({"format": "movenet-checkpoint-v1", "rng": state}, path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    pickled = next(name for name in members if name.endswith("data.pkl"))
    ours = np.ndarray.__reduce__(np.zeros(1))[0].__module__.encode()
    assert ours + b"\n_reconstruct" in members[pickled]
    members[pickled] = members[pickled].replace(ours + b"\n", written_by.encode() + b".multiarray\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    read = read_checkpoint(path)["rng"]["numpy"]
    assert read[0] == state["numpy"][0] and np.array_equal(read[1], state["numpy"][1])
