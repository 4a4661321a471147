"""What a deployment audit found: options that did nothing, files that did not load, outputs
that replaced inputs, and messages that did not say what was wrong."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnx
import pytest

from movenet.cli import main
from movenet.errors import MoveNetError
from movenet.export import BUILTIN_IMAGE, export_onnx, read_metadata


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--check", "data"], "--check: int8 options; add --int8"),
    (["--threads", "2"], "--threads: int8 options; add --int8"),
    (["--calib", "x.jpg", "--calib-method", "entropy"], "--calib, --calib-method: int8 options"),
    (["--max-drop", "2"], "--max-drop: int8 options"),
    (["--int8", "--calib", "x.jpg", "--opset", "12"], "--int8 needs --opset 13 or newer"),
])
def test_export_refuses_int8_options_that_would_do_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "m.onnx"
    assert main(["export", "lightning", "-o", str(out), *argv]) == 2
    assert message in _one_error(capsys) and not out.exists()


@pytest.mark.parametrize("value", ["-5", "nan", "101"])
def test_max_drop_out_of_range_is_refused_by_the_parser(value, capsys):
    with pytest.raises(SystemExit):
        main(["export", "lightning", "--int8", "--calib", "x.jpg", "--max-drop", value])
    assert "must be in [0, 100]" in capsys.readouterr().err


def test_an_int8_file_that_does_not_load_is_not_kept(lightning, tmp_path):
    from movenet.quantize import DEFAULT_CONFIG, quantize_checked

    fp32 = export_onnx(lightning, tmp_path / "fp32_op11.onnx", opset=11)  # per-channel int8 needs 13
    out = tmp_path / "int8.onnx"
    with pytest.raises(MoveNetError, match=rf"^{out}: not a loadable ONNX model .*; not written$"):
        quantize_checked(fp32, out, [BUILTIN_IMAGE] * 2, None, DEFAULT_CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32_op11.onnx"]


def test_declared_output_shapes_are_the_real_ones(lightning, tmp_path):
    for dynamic, batch in ((False, 1), (True, "batch")):
        path = export_onnx(lightning, tmp_path / f"m{dynamic}.onnx", dynamic_batch=dynamic)
        declared = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
                    for o in onnx.load(str(path)).graph.output}
        assert declared == {"heatmaps": [batch, 17, 48, 48], "centers": [batch, 1, 48, 48],
                            "regression": [batch, 34, 48, 48], "offsets": [batch, 34, 48, 48]}


def test_read_metadata_says_what_is_wrong_in_one_line(tmp_path):
    (tmp_path / "trunc.onnx").write_bytes(b"\x08\x07\x12\xff\xff garbage")
    for name, message in (("none.onnx", "file not found"), ("trunc.onnx", "not an ONNX model")):
        with pytest.raises(MoveNetError, match=f"{name}: {message}"):
            read_metadata(tmp_path / name)


def test_benchmark_json_never_replaces_its_image_or_model(lightning, tmp_path, capsys):
    image = tmp_path / "b.jpg"
    shutil.copy(BUILTIN_IMAGE, image)
    model = export_onnx(lightning, tmp_path / "m.onnx")
    before = model.read_bytes()
    for argv in (["--models", "onnx", "--image", str(image), "--json", str(image)],
                 ["--models", str(model), "--json", str(model)],
                 ["--models", f"onnx:{model}", "--json", str(model)]):
        assert main(["benchmark", "--runs", "1", "--warmup", "0", *argv]) == 2
        assert "--json would overwrite this input" in _one_error(capsys)
    assert model.read_bytes() == before and image.read_bytes() == BUILTIN_IMAGE.read_bytes()


def test_what_writes_checkpoints_writes_pt_files_only(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("data: {sources: [{path: data}]}\n")
    for argv in (["calibrate", str(config), "--model", "lightning", "--out", str(tmp_path / "c.onnx")],
                 ["average", "lightning", "thunder", "--out", str(tmp_path / "c.onnx")],
                 ["weights", "convert", str(tmp_path / "model.json"), str(tmp_path / "c.onnx")]):
        assert main(argv) == 2
        assert "c.onnx: " in (err := _one_error(capsys)) and "must be a .pt checkpoint" in err
    assert not (tmp_path / "c.onnx").exists()


def test_video_out_needs_a_video_name_and_threshold_a_score(tmp_path, capsys):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    for name in ("pose.txt", "pose"):
        assert main(["video", str(clip), "--out", str(tmp_path / name)]) == 2
        assert "--out needs a video file name (.mp4, .avi" in _one_error(capsys)
    with pytest.raises(SystemExit):
        main(["video", str(clip), "--threshold", "5"])
    assert "must be in [0, 1], got 5" in capsys.readouterr().err


def test_a_configs_missing_data_names_the_config_and_where_paths_start(tmp_path, monkeypatch, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text("data: {sources: [{path: ../data/lsp}]}\n")
    monkeypatch.chdir(tmp_path)
    for argv in (["eval", str(config), "--model", "lightning"], ["train", str(config)],
                 ["data", "stats", str(config)]):
        assert main(argv) == 2
        err = _one_error(capsys)
        assert f"{config}: data.sources ../data/lsp not found (relative paths are taken from the " \
               f"working directory, {tmp_path})" in err, argv


def test_int8_check_looks_at_each_person_of_a_group_photo_in_its_crop(tmp_path):
    from movenet.quantize import load_labelled
    from train_helpers import coco_dict

    coco = coco_dict(3, 64)  # one person per image; make the second image hold two
    second = [a for a in coco["annotations"] if a["image_id"] == coco["images"][1]["id"]][0]
    coco["annotations"].append({**second, "id": 999})
    for im in coco["images"]:
        cv2.imwrite(str(tmp_path / im["file_name"]), np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "people.json").write_text(json.dumps(coco))
    views, keypoints = load_labelled(tmp_path / "people.json")
    assert [box is None for _, box in views] == [True, False, False, True] and len(keypoints) == 4
    x, y, w, h = second["bbox"]
    side = 1.25 * max(w, h)
    assert views[1][1] == pytest.approx((x + w / 2 - side / 2, y + h / 2 - side / 2, side, side))


@pytest.mark.parametrize("error, message", [
    (ModuleNotFoundError("No module named 'torch'", name="torch"), "this needs PyTorch, which is not installed"),
    (ImportError("libtorch_cpu.so: cannot open shared object file"), "PyTorch cannot be imported (libtorch_cpu.so"),
    (ModuleNotFoundError("No module named 'scipy'", name="scipy"),
     "this needs scipy, which is not installed: pip install 'movenet[eval]'"),
])
def test_a_missing_or_broken_torch_is_one_line(monkeypatch, capsys, error, message):
    import movenet.cli as cli

    def fails(args):
        raise error
    monkeypatch.setattr(cli, "cmd_predict", fails)
    assert main(["predict"]) == 2
    assert message in _one_error(capsys)
    monkeypatch.setattr(cli, "cmd_predict", lambda args: (_ for _ in ()).throw(ImportError("no module yaml", name="yaml")))
    with pytest.raises(ImportError):  # not torch's: a real bug, shown as one
        main(["predict"])


def test_eval_without_pycocotools_stops_before_the_predictions(monkeypatch, capsys):
    import importlib.util

    import movenet.evaluate

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pycocotools" else find_spec(name, *a))
    monkeypatch.setattr(movenet.evaluate, "cmd_eval", lambda args: pytest.fail("evaluated"))
    assert main(["eval", "data", "--model", "lightning"]) == 2
    assert "this needs pycocotools, which is not installed: pip install 'movenet[eval]'" in _one_error(capsys)


def test_video_of_several_people_refuses_a_keypoints_only_model_before_the_first_frame(shared_dir):
    from movenet.predict import create_predictor
    from movenet.tracking import MultiPoseTracker

    graph = create_predictor(shared_dir / "reference" / "movenet_lightning.onnx")  # Google's: keypoints only
    with pytest.raises(MoveNetError, match="several people need a model with MoveNet's four heads"):
        MultiPoseTracker(graph)


def test_create_predictor_refuses_an_unknown_backend():
    from movenet.predict import create_predictor

    for backend in ("tensorrt", "ONNX"):  # a typo must not quietly run torch
        with pytest.raises(MoveNetError, match=f"backend '{backend}': torch or onnx"):
            create_predictor("lightning", backend=backend)
