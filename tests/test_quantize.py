"""Static int8 quantization: calibration reader, the int8 model and its accuracy budget on real
labelled images (LSP), the check that rejects a model over budget."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from movenet.errors import MoveNetError
from movenet.export import export_onnx, read_metadata
from movenet.image import read_image
from movenet.quantize import (DEFAULT_CONFIG, ImageCalibrationReader, calibration_images, check_accuracy,
                              chunk_size, equalizable_pairs, equalize_channels, limb_pck,
                              quantize_checked, quantize_onnx)
from movenet.runtime import OnnxPredictor, Predictor

CALIBRATION = range(1, 101)  # LSP im0001..im0100
CHECK = slice(300, 420)  # LSP im0301..im0420: disjoint from the calibration images
# The budget is 1 PCK point on LSP 301-1000 (measured: 0.5). On 120 images one point is 14
# joints, and the drop of one int8 model varies between -0.1 and -2.4 points over 60-image
# subsets, so the small check allows 2 points.
SMALL_SET_BUDGET = 0.02


@pytest.fixture(scope="module")
def fp32_onnx(lightning, tmp_path_factory) -> Path:
    return export_onnx(lightning, tmp_path_factory.mktemp("quant") / "fp32.onnx")


@pytest.fixture(scope="module")
def calib(lsp_dir) -> list[Path]:
    return [lsp_dir / "images" / f"im{i:04d}.jpg" for i in CALIBRATION]


@pytest.fixture(scope="module")
def int8_onnx(fp32_onnx, calib) -> Path:
    return quantize_onnx(fp32_onnx, fp32_onnx.with_name("int8.onnx"), calib, DEFAULT_CONFIG)


def test_reader_feeds_inference_preprocessing(calib):
    reader = ImageCalibrationReader(calib[:4], 192)
    probe = Predictor()
    probe.input_size = 192
    for path in calib[:4]:
        batch = reader.get_next()["image"]
        np.testing.assert_array_equal(batch, probe.preprocess(read_image(path))[0])
    assert reader.get_next() is None
    reader.set_range(2, 4)
    np.testing.assert_array_equal(reader.get_next()["image"], probe.preprocess(read_image(calib[2]))[0])
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["image"], probe.preprocess(read_image(calib[2]))[0])


def test_chunk_size_divides():
    assert chunk_size(300) == 15 and chunk_size(7) == 7 and chunk_size(17) == 1 and chunk_size(40) == 10
    assert all(n % chunk_size(n) == 0 for n in range(1, 200))


def test_calibration_images_from_lsp_folder(lsp_dir):
    images = calibration_images([str(lsp_dir)], limit=5)
    assert [Path(p).name for p in images] == [f"im{i:04d}.jpg" for i in range(1, 6)]
    with pytest.raises(MoveNetError, match="no calibration images"):
        calibration_images([str(lsp_dir / "nothing-here")])


def test_int8_model_is_quantized_and_self_contained(fp32_onnx, int8_onnx):
    proto = onnx.load(str(int8_onnx))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    meta = read_metadata(int8_onnx)
    fp32_meta = read_metadata(fp32_onnx)
    assert {k: v for k, v in meta.items() if k != "quantization"} == fp32_meta
    assert meta["quantization"]["calibration_images"] == len(CALIBRATION)
    excluded = meta["quantization"]["excluded_nodes"]
    assert {"/backbone/conv1/conv1.0/Conv", "/Sigmoid", "/Sigmoid_1"} <= set(excluded)
    assert len(meta["quantization"]["equalized"]) > 5
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    float_convs = {n.name for n in proto.graph.node if n.op_type == "Conv" and producers.get(n.input[1]) != "DequantizeLinear"}
    assert float_convs == {n for n in excluded if n.endswith("Conv")} and len(float_convs) == 3  # the stem
    # the output maps stay float: no 8-bit steps in the heatmaps the decoder takes argmaxes of
    assert producers["heatmaps"] == "Sigmoid" and producers["centers"] == "Sigmoid"
    predictor = OnnxPredictor(str(int8_onnx))
    assert predictor(read_image(Path(__file__).parents[1] / "src/movenet/assets/astronaut.jpg")).shape == (17, 3)
    assert int8_onnx.stat().st_size < 0.5 * fp32_onnx.stat().st_size


def test_int8_stays_within_budget(fp32_onnx, int8_onnx, lsp_dir):
    result = check_accuracy(fp32_onnx, int8_onnx, lsp_dir, max_drop=SMALL_SET_BUDGET, indices=CHECK)
    assert result.people == 120
    assert result.fp32_pck > 0.75  # Google's Lightning scores ~0.84 on LSP
    assert result.passed, str(result)


def test_over_budget_model_is_removed(fp32_onnx, calib, lsp_dir, tmp_path):
    out = tmp_path / "int8.onnx"
    with pytest.raises(MoveNetError, match="fails its accuracy budget"):
        # a negative budget cannot be met: the check must reject and delete
        quantize_checked(fp32_onnx, out, calib[:8], lsp_dir, DEFAULT_CONFIG, max_drop=-0.5,
                         check_indices=slice(400, 410))
    assert not out.exists()


def test_checking_on_calibration_images_is_warned_about(fp32_onnx, lsp_dir, tmp_path):
    from movenet.errors import DataWarning

    checked = [lsp_dir / "images" / f"im{i:04d}.jpg" for i in (401, 402)]  # LSP order: indices 400, 401
    with pytest.warns(DataWarning, match="2 of the checked images are calibration images too"):
        quantize_checked(fp32_onnx, tmp_path / "int8.onnx", checked, lsp_dir, DEFAULT_CONFIG,
                         max_drop=1.0, check_indices=slice(400, 402))  # (two images: any drop passes)
    assert (tmp_path / "int8.onnx").exists()


def test_limb_pck_definition():
    gt = np.zeros((2, 17, 3), np.float32)
    gt[:, 5:17, 2] = 2
    gt[:, 5, :2] = (0, 0)
    gt[:, 12, :2] = (30, 40)  # torso 50 px -> threshold 10 px
    gt[:, [6, 7, 8, 9, 10, 11, 13, 14, 15, 16], :2] = 100
    pred = gt.copy()
    assert limb_pck(pred, gt) == 1.0
    pred[0, 7, 0] += 9.9  # inside 0.2 torso
    pred[1, 8, 1] += 10.1  # outside
    assert limb_pck(pred, gt) == pytest.approx(23 / 24)
    pred[:, :5, :2] += 1000  # face keypoints do not count
    assert limb_pck(pred, gt) == pytest.approx(23 / 24)


def test_equalization_keeps_the_function(fp32_onnx, calib):
    proto = onnx.load(str(fp32_onnx))
    pairs = equalizable_pairs(proto)
    names = {(a.name, b.name) for a, b, _ in pairs}
    assert ("/heatmap/conv/pointwise/Conv", "/heatmap/out/Conv") in names  # through the ReLU
    assert ("/neck/fuse4/depthwise/Conv", "/neck/fuse4/pointwise/Conv") in names
    # ReLU6 is not scale invariant: no backbone depthwise -> project pair
    assert not any("depthwise" in a.name and "/backbone/" in a.name for a, _, _ in pairs)
    before = _run(proto, calib[0])
    tensors = equalize_channels(proto, calib[:8], 192, alpha=1.0)
    assert len(tensors) == len(pairs)
    after = _run(proto, calib[1]), _run(onnx.load(str(fp32_onnx)), calib[1])
    for a, b in zip(*after):
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())
    probe = onnx.load(str(fp32_onnx))
    ratio = _channel_ratio(probe, tensors[-1], calib[0]), _channel_ratio(proto, tensors[-1], calib[0])
    assert ratio[1] < ratio[0]  # the channels' ranges are closer after equalisation
    assert before[0].shape == after[0][0].shape


def _run(proto, image, extra: str | None = None):
    import onnxruntime as ort
    from movenet.quantize import preprocess_image

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    names = [o.name for o in model.graph.output]
    if extra:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(extra))
        names = [extra]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {"image": preprocess_image(read_image(image), 192)})


def _channel_ratio(proto, tensor: str, image) -> float:
    r = np.abs(_run(proto, image, tensor)[0]).max(axis=(0, 2, 3))
    return float(r.max() / np.median(r))


def test_cli_export_int8(tmp_path, lsp_dir, capsys):
    from movenet.cli import main

    out = tmp_path / "l8.onnx"
    calib = [str(lsp_dir / "images" / f"im{i:04d}.jpg") for i in range(1, 9)]
    assert main(["export", "lightning", "--int8", "--calib", *calib, "--check", str(lsp_dir / "joints.mat"),
                 "--output", str(out)]) == 2  # not a labelled set: one-line error, nothing written
    assert not out.exists() and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["export", "lightning", "--int8", "--calib", *calib, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "calibrated on 8 images" in printed and "not checked" in printed
    assert read_metadata(out)["quantization"]["calibration_images"] == 8


@pytest.mark.parametrize("name", ["mobilenetv3_small", "shufflenetv2_x0_5"])
def test_other_backbones_quantize_with_their_stem_in_float(name, calib, tmp_path):
    """The stem kept in float is found in every backbone's graph (MobileNetV3's has SE blocks
    and HardSwish between convs, which equalisation must pass over)."""
    import torch

    from movenet.model import create_model

    torch.manual_seed(0)
    fp32 = export_onnx(create_model(name, input_size=64).eval(), tmp_path / "fp32.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", calib[:2], DEFAULT_CONFIG)
    kept = read_metadata(int8)["quantization"]["excluded_nodes"]
    assert any(n.startswith("/backbone/stem/") for n in kept), kept
    graph = onnx.load(str(int8)).graph
    weights = {init.name for init in graph.initializer}
    (first,) = [n for n in graph.node if n.name == "/backbone/stem/stem.0/Conv"]
    assert first.input[1] in weights  # float weights, not an int8 tensor's DequantizeLinear
    assert any(n.op_type == "DequantizeLinear" and ("/backbone/stages.0/" in n.name or "/backbone/blocks.1/" in n.name)
               for n in graph.node)  # while the rest is quantized
    if name.startswith("mobilenetv3"):  # stem and first block float: no activation quantized in the stem either
        assert not [n.name for n in graph.node if n.op_type == "QuantizeLinear" and "/backbone/stem/" in n.name]


# ---------------------------------------------------------------- edges found by mutation testing
def test_the_budget_is_on_what_int8_loses_and_percentile_reaches_the_calibrator():
    from movenet.quantize import AccuracyCheck, QuantConfig, _extra_options

    assert not AccuracyCheck(0.80, 0.50, 10, 0.01).passed  # int8 far worse
    assert AccuracyCheck(0.80, 0.795, 10, 0.01).passed and AccuracyCheck(0.80, 0.85, 10, 0.01).passed
    assert AccuracyCheck(0.80, 0.50, 10, 0.01).drop == pytest.approx(0.30)
    assert _extra_options(QuantConfig(method="percentile", percentile=99.0), 8)["CalibPercentile"] == 99.0
    assert "CalibPercentile" not in _extra_options(QuantConfig(method="minmax"), 8)


def test_limb_pck_takes_the_torso_from_the_labels_not_the_prediction():
    gt = np.zeros((2, 17, 3), np.float32)
    gt[:, 5:17, 2] = 2
    gt[:, 12, :2] = (30, 40)  # torso 50 px -> 10 px
    gt[:, [6, 7, 8, 9, 10, 11, 13, 14, 15, 16], :2] = 100
    pred = gt.copy()
    pred[:, 5, :2] += 500  # a wrong shoulder: missed, and it must not widen the threshold
    pred[:, 7, 0] += 15  # missed at 10 px
    assert limb_pck(pred, gt) == pytest.approx(20 / 24)


def test_int8_activations_are_uint8_and_the_check_runs_the_int8_file(fp32_onnx, int8_onnx, lsp_dir, tmp_path):
    import torch

    from movenet.model import create_model

    graph = onnx.load(str(int8_onnx)).graph
    inits = {i.name: i for i in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.data_type == onnx.TensorProto.UINT8 for z in zero_points)
    torch.manual_seed(0)
    untrained = export_onnx(create_model("lightning").eval(), tmp_path / "untrained.onnx")
    result = check_accuracy(fp32_onnx, untrained, lsp_dir, max_drop=SMALL_SET_BUDGET, indices=slice(300, 310))
    assert result.fp32_pck > 0.6 and result.int8_pck < 0.3 and not result.passed


def test_broken_metadata_and_keep_float_that_names_nothing(fp32_onnx, calib, tmp_path):
    import warnings

    from movenet.errors import DataWarning
    from movenet.quantize import QuantConfig

    proto = onnx.load(str(fp32_onnx))
    del proto.metadata_props[:]
    proto.metadata_props.add(key="movenet", value="{broken")
    onnx.save(proto, str(tmp_path / "broken.onnx"))
    with pytest.raises(MoveNetError, match=r"broken.onnx: broken movenet metadata"):
        quantize_onnx(tmp_path / "broken.onnx", tmp_path / "int8.onnx", calib[:2], DEFAULT_CONFIG)
    assert not (tmp_path / "int8.onnx").exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_onnx(fp32_onnx, tmp_path / "int8.onnx", calib[:2],
                      QuantConfig(keep_float=("/nope/",), equalize_alpha=0.0))
    assert any(issubclass(w.category, DataWarning) and "keep_float ['/nope/'] names no node" in str(w.message)
               for w in caught)


class _Bars:
    """Stands in for tqdm in ``movenet.quantize``: records the bars made and which were closed."""

    def __init__(self):
        self.made, self.closed = [], []

    def __call__(self, *args, **kwargs):
        bars = self

        class Bar:
            def __init__(self):
                self.desc = kwargs.get("desc")
                bars.made.append(self)

            def update(self, n=1):
                pass

            def close(self):
                bars.closed.append(self)

        return Bar()


def test_the_calibration_bar_starts_with_calibration_and_ends_on_an_error(fp32_onnx, calib, tmp_path, monkeypatch):
    from movenet import quantize

    bars = _Bars()
    monkeypatch.setattr(quantize, "tqdm", bars)
    reader = ImageCalibrationReader(calib[:2], 192)
    assert bars.made == []  # nothing on screen while equalisation (its own bar) runs
    reader.get_next()
    assert [b.desc for b in bars.made] == ["calibrate"]

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    del bars.made[:]
    with pytest.raises(MoveNetError, match="bad.jpg"):  # read first by the equalisation
        quantize_onnx(fp32_onnx, tmp_path / "int8.onnx", [calib[0], bad], DEFAULT_CONFIG)
    assert [b.desc for b in bars.made] == []
    with pytest.raises(MoveNetError, match="bad.jpg"):  # read first by the calibration
        quantize_onnx(fp32_onnx, tmp_path / "int8.onnx", [calib[0], bad], replace(DEFAULT_CONFIG, equalize_alpha=0.0))
    (calibration,) = [b for b in bars.made if b.desc == "calibrate"]
    assert calibration in bars.closed  # not left half-drawn above the error line
    assert not (tmp_path / "int8.onnx").exists()


def test_the_int8_check_takes_the_datas_keypoints_by_name(fp32_onnx, int8_onnx, lsp_dir, tmp_path):
    """Data of other keypoints than the model's (fewer, in another order, renamed): the check
    scores the keypoints both have, matched by name, as eval does."""
    import json

    from movenet.datasets import lsp_to_coco
    from movenet.errors import DataWarning
    from movenet.schema import COCO17

    reference = check_accuracy(fp32_onnx, int8_onnx, lsp_dir, indices=slice(300, 340))
    (tmp_path / "images").symlink_to(lsp_dir / "images")
    coco = lsp_to_coco(lsp_dir)
    coco["images"], coco["annotations"] = coco["images"][300:340], coco["annotations"][300:340]

    def written(name: str, names: list[str], rename: dict | None = None) -> Path:
        order = [COCO17.keypoints.index(n) for n in names]
        people = [{**a, "keypoints": np.asarray(a["keypoints"]).reshape(17, 3)[order].reshape(-1).tolist()}
                  for a in coco["annotations"]]
        category = {**coco["categories"][0], "keypoints": [(rename or {}).get(n, n) for n in names]}
        category.pop("skeleton", None)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**coco, "annotations": people, "categories": [category]}))
        return path

    limbs = [n for n in COCO17.keypoints if n.endswith(("shoulder", "elbow", "wrist", "hip", "knee", "ankle"))]
    for path in (written("limbs12", limbs), written("reversed", list(COCO17.keypoints)[::-1])):
        result = check_accuracy(fp32_onnx, int8_onnx, path)
        assert (result.fp32_pck, result.int8_pck, result.people) == (
            reference.fp32_pck, reference.int8_pck, reference.people), path.name
    feet = written("feet", limbs[::-1], {"left_ankle": "left_foot", "right_ankle": "right_foot"})
    with pytest.warns(DataWarning, match=r"feet.json: the model lacks right_foot, left_foot of the data's 12 "
                                         r"keypoints \(person\); the check scores the other 10"):
        result = check_accuracy(fp32_onnx, int8_onnx, feet)
    assert result.fp32_pck != reference.fp32_pck and 0.7 < result.fp32_pck < 1


def test_the_check_scores_cocos_limb_joints_and_every_keypoint_of_other_schemas():
    import warnings

    from movenet.errors import DataWarning
    from movenet.quantize import scored_keypoints
    from movenet.schema import COCO17, KeypointSchema

    ours, theirs = scored_keypoints(COCO17, COCO17, "coco")
    assert ours == theirs == list(range(5, 17))  # COCO's face is left out (LSP labels none)
    limbs = [n for n in COCO17.keypoints[5:]]
    with_head = KeypointSchema("with_head", tuple(limbs[::-1] + ["head_top"]), (), ())
    ours, theirs = scored_keypoints(with_head, with_head, "head")
    assert ours == theirs == list(range(13))  # a schema of its own: all its keypoints
    ours, theirs = scored_keypoints(with_head, COCO17, "head", warn=False)  # (the model lacks head_top)
    assert ours == list(range(12)) and theirs == [COCO17.keypoints.index(n) for n in limbs[::-1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scored_keypoints(with_head, COCO17, "head", warn=False)
    with pytest.warns(DataWarning, match=r"head: the model lacks head_top of the data's 13 keypoints"):
        scored_keypoints(with_head, COCO17, "head")


def test_limb_pck_leaves_labelled_face_keypoints_out_by_default_and_a_drop_equal_to_the_budget_passes():
    from movenet.quantize import AccuracyCheck

    gt = np.zeros((2, 17, 3), np.float32)
    gt[:, :, 2] = 2  # the face labelled too (COCO)
    gt[:, 12, :2] = (30, 40)  # torso 50 px -> 10 px
    gt[:, [6, 7, 8, 9, 10, 11, 13, 14, 15, 16], :2] = 100
    pred = gt.copy()
    pred[:, :5, :2] += 1000
    assert limb_pck(pred, gt) == 1.0
    assert limb_pck(pred, gt, scored=list(range(17))) == pytest.approx(12 / 17)
    assert AccuracyCheck(0.75, 0.5, 10, 0.25).passed  # "loses more than max_drop" fails


def test_a_keypoint_the_model_lacks_is_said_once_by_quantize_checked(fp32_onnx, lsp_dir, tmp_path, monkeypatch):
    import json
    import shutil
    import warnings

    from movenet import quantize
    from movenet.datasets import lsp_to_coco

    monkeypatch.setattr(quantize, "quantize_onnx", lambda fp32, out, images, config: shutil.copy(fp32, out))
    (tmp_path / "images").symlink_to(lsp_dir / "images")
    coco = lsp_to_coco(lsp_dir)
    coco["images"], coco["annotations"] = coco["images"][300:302], coco["annotations"][300:302]
    coco["categories"][0]["keypoints"] = ["left_foot" if n == "left_ankle" else n
                                          for n in coco["categories"][0]["keypoints"]]
    (tmp_path / "feet.json").write_text(json.dumps(coco))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_checked(fp32_onnx, tmp_path / "int8.onnx", [lsp_dir / "images" / "im0001.jpg"], tmp_path / "feet.json",
                         max_drop=1.0)
    said = [str(w.message) for w in caught if "the model lacks left_foot" in str(w.message)]
    assert len(said) == 1, said


def test_a_check_on_no_labelled_person_is_a_clear_error(lsp_dir):
    from movenet.quantize import labelled_data

    with pytest.raises(MoveNetError, match=r"lsp: no labelled people to check accuracy on"):
        labelled_data(lsp_dir, slice(5000, 5010))  # (LSP has 2000)
