"""Command-line contracts checked without a model (stubs stand in for loading and running one):
defaults and bounds of options, default output names, accepted suffixes, what is refused
before any work, and status lines kept out of data written to a stream."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

import movenet.checkpoint
import movenet.cli
import movenet.export
import movenet.video
from movenet.cli import build_parser, main
from movenet.schema import COCO17
from train_helpers import write_coco_folder


def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_predict_threshold_defaults_to_0_3():
    assert parse("predict").threshold == 0.3
    assert parse("video", "clip.mp4").threshold == 0.3


def test_threshold_takes_both_ends_of_0_to_1(capsys):
    assert parse("predict", "--threshold", "0").threshold == 0.0
    assert parse("predict", "--threshold", "1").threshold == 1.0
    with pytest.raises(SystemExit) as e:
        parse("predict", "--threshold", "-0.01")
    assert e.value.code == 2 and "must be in [0, 1], got -0.01" in capsys.readouterr().err


def test_unknown_options_after_a_config_are_errors_not_overrides(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path / "cfg.yaml"), "--bogus=1"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus=1" in capsys.readouterr().err


# ---------------------------------------------------------------- predict
@pytest.fixture
def stub_model(monkeypatch):
    """predict with a model that finds a person scoring 0 (no model is loaded)."""
    import movenet.tracking

    class Stub:
        schema = COCO17

    monkeypatch.setattr(movenet.cli, "_predictor", lambda *args: Stub())
    monkeypatch.setattr(movenet.tracking, "predict_person", lambda predictor, img, box=None, refine=True:
                        np.zeros((17, 3), np.float32))


def test_predict_status_goes_to_stderr_when_the_json_goes_to_a_stream(tmp_path, stub_model, capsys):
    image = tmp_path / "x.jpg"
    cv2.imwrite(str(image), np.full((32, 32, 3), 90, np.uint8))
    with open(tmp_path / "out.json", "w") as f:  # as `> out.json` hands it to the command
        assert main(["predict", str(image), "--json", f"/dev/fd/{f.fileno()}"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "(1 image)" in captured.err
    assert [r["image"] for r in json.loads((tmp_path / "out.json").read_text())] == [str(image)]


# ---------------------------------------------------------------- video
@pytest.fixture
def video_calls(monkeypatch):
    """cmd_video with the source, model and run stubbed: the run_video arguments it passes."""
    calls = []

    def fake_run(source, predictor, **kwargs):
        calls.append(kwargs)
        return {"frames": 1, "seconds": 1.0, "fps": 1.0}

    monkeypatch.setattr(movenet.video, "open_source", lambda source: source)
    monkeypatch.setattr(movenet.video, "run_video", fake_run)
    monkeypatch.setattr(movenet.cli, "_predictor", lambda *args: object())
    return calls


def test_video_without_out_or_json_writes_movenet_output_name_mp4(tmp_path, monkeypatch, video_calls):
    monkeypatch.chdir(tmp_path)
    assert main(["video", "clip.avi"]) == 0
    assert video_calls[0]["out"] == os.path.join("movenet-output", "clip.mp4")
    assert video_calls[0]["muffle_reads"] is True  # (FFmpeg's lines off the terminal: one-line errors)


def test_a_live_source_that_stops_sending_is_said(tmp_path, video_calls, monkeypatch, capsys):
    from types import SimpleNamespace

    stream = SimpleNamespace(name="rtsp://cam/live", is_camera=False, wall_clock=True)
    monkeypatch.setattr(movenet.video, "open_source", lambda source: stream)
    monkeypatch.setattr(movenet.video, "run_video", lambda *a, **kw: {"frames": 7, "seconds": 1.0, "fps": 7.0,
                                                                     "ended": True})
    assert main(["video", "rtsp://cam/live", "--json", str(tmp_path / "s.jsonl")]) == 0  # (what it sent is kept)
    assert "movenet: rtsp://cam/live: the stream ended or sent nothing for 10 s, after 7 frames" in \
        capsys.readouterr().err
    stream.is_camera = True
    assert main(["video", "0", "--json", str(tmp_path / "c.jsonl")]) == 0
    assert "the camera stopped sending, after 7 frames" in capsys.readouterr().err


def test_video_out_suffix_is_case_blind(tmp_path, video_calls, capsys):
    out = str(tmp_path / "X.MP4")
    assert main(["video", "clip.avi", "--out", out]) == 0
    assert video_calls[0]["out"] == out
    assert main(["video", "clip.avi", "--out", str(tmp_path / "x.gif")]) == 2
    assert "--out needs a video file name" in capsys.readouterr().err


# ---------------------------------------------------------------- export
@pytest.fixture
def export_calls(monkeypatch):
    """cmd_export with loading, exporting and quantizing stubbed: where each would write."""
    import movenet.quantize

    calls = {}
    monkeypatch.setattr(movenet.checkpoint, "load_model", lambda spec: (object(), COCO17))
    monkeypatch.setattr(movenet.export, "export_onnx", lambda model, out, **kw: calls.setdefault("onnx", out))
    monkeypatch.setattr(movenet.quantize, "calibration_images", lambda calib, limit: ["a.jpg"])
    monkeypatch.setattr(movenet.quantize, "quantize_checked",
                        lambda fp32, out, *args, **kw: calls.setdefault("int8", out))
    return calls


def test_export_int8_default_name_keeps_size_and_int8(tmp_path, monkeypatch, export_calls):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "lightning@224", "--int8", "--calib", "imgs", "--opset", "13"]) == 0
    assert str(export_calls["int8"]) == "lightning_224_int8.onnx"


def test_export_default_name_keeps_the_size(tmp_path, monkeypatch, export_calls):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "lightning@224"]) == 0
    assert str(export_calls["onnx"]) == "lightning_224.onnx"


def test_export_onnx_suffix_is_case_blind(tmp_path, export_calls):
    out = tmp_path / "M.ONNX"
    assert main(["export", "lightning", "-o", str(out)]) == 0
    assert export_calls["onnx"] == out


def test_export_to_a_pipe_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    def no_model(spec):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(movenet.checkpoint, "load_model", no_model)
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    assert main(["export", "lightning", "-o", str(fifo)]) == 2
    assert "an exported model is read back to check it, so it must be a file" in capsys.readouterr().err


# ---------------------------------------------------------------- average, calibrate, benchmark, train
def test_average_writes_a_pth(tmp_path, monkeypatch):
    def soup(checkpoints, weights):
        return {"averaged_from": [{"weight": 0.5, "checkpoint": c} for c in checkpoints]}

    monkeypatch.setattr(movenet.checkpoint, "average_checkpoints", soup)
    assert main(["average", "a.pt", "b.pt", "--out", str(tmp_path / "soup.pth")]) == 0
    assert (tmp_path / "soup.pth").is_file()


def test_calibrate_offsets_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "cfg.yaml", "--model", "lightning", "--offsets", "1.8", "0", "--out",
              str(tmp_path / "c.pt")])
    assert e.value.code == 2 and "must be a finite number > 0, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["x.tflite", "x.onnx", "X.TFLITE"])
def test_calibrate_refuses_an_exported_model_first(tmp_path, capsys, model):
    assert main(["calibrate", str(tmp_path / "missing.yaml"), "--model", model, "--out", str(tmp_path / "c.pt")]) == 2
    assert f"{model}: calibrate takes lightning, thunder or a .pt checkpoint" in capsys.readouterr().err


def test_benchmark_json_may_not_overwrite_a_model_given_as_torch_model(tmp_path, monkeypatch, capsys):
    import movenet.benchmark

    def no_run(*args):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(movenet.benchmark, "run_benchmark", no_run)
    model = tmp_path / "m.pt"
    model.write_bytes(b"checkpoint")
    assert main(["benchmark", "--models", f"torch:{model}", "--json", str(model)]) == 2
    assert "--json would overwrite this input" in capsys.readouterr().err
    assert model.read_bytes() == b"checkpoint"


# ---------------------------------------------------------------- data
def test_data_stats_twice_into_the_same_folder(tmp_path, capsys):
    write_coco_folder(tmp_path / "coco", 2, 64)
    out = tmp_path / "stats"
    assert main(["data", "stats", str(tmp_path / "coco"), "--out", str(out)]) == 0
    assert main(["data", "stats", str(tmp_path / "coco"), "--out", str(out)]) == 0
    assert (out / "target_sizes.png").is_file()


def test_data_convert_status_goes_to_stderr_when_the_json_goes_to_a_stream(tmp_path, capsys):
    write_coco_folder(tmp_path / "coco", 2, 64)
    with open(tmp_path / "out.json", "w") as f:
        assert main(["data", "convert", str(tmp_path / "coco"), f"/dev/fd/{f.fileno()}"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "2 images" in captured.err
    assert len(json.loads((tmp_path / "out.json").read_text())["images"]) == 2
