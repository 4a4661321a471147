"""ONNX export: parity with PyTorch on real images, a clean graph, metadata, dynamic batch,
the export cache and the `movenet export` command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from movenet.checkpoint import save_checkpoint
from movenet.cli import main
from movenet.errors import MoveNetError
from movenet.export import (BUILTIN_IMAGE, OUTPUT_NAMES, export_onnx, export_onnx_cached, parity_error,
                            read_metadata, verify_onnx)
from movenet.model import ModelConfig, create_model
from movenet.runtime import OnnxPredictor
from movenet.schema import COCO17, KeypointSchema


@pytest.fixture(scope="module")
def lightning_onnx(lightning, tmp_path_factory) -> Path:
    return export_onnx(lightning, tmp_path_factory.mktemp("export") / "lightning.onnx", source="lightning")


@pytest.fixture(scope="module")
def lsp_images(lsp_dir) -> list[Path]:
    return [lsp_dir / "images" / f"im{i:04d}.jpg" for i in (1, 2, 3, 50, 400, 999)]


def test_parity_with_torch_on_real_images(lightning, lightning_onnx, lsp_images):
    worst = verify_onnx(lightning, lightning_onnx, [BUILTIN_IMAGE, *lsp_images])
    assert set(worst) == set(OUTPUT_NAMES)
    assert all(v <= 1e-4 for v in worst.values()), worst
    # heatmaps and centres are 0..1: the bound is absolute for them
    assert worst["heatmaps"] < 1e-4 and worst["centers"] < 1e-4


def test_parity_check_catches_a_different_model(lightning_onnx):
    other = create_model("lightning").eval()  # random weights
    with pytest.raises(MoveNetError, match="differs from PyTorch"):
        verify_onnx(other, lightning_onnx, [BUILTIN_IMAGE])


def test_failed_verification_writes_nothing(lightning, tmp_path, monkeypatch):
    import movenet.export as export

    real = export._torch_export
    random_model = create_model("lightning").eval()
    monkeypatch.setattr(export, "_torch_export", lambda model, dyn, opset: real(random_model, dyn, opset))
    out = tmp_path / "bad.onnx"
    with pytest.raises(MoveNetError, match="not written"):
        export_onnx(lightning, out)
    assert list(tmp_path.iterdir()) == []


def test_graph_has_no_needless_ops(lightning_onnx):
    graph = onnx.load(str(lightning_onnx)).graph
    ops = [n.op_type for n in graph.node]
    assert set(ops) <= {"Conv", "Clip", "Relu", "Add", "Resize", "Sigmoid", "Mul", "Sub"}, set(ops)
    assert ops.count("Conv") == 74 and ops.count("Sigmoid") == 2
    assert ops.count("Sub") + ops.count("Mul") <= 2  # normalisation without the zero mean
    # TF 'SAME' stride-2 padding lives in the Conv attributes (bottom/right only)
    pads = [list(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pads
    used = {i for n in graph.node for i in n.input}
    assert all(init.name in used for init in graph.initializer)
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)
    assert [i.name for i in graph.input] == ["image"]


def test_metadata_round_trip(lightning, lightning_onnx):
    meta = read_metadata(lightning_onnx)
    assert meta["input_size"] == 192 and meta["num_keypoints"] == 17
    assert KeypointSchema.from_dict(meta["schema"]) == COCO17
    assert ModelConfig.from_dict(meta["model_config"]) == lightning.config
    assert meta["distance_offset"] == float(lightning.distance_offset)
    assert meta["coord_scale"] == float(lightning.coord_scale)
    np.testing.assert_array_equal(np.asarray(meta["center_prior"], np.float32), lightning.center_prior.numpy())
    assert meta["normalisation"]["inside_graph"] is True
    assert meta["outputs"] == list(OUTPUT_NAMES) and meta["source"] == "lightning"
    predictor = OnnxPredictor(str(lightning_onnx))
    assert predictor.input_size == 192 and predictor.schema == COCO17
    assert predictor.distance_offset == float(lightning.distance_offset)


def test_dynamic_batch(lightning, tmp_path, lsp_images):
    path = export_onnx(lightning, tmp_path / "dyn.onnx", dynamic_batch=True, verify_images=lsp_images[:2])
    predictor = OnnxPredictor(str(path))
    batch = np.concatenate([predictor.preprocess(np.asarray(_rgb(p)))[0] for p in lsp_images[:3]])
    together = predictor.run(batch)
    for i in range(3):
        alone = predictor.run(batch[i:i + 1])
        for a, b in zip(alone, together):
            np.testing.assert_allclose(a[0], b[i], atol=1e-4, rtol=0)
    assert read_metadata(path)["input"]["dynamic_batch"] is True


def _rgb(path):
    from movenet.image import read_image
    return read_image(path)


def test_export_cache_is_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, create_model("lightning").eval())
    first = export_onnx_cached(str(ckpt), verbose=False)
    assert first.parent == tmp_path / "home" / "onnx" and first.exists()
    import movenet.export as export

    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: pytest.fail("cache hit expected"))
    assert export_onnx_cached(str(ckpt), verbose=False) == first
    monkeypatch.undo()
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "home"))
    torch.manual_seed(1)
    save_checkpoint(ckpt, create_model("lightning").eval())
    second = export_onnx_cached(str(ckpt), verbose=False)
    assert second != first and second.exists()


def test_a_cache_that_cannot_be_written_says_how_to_move_it(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("in the way")
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "file" / "home"))
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, create_model("mobilenetv2_050", input_size=96).eval())
    with pytest.raises(MoveNetError, match=r"set MOVENET_HOME to a folder you can write"):
        export_onnx_cached(str(ckpt), verbose=False)


def test_a_calibrated_distance_offset_travels_with_the_weights(tmp_path):
    from movenet.predict import create_predictor

    model = create_model("mobilenetv2_050", input_size=96).eval()
    model.distance_offset.fill_(7.5)
    save_checkpoint(tmp_path / "model.pt", model)
    assert create_predictor(str(tmp_path / "model.pt")).distance_offset == 7.5
    onnx_path = export_onnx(model, tmp_path / "model.onnx")
    assert read_metadata(onnx_path)["distance_offset"] == 7.5
    assert OnnxPredictor(str(onnx_path)).distance_offset == 7.5


def test_export_takes_a_checkpoint_with_its_schema_and_refuses_misfits(tmp_path, capsys):
    five = KeypointSchema("five", ("a", "b", "c", "d", "e"), (), ())
    model = create_model("mobilenetv2_050", input_size=96, num_keypoints=5).eval()
    save_checkpoint(tmp_path / "five.pt", model, five)
    out = export_onnx(str(tmp_path / "five.pt"), tmp_path / "five.onnx")  # a checkpoint: its own schema
    assert read_metadata(out)["schema"]["keypoints"] == list(five.keypoints)
    assert OnnxPredictor(str(out)).schema.keypoints == five.keypoints
    for call, message in [
            (lambda: export_onnx(model, tmp_path / "x.onnx"), "the model predicts 5 keypoints, the schema coco17 has 17"),
            (lambda: export_onnx(create_model("mobilenetv2_050", input_size=96), tmp_path / "x.onnx", schema=five),
             "the model predicts 17 keypoints, the schema five has 5"),
            (lambda: export_onnx(object(), tmp_path / "x.onnx"), "export_onnx takes a MoveNet model .* got object"),
            (lambda: export_onnx(model, tmp_path / "x.onnx", schema=five, opset=7), "ONNX opset 7: the model needs "
                                                                                 "opset 11 or newer"),
            (lambda: export_onnx(model, tmp_path / "x.onnx", schema=five, opset="17"), "ONNX opset '17': a whole "
                                                                                    "number, 11 or newer")]:
        capsys.readouterr()
        with pytest.raises(MoveNetError, match=message):
            call()
        assert not (tmp_path / "x.onnx").exists() and len(capsys.readouterr().out) < 200  # no graph printed


def test_export_cache_bad_spec(tmp_path):
    with pytest.raises(MoveNetError, match="no such model file"):
        export_onnx_cached(str(tmp_path / "missing.pt"))


def test_cli_export_and_predict(lightning, tmp_path, capsys):
    out = tmp_path / "l.onnx"
    assert main(["export", "lightning", "--format", "onnx", "--output", str(out), "--opset", "17"]) == 0
    assert read_metadata(out)["opset"] == 17
    assert capsys.readouterr().out.strip() == f"wrote {out} (its outputs within 0.0001 of PyTorch's on 1 image)"
    pred_json = tmp_path / "pred.json"
    assert main(["predict", str(BUILTIN_IMAGE), "--backend", "onnx", "--model", str(out),
                 "--json", str(pred_json)]) == 0
    onnx_kpts = np.array(json.loads(pred_json.read_text())[0]["people"][0]["keypoints"])
    from movenet.image import read_image
    from movenet.predict import TorchPredictor

    from movenet.tracking import predict_person

    torch_kpts = predict_person(TorchPredictor(lightning), read_image(BUILTIN_IMAGE))  # predict's two looks
    # JSON rounds to 0.01 px; onnxruntime's 1e-3 px from torch moves the second look's crop a little
    np.testing.assert_allclose(onnx_kpts[:, :2], torch_kpts[:, :2], atol=0.03)


def test_cli_export_int8_needs_calibration(capsys):
    assert main(["export", "lightning", "--int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calib" in err[0]


def test_parity_error_is_relative_to_the_output_scale():
    ref = np.array([0.0, 0.5, 1.0])
    assert parity_error(ref, ref + 5e-5) == pytest.approx(5e-5)  # 0..1 maps: absolute
    big = np.array([-40.0, 3.0, 12.0])
    assert parity_error(big, big + 2e-3) == pytest.approx(5e-5)  # regression: relative to 40
    assert parity_error(big, big + np.array([0, 1.0, 0])) > 1e-4


# ---------------------------------------------------------------- edges found by mutation testing
def _small_model(seed: int = 0, input_size: int = 96):
    torch.manual_seed(seed)
    return create_model("mobilenetv2_050", input_size=input_size).eval()


def test_metadata_says_how_to_feed_the_model(tmp_path):
    from movenet.pretrained import imagenet_normalisation, set_input_normalisation

    model = _small_model()
    set_input_normalisation(model, **imagenet_normalisation())
    meta = read_metadata(export_onnx(model, tmp_path / "m.onnx", opset=13))
    cfg = model.config
    assert meta["normalisation"] == {"inside_graph": True, "mean": list(cfg.norm_mean), "scale": list(cfg.norm_scale),
                                     "shift": cfg.norm_shift, "formula": "(image - mean) * scale - shift"}
    assert meta["normalisation"]["mean"][0] == pytest.approx(255 * 0.485)
    assert meta["input"] == {"name": "image", "layout": "NCHW", "dtype": "float32", "color": "RGB",
                             "range": [0, 255], "dynamic_batch": False}
    assert meta["opset"] == 13 and meta["input_size"] == 96


def test_the_parity_check_is_tight_and_runs_the_batch_and_the_given_images(tmp_path, monkeypatch):
    import onnxruntime

    model = _small_model()
    path = export_onnx(model, tmp_path / "m.onnx")
    nudged = _small_model()
    with torch.no_grad():
        nudged.offset.out.bias += 3e-3  # an output 3e-3 off: 30x the bound
    with pytest.raises(MoveNetError, match=r"differs from PyTorch \(offsets "):
        verify_onnx(nudged, path, [BUILTIN_IMAGE])
    batches = []

    class Recording(onnxruntime.InferenceSession):
        def run(self, names, feeds, *args, **kwargs):
            batches.append(len(next(iter(feeds.values()))))
            return super().run(names, feeds, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Recording)
    export_onnx(model, tmp_path / "dyn.onnx", dynamic_batch=True, verify_images=[BUILTIN_IMAGE])
    assert batches == [1, 1, 3]  # each image, then all of them (and the first again) as one batch
    monkeypatch.undo()
    with pytest.raises(MoveNetError, match=r"missing.jpg: file not found"):
        export_onnx(model, tmp_path / "v.onnx", verify_images=[tmp_path / "missing.jpg"])
    assert not (tmp_path / "v.onnx").exists()


def test_the_export_cache_keeps_sizes_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "home"))
    ckpt = tmp_path / "small.pt"
    save_checkpoint(ckpt, _small_model())
    plain = export_onnx_cached(str(ckpt), verbose=False)
    sized = export_onnx_cached(f"{ckpt}@128", verbose=False)
    assert plain != sized
    assert read_metadata(plain)["input_size"] == 96 and read_metadata(sized)["input_size"] == 128
