"""``NAME@SIZE``: a model run at another input size from every command (predict, eval, export,
benchmark): the same weights, the grid's decoding constants of the new size."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from movenet.benchmark import open_model
from movenet.checkpoint import load_model, resize_model, save_checkpoint, split_input_size
from movenet.cli import BUILTIN_IMAGE, main
from movenet.errors import MoveNetError
from movenet.evaluate import model_labels
from movenet.export import export_onnx_cached, read_metadata
from movenet.image import read_image
from movenet.model import create_model
from movenet.predict import TorchPredictor, create_predictor
from movenet.pretrained import init_model


@pytest.fixture()
def small_ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("mobilenetv2_050", input_size=64).eval()
    model.distance_offset.fill_(4.0)  # a calibrated offset travels to the other size
    path = tmp_path / "small.pt"
    save_checkpoint(path, model)
    return path


def test_split_input_size(tmp_path):
    assert split_input_size("lightning") == ("lightning", None)
    assert split_input_size("lightning@224") == ("lightning", 224)
    assert split_input_size("runs/a@b/final.pt@256") == ("runs/a@b/final.pt", 256)
    assert split_input_size("run@best.pt") == ("run@best.pt", None)  # not a size: a name
    odd = tmp_path / "model@224"
    odd.write_bytes(b"")
    assert split_input_size(str(odd)) == (str(odd), None)  # an existing file keeps its name
    for bad in ("lightning@100", "lightning@0"):
        with pytest.raises(MoveNetError, match="multiple of 32"):
            split_input_size(bad)
    for fixed in ("model.onnx@224", "google.tflite@256"):
        with pytest.raises(MoveNetError, match="input size is fixed"):
            split_input_size(fixed)


def test_load_at_another_size_keeps_the_weights(small_ckpt):
    base, _ = load_model(small_ckpt, verbose=False)
    model, _ = load_model(f"{small_ckpt}@96", verbose=False)
    assert model.config.input_size == 96 and not model.training
    assert model.center_prior.shape == (24, 24)
    assert float(model.coord_scale) == pytest.approx(1 / 24)
    torch.testing.assert_close(model.center_prior, create_model("mobilenetv2_050", input_size=96).center_prior)
    assert float(model.distance_offset) == 4.0
    for name, p in base.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name]), name
    assert resize_model(base, 64) is base
    assert create_predictor(f"{small_ckpt}@96").input_size == 96


def test_the_same_as_training_at_the_size(lightning):
    """`lightning@224` is the model a training config with `input_size: 224` starts from."""
    at_224, _ = load_model("lightning@224", verbose=False)
    trained_init = create_model("lightning", input_size=224)
    init_model(trained_init, "lightning", verbose=False)
    img = read_image(BUILTIN_IMAGE)
    np.testing.assert_array_equal(TorchPredictor(at_224)(img), TorchPredictor(trained_init.eval())(img))


def test_cli_export_predict_and_benchmark_at_another_size(small_ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "home"))
    assert main(["export", f"{small_ckpt}@96"]) == 0
    onnx_path = tmp_path / "small_96.onnx"
    meta = read_metadata(onnx_path)
    assert meta["input_size"] == 96 and len(meta["center_prior"]) == 24 and meta["distance_offset"] == 4.0

    for model in (f"{small_ckpt}@96", str(onnx_path)):
        out = tmp_path / f"{len(model)}.json"
        assert main(["predict", "--model", model, "--no-refine", "--json", str(out)]) == 0
        kpts = np.array(json.loads(out.read_text())[0]["people"][0]["keypoints"])
        torch_model, _ = load_model(f"{small_ckpt}@96", verbose=False)
        np.testing.assert_allclose(kpts, TorchPredictor(torch_model)(read_image(BUILTIN_IMAGE)), atol=0.02)

    cached = export_onnx_cached(f"{small_ckpt}@96", verbose=False)
    assert cached != export_onnx_cached(str(small_ckpt), verbose=False)
    assert read_metadata(cached)["input_size"] == 96
    label, predictor = open_model(f"onnx:{small_ckpt}@96")
    assert label == f"onnx:{small_ckpt}@96" and predictor.input_size == 96
    label, predictor = open_model("torch", base=f"{small_ckpt}@96")
    assert label == f"torch:{small_ckpt}@96" and predictor.input_size == 96


@pytest.mark.parametrize("model,message", [
    ("lightning@100", "lightning@100: the input size after '@' must be a positive multiple of 32"),
    ("exported.onnx@224", "exported.onnx@224: an exported model's input size is fixed"),
])
def test_cli_bad_size_is_one_line(model, message, capsys):
    assert main(["predict", "--model", model]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_eval_labels_keep_the_size():
    assert model_labels(["runs/a/final.pt@224", "runs/a/final.pt", "lightning@224", "lightning"]) == [
        "final@224", "final", "lightning@224", "lightning"]
    # files of one stem: each with its folder; a name taken: the file name where that differs
    # (lightning.onnx beside lightning), else a number
    assert model_labels(["lightning", "lightning.onnx", "a/lightning.onnx", "l.pt@224", "x/l.pt@224", "l.json@224",
                         "runs/a/final.pt", "runs/b/final.pt", "c/b/final.pt", "runs/a/final.pt", "best.pt",
                         "runs/a/best.pt"]) \
        == ["lightning", "lightning.onnx", "a/lightning", "l@224", "x/l@224", "l.json@224",
            "a/final", "b/final", "b/final#2", "a/final#2", "best", "a/best"]
    # a file named after a built-in model is named by its file name, listed before it or not
    assert model_labels(["lightning.onnx", "lightning_int8.onnx", "lightning"]) == [
        "lightning.onnx", "lightning_int8", "lightning"]


def test_init_names_a_size_only_if_it_is_the_models(small_ckpt):
    model = create_model("mobilenetv2_050", input_size=96)
    assert "small.pt" in init_model(model, f"{small_ckpt}@96", verbose=False)
    assert float(model.distance_offset) == 4.0
    with pytest.raises(MoveNetError, match="is 96 px; its size is model.overrides.input_size"):
        init_model(model, f"{small_ckpt}@128", verbose=False)
