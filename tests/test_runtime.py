"""The torch-free runtime: same keypoints as PyTorch, works with torch blocked, one-line errors
for bad model files."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from movenet.cli import main
from movenet.errors import MoveNetError
from movenet.export import BUILTIN_IMAGE, export_onnx, read_metadata, set_metadata
from movenet.image import read_image
from movenet.runtime import OnnxPredictor


@pytest.fixture(scope="module")
def lightning_onnx(lightning, tmp_path_factory) -> Path:
    return export_onnx(lightning, tmp_path_factory.mktemp("runtime") / "lightning.onnx")


@pytest.fixture(scope="module")
def photos(lsp_dir, shared_dir) -> list[Path]:
    media = sorted((shared_dir / "data" / "media").glob("pexels*.jpg"))[:2]
    return [BUILTIN_IMAGE, *media, *(lsp_dir / "images" / f"im{i:04d}.jpg" for i in (1, 7, 123, 640))]


def test_same_keypoints_as_torch(lightning, lightning_onnx, photos):
    from movenet.predict import TorchPredictor

    ours, ref = OnnxPredictor(str(lightning_onnx), threads=2), TorchPredictor(lightning)
    for i, path in enumerate(photos):
        img = read_image(path)
        a, b = ours(img), ref(img)
        np.testing.assert_allclose(a[:, :2], b[:, :2], atol=1e-3, rtol=0, err_msg=str(path))
        np.testing.assert_allclose(a[:, 2], b[:, 2], atol=1e-4, rtol=0, err_msg=str(path))
        if i < 3:
            h, w = img.shape[:2]
            box = (w * 0.1, h * 0.05, 0.8 * max(w, h), 0.8 * max(w, h))  # a crop as in video tracking
            np.testing.assert_allclose(ours(img, box)[:, :2], ref(img, box)[:, :2], atol=1e-3, rtol=0)


_BLOCK_TORCH = '''
import importlib.abc, json, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("torch is blocked in this test", name=name)

sys.meta_path.insert(0, BlockTorch())
model, image, out = sys.argv[1:4]

from movenet.runtime import OnnxPredictor
from movenet.image import read_image
kpts = OnnxPredictor(model, threads=1)(read_image(image))

import movenet
assert (movenet.create_predictor(model)(read_image(image)) == kpts).all()  # the README's API
namespace = {}
exec("from movenet import *", namespace)
assert "create_predictor" in namespace and "load_model" not in namespace

from movenet.cli import main
rc = main(["predict", image, "--backend", "onnx", "--model", model, "--json", out])
cached = main(["predict", image, "--backend", "onnx", "--model", "lightning"])  # exported once, with torch
needs_torch = main(["predict", image, "--model", "lightning"])
assert "torch" not in sys.modules
print(json.dumps({"rc": rc, "cached": cached, "needs_torch": needs_torch, "keypoints": kpts.tolist()}))
'''


def test_runtime_and_cli_work_without_torch(lightning, lightning_onnx, tmp_path):
    from movenet.export import export_onnx_cached

    export_onnx_cached("lightning", verbose=False)
    out = tmp_path / "pred.json"
    proc = subprocess.run([sys.executable, "-c", _BLOCK_TORCH, str(lightning_onnx), str(BUILTIN_IMAGE), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["rc"], result["cached"], result["needs_torch"]) == (0, 0, 2)
    assert proc.stderr.strip().splitlines()[-1].startswith("movenet: error: this needs PyTorch, which is not installed")
    from movenet.predict import TorchPredictor

    expected = TorchPredictor(lightning)(read_image(BUILTIN_IMAGE))
    np.testing.assert_allclose(np.array(result["keypoints"])[:, :2], expected[:, :2], atol=1e-3)
    from movenet.tracking import predict_person

    cli = np.array(json.loads(out.read_text())[0]["people"][0]["keypoints"])
    second_look = predict_person(TorchPredictor(lightning), read_image(BUILTIN_IMAGE))
    np.testing.assert_allclose(cli[:, :2], second_look[:, :2], atol=0.03)  # JSON rounding + onnx in the crop


def test_star_import_takes_the_whole_api_where_torch_is():
    namespace: dict = {}
    exec("from movenet import *", namespace)
    assert {"create_predictor", "create_model", "list_models", "load_model", "decode_single", "MoveNetError",
            "COCO17"} <= set(namespace)
    import movenet

    assert set(movenet.__all__) <= set(dir(movenet)) and "importlib" not in dir(movenet)


def test_blocking_torch_really_blocks():
    code = _BLOCK_TORCH.split("model, image")[0] + "import torch\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr


# ---------------------------------------------------------------- bad model files
def _tiny_onnx(path: Path, metadata: dict | None = None, output: str = "y") -> Path:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 192, 192])
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 3, 192, 192])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], [output])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        set_metadata(model, metadata)
    onnx.save(model, str(path))
    return path


def _cli_error(capsys, model: Path) -> str:
    assert main(["predict", str(BUILTIN_IMAGE), "--backend", "onnx", "--model", str(model), "--json", "/dev/null"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("movenet: error: ") and str(model) in lines[0]
    return lines[0]


def test_not_an_onnx_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model\n")
    with pytest.raises(MoveNetError, match="not a loadable ONNX model"):
        OnnxPredictor(str(bad))
    assert "not a loadable ONNX model" in _cli_error(capsys, bad)


def test_missing_file(tmp_path, capsys):
    assert "file not found" in _cli_error(capsys, tmp_path / "missing.onnx")


def test_onnx_without_metadata(tmp_path, capsys):
    plain = _tiny_onnx(tmp_path / "plain.onnx")
    assert ("neither a `movenet export` file (no movenet metadata) nor a model in Google's MoveNet format "
            "(input shape [1, 3, 192, 192] is not MoveNet's [1,S,S,3])") in _cli_error(capsys, plain)


def test_wrong_model_with_metadata(lightning_onnx, tmp_path, capsys):
    meta = read_metadata(lightning_onnx)
    wrong = _tiny_onnx(tmp_path / "wrong.onnx", meta)
    assert "not a movenet export" in _cli_error(capsys, wrong)


def test_metadata_that_does_not_fit_the_graph(lightning_onnx, tmp_path, capsys):
    proto = onnx.load(str(lightning_onnx))
    meta = read_metadata(lightning_onnx)
    set_metadata(proto, {**meta, "input_size": 256, "center_prior": np.zeros((64, 64)).tolist()})
    onnx.save(proto, str(tmp_path / "size.onnx"))
    assert "input_size 256, the graph's input 192" in _cli_error(capsys, tmp_path / "size.onnx")
    broken = {k: v for k, v in meta.items() if k != "distance_offset"}
    set_metadata(proto, broken)
    onnx.save(proto, str(tmp_path / "broken.onnx"))
    assert "broken movenet metadata" in _cli_error(capsys, tmp_path / "broken.onnx")
    # numbers that would decode to NaN keypoints, and a keypoint count the schema does not have
    for change, problem in (({"coord_scale": float("nan")}, "non-finite decoding constants"),
                            ({"num_keypoints": 13}, "num_keypoints 13, the schema 17")):
        set_metadata(proto, {**meta, **change})
        onnx.save(proto, str(tmp_path / "odd.onnx"))
        assert f"broken movenet metadata (ValueError: {problem})" in _cli_error(capsys, tmp_path / "odd.onnx")


def test_benchmark_command(lightning_onnx, reference_dir, tmp_path, capsys):
    models = [str(lightning_onnx)]
    google = reference_dir / "movenet_lightning.onnx"
    if google.exists():
        models.append(str(google))
    out = tmp_path / "bench.json"
    assert main(["benchmark", "--models", *models, "--runs", "3", "--warmup", "1", "--json", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(models) and rows[1].split("|")[5].strip() == "1.00"  # ratio to itself
    report = json.loads(out.read_text())
    assert [m["label"] for m in report["models"]] == [Path(m).name for m in models]
    assert all(m["model_ms"]["median"] > 0 and m["end_to_end_ms"]["median"] >= m["model_ms"]["median"] * 0.5
               for m in report["models"])
    assert main(["benchmark", "--models", str(tmp_path / "nope.onnx"), "--runs", "1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # an exported file run "as torch" ran onnxruntime under a torch label; a checkpoint as a file entry
    (tmp_path / "model.pt").write_bytes(b"")
    for entry, problem in ((f"torch:{lightning_onnx}", "is an exported model, which runs in its own runtime: give "
                            "the file itself as an entry"),
                           (str(tmp_path / "model.pt"), f"not an exported model (.onnx, .tflite); a checkpoint is an "
                            f"entry as torch:{tmp_path / 'model.pt'} or onnx:{tmp_path / 'model.pt'}")):
        assert main(["benchmark", "--models", entry, "--runs", "1"]) == 2
        assert problem in capsys.readouterr().err


def test_benchmark_blocks_count_runs_without_the_first_of_each_block(lightning_onnx):
    from movenet.benchmark import measure
    from movenet.runtime import OnnxPredictor

    class Counting(OnnxPredictor):
        calls = 0

        def run(self, batch):
            Counting.calls += 1
            return super().run(batch)

    predictor = Counting(str(lightning_onnx), threads=1)
    image = Path(__file__).resolve().parents[1] / "src" / "movenet" / "assets" / "astronaut.jpg"
    [timing] = measure({"m": predictor}, image, runs=5, warmup=1, progress=False, block=3)
    assert len(timing.model_ms) == 5 and len(timing.e2e_ms) == 5
    # 1 warm-up round + ceil(5 / 2) measured rounds, 3 model runs and 3 end-to-end runs each
    assert Counting.calls == (1 + 3) * 3 * 2
    with pytest.raises(MoveNetError):
        measure({"m": predictor}, image, runs=1, block=0, progress=False)
    # refine: end to end is predict's two looks (the astronaut fills the photo: two passes)
    Counting.calls = 0
    measure({"m": predictor}, image, runs=2, warmup=0, progress=False, refine=True)
    assert Counting.calls == 2 * (1 + 2)


@pytest.mark.parametrize("bad, got", [
    (np.zeros((64, 48, 3), np.float32), "float32 array of shape (64, 48, 3)"),  # 0..1 floats
    (np.zeros((64, 48), np.uint8), "shape (64, 48)"),  # grey
    (np.zeros((64, 48, 4), np.uint8), "shape (64, 48, 4)"),  # RGBA
    (np.zeros((3, 64, 48), np.uint8), "shape (3, 64, 48)"),  # CHW
    (np.zeros((0, 0, 3), np.uint8), "shape (0, 0, 3)"),
    ("photo.jpg", "a str"),
    (None, "a NoneType"),
])
def test_predictor_refuses_what_is_not_an_rgb_image(lightning_onnx, bad, got):
    predictor = OnnxPredictor(str(lightning_onnx), threads=1)
    for box in (None, (0, 0, 32, 32)):
        with pytest.raises(MoveNetError, match=r"expected an RGB uint8 H x W x 3 image .*got .*" + re.escape(got)):
            predictor(bad, box)


def test_predictor_refuses_an_empty_box(lightning_onnx):
    predictor = OnnxPredictor(str(lightning_onnx), threads=1)
    img = np.zeros((64, 48, 3), np.uint8)
    for box in ((0, 0, 0, 0), (0, 0, 10, -1), (0, 0, float("nan"), 10), (0, 0, 10), (0, 0, None, 10), "abcd"):
        with pytest.raises(MoveNetError, match="needs 4 finite numbers with width, height > 0"):
            predictor(img, box)
    assert predictor(img, (-10, -10, 20, 20)).shape == (17, 3)  # a box may reach past the image


# ---------------------------------------------------------------- edges found by mutation testing
def test_quantised_tflite_input_and_output(monkeypatch, tmp_path):
    pytest.importorskip("ai_edge_litert")
    import ai_edge_litert.interpreter as li
    from movenet.runtime import ReferencePredictor
    seen = {}

    class FakeInterp:
        def __init__(self, model_path, num_threads=None): pass
        def allocate_tensors(self): pass
        def get_input_details(self):
            return [{"shape": np.array([1, 8, 8, 3]), "dtype": np.uint8, "quantization": (0.5, 10), "index": 0}]
        def get_output_details(self):
            return [{"shape": np.array([1, 1, 17, 3]), "dtype": np.uint8, "quantization": (0.01, 5), "index": 1}]
        def set_tensor(self, i, t): seen["in"] = t.copy()
        def invoke(self): pass
        def get_tensor(self, i): return np.full((1, 1, 17, 3), 55, np.uint8)

    monkeypatch.setattr(li, "Interpreter", FakeInterp)
    f = tmp_path / "q.tflite"
    f.write_bytes(b"x")
    p = ReferencePredictor(str(f))
    out = p(np.full((8, 8, 3), 100, np.uint8))
    assert seen["in"].max() == 210  # round(100 / 0.5 + 10)
    np.testing.assert_allclose(out[:, 2], 0.5, atol=1e-6)  # (55 - 5) x 0.01
    np.testing.assert_allclose(out[:, :2], 4.0, atol=1e-5)  # 0.5 x the 8 px side


def test_whole_image_letterbox_maps_dots_back_without_reference_models(tmp_path):
    from test_eval import DotPredictor
    img = np.zeros((200, 300, 3), np.uint8)
    points = np.array([[50, 40], [270, 90], [60, 180]])
    for c, (x, y) in enumerate(points):
        img[y, x, c] = 255
    out = DotPredictor(300)(img)  # side 300 = input size: exact pixels
    np.testing.assert_allclose(out[:3, :2], points, atol=1e-4)
    out = DotPredictor(150)(img)  # downscaled 2x: within one input pixel (2 image pixels)
    assert np.abs(out[:3, :2] - points).max() <= 2.0


def test_a_checkpoint_predictor_has_the_checkpoints_schema(tmp_path):
    pytest.importorskip("torch")
    from movenet.checkpoint import save_checkpoint
    from movenet.model import create_model
    from movenet.predict import create_predictor
    from movenet.schema import KeypointSchema
    four = KeypointSchema(name="four", keypoints=("head", "left_hand", "right_hand", "tail"), flip_pairs=((1, 2),),
                          skeleton=((0, 1),), sigmas=(.5, .5, .5, .5))
    path = tmp_path / "four.pt"
    save_checkpoint(path, create_model("mobilenetv2_050", input_size=64, num_keypoints=4), four)
    assert create_predictor(str(path)).schema.keypoints == four.keypoints


def test_file_predictor_passes_spinning_on(monkeypatch, tmp_path):
    import movenet.predict as predict
    got = {}
    monkeypatch.setattr(predict, "OnnxPredictor", lambda spec, **kw: got.update(kw) or "p")
    assert predict.file_predictor(str(tmp_path / "m.onnx"), spinning=False) == "p" and got["spinning"] is False


def test_a_box_that_is_not_square_grows_to_a_square_around_its_centre():
    """A person's box (taller than wide) is looked at unstretched: as the square of its longer
    side around its centre, and keypoints map back through that square."""
    from movenet.image import to_image_coords
    from movenet.runtime import Predictor

    class Recorder(Predictor):
        input_size = 32

        def run(self, batch):
            self.batch = batch
            return batch

        def postprocess(self, outputs, box):
            self.box = box
            return to_image_coords(np.array([[0.5, 0.5, 1.0]]), box)  # the crop's centre

    img = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    p = Recorder()
    for box, square in (((10, 20, 30, 60), (-5, 20, 60, 60)), ((40, 30, 50, 20), (40, 15, 50, 50))):
        centre = p(img, box)[0, :2]
        got_box, got_batch = p.box, p.batch
        assert got_box == pytest.approx(square)
        np.testing.assert_allclose(centre, [box[0] + box[2] / 2, box[1] + box[3] / 2])
        p(img, square)
        np.testing.assert_array_equal(got_batch, p.batch)
