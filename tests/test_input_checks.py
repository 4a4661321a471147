"""Bad input on the command line: numbers out of range, outputs that would overwrite the inputs
or cannot be written, configs checked the same way by every command, model files of the wrong
kind. Each is one line (argparse's or ours) and a non-zero exit before any work is done."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from movenet.checkpoint import split_input_size
from movenet.cli import BUILTIN_IMAGE, main
from movenet.errors import MoveNetError
from movenet.fileio import check_writable
from movenet.image import read_image


def _errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if "error:" in line]


@pytest.mark.parametrize("argv", [
    ["predict", "--threads", "-1"],
    ["predict", "--threads", "two"],
    ["eval", "data", "--limit", "0"],
    ["benchmark", "--runs", "0"],
    ["benchmark", "--warmup", "-1"],
    ["export", "lightning", "--opset", "5"],
    ["export", "lightning", "--int8", "--calib", "x", "--calib-limit", "0"],
    ["data", "stats", "data", "--limit", "-3"],
    ["video", "v.mp4", "--max-frames", "0"],
])
def test_numbers_out_of_range_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and ("must be at least" in errors[0] or "not a whole number" in errors[0])


@pytest.mark.parametrize("spec, problem", [
    ("lightning@abc", "got 'abc'"), ("lightning@-32", "got '-32'"), ("lightning@", "got ''"),
    ("lightning@100", "got '100'"), ("lightning@0", "got '0'"),
    ("lightning@3200000000", "got .3200000000."), ("lightning@2080", "got .2080."),
])
def test_a_bad_input_size_says_so(spec, problem):
    with pytest.raises(MoveNetError, match=f"must be a positive multiple of 32, at most 2048, {problem}"):
        split_input_size(spec)


def test_a_file_name_with_an_at_sign_is_a_name():
    assert split_input_size("runs/model@best.pt") == ("runs/model@best.pt", None)
    assert split_input_size("thunder@256") == ("thunder", 256)


def test_check_writable_fails_before_the_work(tmp_path, monkeypatch):
    (tmp_path / "folder").mkdir()
    with pytest.raises(MoveNetError, match="is a folder, not a file"):
        check_writable(tmp_path / "folder")
    assert check_writable(tmp_path / "new" / "out.json") == tmp_path / "new" / "out.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # nothing made, the probe gone

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(MoveNetError, match=rf"out.json: cannot write there \(creating a file in {tmp_path}: Permission denied\)"):
        check_writable(tmp_path / "out.json")
    with pytest.raises(MoveNetError, match=rf"out.json: cannot create {tmp_path / 'a' / 'b'} \(creating a file in "
                       rf"{tmp_path}: Permission denied\)"):  # the folder that cannot be made, not only where it fails
        check_writable(tmp_path / "a" / "b" / "out.json")


@pytest.fixture()
def photos(tmp_path, lightning):
    img = cv2.imread(str(BUILTIN_IMAGE))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    cv2.imwrite(str(a / "x.jpg"), img)
    cv2.imwrite(str(a / "x.png"), img)
    cv2.imwrite(str(b / "x.jpg"), img)
    return a, b


def test_predict_never_overwrites_its_inputs(photos, capsys):
    a, _ = photos
    before = (a / "x.jpg").read_bytes()
    assert main(["predict", str(a), "--save-dir", str(a), "--no-refine"]) == 2
    assert main(["predict", str(a / "x.jpg"), "--json", str(a / "x.jpg"), "--no-refine"]) == 2
    errors = _errors(capsys)
    assert errors == [f"movenet: error: {a / 'x.jpg'}: --save-dir would overwrite this input; choose another name",
                      f"movenet: error: {a / 'x.jpg'}: --json would overwrite this input; choose another name"]
    assert (a / "x.jpg").read_bytes() == before and sorted(p.name for p in a.iterdir()) == ["x.jpg", "x.png"]


def test_predict_gives_each_image_its_own_drawing_and_reads_each_file_once(photos, tmp_path, capsys):
    a, b = photos
    out, js = tmp_path / "drawn", tmp_path / "poses.json"
    assert main(["predict", str(a), str(b), str(a / "*.jpg"), "--save-dir", str(out), "--json", str(js),
                 "--no-refine"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x-2.jpg", "x-3.jpg", "x.jpg"]
    assert [r["image"] for r in json.loads(js.read_text())] == [str(a / "x.jpg"), str(a / "x.png"), str(b / "x.jpg")]
    assert f"wrote {out / 'x-3.jpg'} ({b / 'x.jpg'})" in capsys.readouterr().out


def test_predict_checks_its_outputs_before_the_work_and_writes_no_json_of_nothing(photos, tmp_path, capsys):
    a, _ = photos
    blocker = tmp_path / "afile"
    blocker.write_text("kept")
    drawn = tmp_path / "drawn"
    assert main(["predict", str(a), "--save-dir", str(drawn), "--json", str(blocker / "p.json")]) == 2
    assert not drawn.exists()  # nothing drawn before the bad --json was found
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    js = tmp_path / "p.json"
    assert main(["predict", str(bad), "--json", str(js)]) == 1
    assert not js.exists()
    capsys.readouterr()
    assert main(["predict", str(a / "*.gif"), str(a / "x.jpg"), "--json", str(js), "--no-refine"]) == 1
    assert _errors(capsys) == [f"movenet: error: {a / '*.gif'}: no file matches this pattern"]
    assert len(json.loads(js.read_text())) == 1  # the other image still done


def test_eval_and_export_name_a_model_of_the_wrong_kind(tmp_path, capsys):
    from train_helpers import write_coco_folder

    write_coco_folder(tmp_path / "data", 2, 64)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    assert main(["eval", str(tmp_path / "data"), "--model", str(junk), "--out", str(tmp_path / "ev")]) == 2
    assert main(["export", str(junk), "-o", str(tmp_path / "x.onnx")]) == 2
    errors = _errors(capsys)
    assert len(errors) == 2 and all(str(junk) in e for e in errors)
    assert "not a loadable ONNX model" in errors[0]
    assert "an exported model, not a PyTorch checkpoint" in errors[1]


def test_predict_runs_googles_released_graph(shared_dir, tmp_path, capsys):
    graph = shared_dir / "reference" / "movenet_lightning.onnx"
    js = tmp_path / "p.json"
    assert main(["predict", str(BUILTIN_IMAGE), "--model", str(graph), "--json", str(js)]) == 0
    people = json.loads(js.read_text())[0]["people"]
    assert len(people) == 1 and people[0]["score"] > 0.3
    assert main(["predict", str(BUILTIN_IMAGE), "--model", str(graph), "--multi"]) == 2
    assert "four heads" in _errors(capsys)[0]


def test_the_python_api_opens_what_the_command_line_opens(shared_dir, lightning):
    import movenet
    from movenet.runtime import OnnxPredictor, ReferencePredictor

    image = read_image(BUILTIN_IMAGE)
    ours = movenet.create_predictor("lightning")(image)
    for name in ("movenet_lightning.onnx", "movenet_lightning_int8.tflite"):
        if name.endswith(".tflite"):
            pytest.importorskip("ai_edge_litert")
        predictor = movenet.create_predictor(shared_dir / "reference" / name)  # Google's graphs
        assert isinstance(predictor, ReferencePredictor)
        distance = np.linalg.norm(predictor(image)[:, :2] - ours[:, :2], axis=1)
        near = 0.5 if name.endswith(".onnx") else 0.05 * max(image.shape[:2])  # int8: within 5% of the photo
        assert (distance.max() if name.endswith(".onnx") else np.median(distance)) < near
    assert isinstance(movenet.create_predictor("lightning", backend="onnx"), OnnxPredictor)


def test_export_opset_the_exporter_cannot_write_is_one_line(monkeypatch):
    import torch

    from movenet.export import export_onnx
    from movenet.model import create_model

    def fail(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator upsample_bilinear2d\n" + "graph dump\n" * 500)
    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(MoveNetError, match=r"^ONNX opset 11: this torch cannot export the model at it "
                                           r"\(Unsupported: ONNX export of operator upsample_bilinear2d\)$"):
        export_onnx(create_model("mobilenetv2_050", input_size=64), "x.onnx", opset=11)


def test_data_stats_checks_the_config_as_train_does_and_takes_overrides(lsp_dir, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{sources: [{{path: {lsp_dir}}}], val_fraction: 0.2}}\nepoch: 3\n")
    assert main(["data", "stats", str(config), "--out", str(tmp_path / "s")]) == 2
    assert main(["train", str(config), "--out", str(tmp_path / "r")]) == 2
    errors = _errors(capsys)
    assert len(errors) == 2 and errors[0] == errors[1] and "unknown key" in errors[0] and "'epoch'" in errors[0]
    config.write_text(f"data: {{sources: [{{path: {lsp_dir}}}], val_fraction: 0.2}}\n"
                      "model: {name: lightning, overrides: {input_size: 224}}\n")
    assert main(["data", "stats", str(config), "augment.scale_range=[0.5,0.6]", "--limit", "40",
                 "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "40 targets at input 224" in out
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    for argv in (["data", "stats", str(empty)], ["train", str(empty)], ["eval", str(empty)]):
        assert main(argv) == 2
    assert _errors(capsys) == [f"movenet: error: {empty}: no data.sources (the training data; "
                               "docs/training-data.md)"] * 3


def test_data_convert_refuses_an_image_folder_that_is_not_there(lsp_dir, tmp_path, capsys):
    out = tmp_path / "lsp.json"
    assert main(["data", "convert", str(lsp_dir), str(out), "--images", str(tmp_path / "nowhere")]) == 2
    assert _errors(capsys) == [f"movenet: error: {tmp_path / 'nowhere'}: image folder not found (given as the "
                               f"image root of {lsp_dir})"]
    assert not out.exists()


def test_video_never_overwrites_its_source(tmp_path, capsys):
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"kept")
    assert main(["video", str(src), "--out", str(src)]) == 2
    assert _errors(capsys) == [f"movenet: error: {src}: --out would overwrite this input; choose another name"]
    assert src.read_bytes() == b"kept"


def test_outputs_never_overwrite_other_inputs_or_each_other(photos, tmp_path, capsys):
    a, _ = photos
    config = tmp_path / "c.yaml"
    config.write_text("data: {sources: [{path: data}]}\n")
    before = config.read_text()
    assert main(["calibrate", str(config), "--model", "lightning", "--out", str(config)]) == 2
    assert main(["export", "lightning", "-o", str(a / "x.jpg"), "--verify", str(a / "x.jpg")]) == 2
    assert main(["export", "lightning", "-o", str(tmp_path / "m.json")]) == 2
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"kept")
    assert main(["video", str(clip), "--out", str(tmp_path / "same.mp4"), "--json", str(tmp_path / "same.mp4")]) == 2
    assert main(["predict", str(a / "x.jpg"), "--save-dir", str(tmp_path / "o"), "--json",
                 str(tmp_path / "o" / "x.jpg")]) == 2
    model = tmp_path / "m.pt"  # (the model is only looked at: any content)
    model.write_bytes(b"weights")
    assert main(["predict", str(a / "x.jpg"), "--model", str(model), "--json", str(model)]) == 2
    assert main(["video", str(clip), "--model", f"{model}@224", "--json", str(model)]) == 2
    assert main(["average", f"{model}@224", f"{model}@224", "--out", str(model)]) == 2
    tfjs = tmp_path / "model.json"  # a TF.js model: its weight files are inputs too
    tfjs.write_text('{"modelTopology": {}, "weightsManifest": [{"paths": ["group1.bin"]}]}')
    (tmp_path / "group1.bin").write_bytes(b"weights")
    assert main(["predict", str(a / "x.jpg"), "--model", str(tfjs), "--json", str(tmp_path / "group1.bin")]) == 2
    assert _errors(capsys) == [
        f"movenet: error: {config}: --out would overwrite this input; choose another name",
        f"movenet: error: {a / 'x.jpg'}: --output must be an .onnx file",
        f"movenet: error: {tmp_path / 'm.json'}: --output must be an .onnx file",
        f"movenet: error: {tmp_path / 'same.mp4'}: --json would overwrite this video (--out); choose another name",
        f"movenet: error: {tmp_path / 'o' / 'x.jpg'}: --json would overwrite this drawing; choose another name",
        f"movenet: error: {model}: --json would overwrite this input; choose another name",
        f"movenet: error: {model}: --json would overwrite this input; choose another name",
        f"movenet: error: {model}: --out would overwrite this input; choose another name",
        f"movenet: error: {tmp_path / 'group1.bin'}: --json would overwrite this input; choose another name"]
    assert config.read_text() == before and clip.read_bytes() == b"kept" and model.read_bytes() == b"weights"
    assert (tmp_path / "group1.bin").read_bytes() == b"weights"
    assert not (tmp_path / "o").exists() and not (tmp_path / "same.mp4").exists()


def test_an_opset_newer_than_the_exporter_knows_is_refused_before_it_runs(capsys):
    pytest.importorskip("torch.onnx._constants")
    from torch.onnx._constants import ONNX_MAX_OPSET

    assert main(["export", "lightning", "--opset", str(ONNX_MAX_OPSET + 1), "-o", "never.onnx"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().endswith(f"exports opsets up to {ONNX_MAX_OPSET}")


def test_python_entry_points_name_what_they_were_given(tmp_path):
    """Misuse from Python is a MoveNetError that says what was expected, not an error from deep
    inside; a single string is taken where a list of models is."""
    from train_helpers import write_coco_folder

    from movenet.evaluate import evaluate, load_data
    from movenet.schema import COCO17
    from movenet.tracking import PoseTracker
    from movenet.train import run

    with pytest.raises(MoveNetError, match="read_image takes a file path, got a NoneType"):
        read_image(None)
    tracker = PoseTracker(lambda img, box=None: np.zeros((17, 3), np.float32))
    with pytest.raises(MoveNetError, match="expected an RGB uint8 H x W x 3 image .* got a NoneType"):
        tracker(None, 0.0)
    write_coco_folder(tmp_path / "data", 2, 64)
    dataset = load_data(str(tmp_path / "data"), None, None, COCO17)
    for nothing in ([], None):
        with pytest.raises(MoveNetError, match="no model to evaluate"):
            evaluate(dataset, nothing)
    with pytest.raises(MoveNetError, match=f"{tmp_path / 'absent.pt'}: no such model file"):  # not "a: ..."
        evaluate(dataset, str(tmp_path / "absent.pt"))
    config = tmp_path / "run.yaml"
    config.write_text("data: {sources: [{path: nowhere}]}\n")
    with pytest.raises(MoveNetError, match=f"{config}: data.sources nowhere not found"):
        run(config, tmp_path / "out")  # a config file is read, and named in messages
    with pytest.raises(MoveNetError, match="run takes a TrainConfig or a config file, got a dict"):
        run({"epochs": 1})


@pytest.mark.parametrize("px", ["0", "-1", "nan", "inf"])
def test_eval_px_must_be_a_finite_positive_number(px, monkeypatch, capsys):
    import movenet.evaluate

    monkeypatch.setattr(movenet.evaluate, "cmd_eval", lambda args: pytest.fail("evaluated"))
    with pytest.raises(SystemExit) as e:
        main(["eval", "data", "--px", px])
    assert e.value.code == 2
    assert _errors(capsys) == [f"movenet eval: error: argument --px: must be a finite number > 0, got {px} (usage: movenet eval --help)"]
