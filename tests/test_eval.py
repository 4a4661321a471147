"""The annotation loader, the top-down crop round trip, the reference-model predictor and
`movenet eval` end to end (report files, bad inputs)."""
from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from movenet.cli import main
from movenet.datasets import load_keypoint_dataset, lsp_to_coco
from movenet.errors import DataWarning, MoveNetError
from movenet.evaluate import make_samples, person_crop_box, run_models
from movenet.image import to_image_coords
from movenet.runtime import Predictor, ReferencePredictor
from movenet.schema import COCO17

COCO17_NAMES = COCO17.keypoints

pytest.importorskip("pycocotools")


# ---------------------------------------------------------------- loader
def test_loader_sources_agree(coco_mini, lsp_dir):
    folder = load_keypoint_dataset(coco_mini, check_files=True)
    path = load_keypoint_dataset(coco_mini / "person_keypoints.json")
    raw = json.loads((coco_mini / "person_keypoints.json").read_text())
    loaded = load_keypoint_dataset(raw, image_root=coco_mini / "images")
    assert len(folder) == len(raw["images"]) == 28 and folder.num_people == 147
    for other in (path, loaded):
        assert [e.path for e in other.images] == [e.path for e in folder.images]
        assert [p.id for e in other.images for p in e.people] == [p.id for e in folder.images for p in e.people]
    assert sum(p.iscrowd for e in folder.images for p in e.people) == 5
    lsp = load_keypoint_dataset(lsp_dir)
    assert len(lsp) == 1000 and lsp.images[0].path == lsp_dir / "images" / "im0001.jpg"
    assert all(len(e.people) == 1 and e.people[0].num_labelled == 12 for e in lsp.images)


def test_loader_keeps_people_only_and_derives_missing_boxes(coco_mini):
    raw = json.loads((coco_mini / "person_keypoints.json").read_text())
    raw["categories"].append({"id": 7, "name": "dog"})
    raw["annotations"].append({"id": 10**9, "image_id": raw["images"][0]["id"], "category_id": 7, "bbox": [0, 0, 1, 1]})
    ann = next(a for a in raw["annotations"] if a.get("num_keypoints", 0) > 3)
    del ann["bbox"], ann["area"]
    ds = load_keypoint_dataset(raw, image_root=coco_mini / "images")
    assert all(a["category_id"] == 1 for a in ds.coco["annotations"]) and len(ds.coco["annotations"]) == 147
    person = next(p for e in ds.images for p in e.people if p.id == ann["id"])
    k = np.asarray(ann["keypoints"], float).reshape(17, 3)
    xy = k[k[:, 2] > 0, :2]
    np.testing.assert_allclose(person.bbox, [*xy.min(0), *(xy.max(0) - xy.min(0))])
    assert person.area == pytest.approx(person.bbox[2] * person.bbox[3])


def _break(raw: dict, how: str) -> dict:
    ann = raw["annotations"][0]
    if how == "no images":
        del raw["images"]
    elif how == "no annotations":
        del raw["annotations"]
    elif how == "short keypoints":
        ann["keypoints"] = ann["keypoints"][:-3]
    elif how == "nan width":
        raw["images"][0]["width"] = float("nan")
    elif how == "crowd word":
        ann["iscrowd"] = "yes"
    elif how == "unknown image":
        ann["image_id"] = -5
    elif how == "duplicate id":
        raw["annotations"][1]["id"] = ann["id"]
    elif how == "bad visibility":
        ann["keypoints"][2] = 3
    elif how == "no file_name":
        del raw["images"][0]["file_name"]
    elif how == "negative size":
        raw["images"][0]["width"] = -5
    elif how == "no person":  # a "human" category with 17 keypoint names would do
        raw["categories"][0]["name"] = "human"
        del raw["categories"][0]["keypoints"]
    elif how == "negative box height":
        ann["bbox"] = [0, 0, 10, -5]
    elif how == "duplicate image id":
        raw["images"][1]["id"] = raw["images"][0]["id"]
    elif how == "schema mismatch":
        raw["categories"][0]["keypoints"] = raw["categories"][0]["keypoints"][:13]
    return raw


@pytest.mark.parametrize("how, message", [
    ("no images", "missing 'images'"), ("no annotations", "missing 'annotations'"),
    ("short keypoints", "48 keypoint values, expected 51"), ("nan width", "width is not an integer (nan)"),
    ("crowd word", "'iscrowd' must be 0 or 1, got 'yes'"),
    ("unknown image", "unknown image_id -5"), ("duplicate id", "duplicate annotation id"),
    ("bad visibility", "visibility must be 0, 1 or 2"), ("no file_name", "needs 'id' and 'file_name'"),
    ("no person", "no 'person' category, nor one category with 17 keypoints"), ("schema mismatch", "has 13 keypoints"),
    ("negative size", "negative size -5x"),
    ("negative box height", "bbox must be [x, y, w, h] with w, h >= 0"), ("duplicate image id", "duplicate image id"),
])
def test_loader_rejects_malformed_annotations(tmp_path, coco_mini, how, message):
    raw = _break(json.loads((coco_mini / "person_keypoints.json").read_text()), how)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(MoveNetError) as err:
        load_keypoint_dataset(path)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_loader_reads_what_other_tools_write(coco_mini):
    """A person with a box and no keypoints (an instances file, a box-only tool), iscrowd as a
    string and an infinite area are read as meant; the normalised file is strict JSON."""
    raw = json.loads((coco_mini / "person_keypoints.json").read_text())
    first, second, third = raw["annotations"][:3]
    del first["keypoints"]
    second["keypoints"], second["iscrowd"] = [], "0"
    third["iscrowd"], third["area"] = "1", float("inf")
    ds = load_keypoint_dataset(raw, image_root=coco_mini / "images")
    people = {p.id: p for e in ds.images for p in e.people}
    assert people[first["id"]].num_labelled == 0 and people[second["id"]].num_labelled == 0
    assert not people[second["id"]].iscrowd and people[third["id"]].iscrowd
    box = people[third["id"]].bbox
    assert people[third["id"]].area == pytest.approx(box[2] * box[3])
    json.dumps(ds.coco, allow_nan=False)
    assert all(len(a["keypoints"]) == 51 for a in ds.coco["annotations"])  # pycocotools reads every person's
    from movenet.metrics import coco_keypoint_ap
    perfect = [{"image_id": a["image_id"], "keypoints": a["keypoints"], "score": 1.0}
               for a in ds.coco["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    assert coco_keypoint_ap(ds.coco, perfect)["AP"] == pytest.approx(1.0)


def test_loader_rejects_non_json_and_missing_files(tmp_path, coco_mini):
    bad = tmp_path / "bad.json"
    bad.write_text("{'images': ")
    with pytest.raises(MoveNetError, match="not valid JSON"):
        load_keypoint_dataset(bad)
    with pytest.raises(MoveNetError, match="neither an LSP folder"):
        load_keypoint_dataset(tmp_path)
    moved = tmp_path / "person_keypoints.json"
    shutil.copy(coco_mini / "person_keypoints.json", moved)
    ds = load_keypoint_dataset(moved)  # images are looked for beside the JSON, reported when read
    assert ds.images[0].path.parent == tmp_path
    with pytest.raises(MoveNetError, match="28 of 28 image files missing"):
        load_keypoint_dataset(moved, check_files=True)


# ---------------------------------------------------------------- top-down round trip
class DotPredictor(Predictor):
    """Finds one single-pixel dot per colour channel: keypoint k = brightest pixel of channel k."""

    def __init__(self, input_size: int):
        self.input_size = input_size

    def run(self, batch):
        return batch

    def postprocess(self, outputs, box):
        chans = outputs[0]
        ys, xs = np.unravel_index(chans.reshape(3, -1).argmax(axis=1), chans.shape[1:])
        norm = np.zeros((17, 3))
        norm[:3] = np.stack([xs / self.input_size, ys / self.input_size, np.ones(3)], axis=1)
        return to_image_coords(norm, box)


def _dot_dataset(tmp_path) -> tuple:
    import cv2

    points = np.array([[50, 40], [70, 90], [60, 120]], float)
    img = np.zeros((200, 300, 3), np.uint8)
    for c, (x, y) in enumerate(points.astype(int)):
        img[y, x, c] = 255
    cv2.imwrite(str(tmp_path / "dots.png"), img[:, :, ::-1])
    kpts = np.zeros((17, 3))
    kpts[:3, :2], kpts[:3, 2] = points, 2
    raw = {"images": [{"id": 1, "file_name": "dots.png", "width": 300, "height": 200}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": kpts.reshape(-1).tolist()}],
           "categories": [{"id": 1, "name": "person"}]}
    return load_keypoint_dataset(raw, image_root=tmp_path), points


def test_person_crop_box_is_square_around_the_box_centre():
    x0, y0, w, h = person_crop_box((10, 20, 40, 80))
    assert w == h == 100 and (x0 + w / 2, y0 + h / 2) == (30, 60)


@pytest.mark.parametrize("input_size", [100, 200])
def test_topdown_crop_and_map_back_round_trip_exact(tmp_path, input_size):
    ds, points = _dot_dataset(tmp_path)
    samples, excluded = make_samples(ds, "topdown")
    assert excluded == 0 and len(samples) == 1 and samples[0].box == (10.0, 30.0, 100.0, 100.0)
    preds, sides, _, kept, skipped = run_models(ds, samples, {"dots": DotPredictor(input_size)}, progress=False)
    assert kept.all() and not skipped and sides[0] == 100
    np.testing.assert_allclose(preds[0, 0, :3, :2], points, atol=1e-4)


def test_people_without_an_area_are_left_out_of_ap(tmp_path, monkeypatch):
    """A person with one labelled keypoint and no bbox: no crop (topdown leaves it out) and no
    area to scale OKS by. Neither counts as a miss in AP: the dots, found exactly, score AP 1."""
    import movenet.evaluate as evaluate
    from movenet.errors import DataWarning

    ds, _ = _dot_dataset(tmp_path)
    lone = np.zeros((17, 3))
    lone[5] = (250, 150, 2)
    coco = {**ds.coco, "annotations": ds.coco["annotations"] + [
        {"id": 2, "image_id": 1, "category_id": 1, "keypoints": lone.reshape(-1).tolist()}]}
    ds = load_keypoint_dataset(coco, image_root=tmp_path)
    monkeypatch.setattr(evaluate, "open_predictor", lambda spec, threads=None: DotPredictor(100))
    with pytest.warns(DataWarning, match="1 labelled people have no box"):
        run = evaluate.evaluate(ds, "dots", protocol="topdown", progress=False)
    assert run.models[0].metrics["coco"]["AP"] == pytest.approx(1.0)  # (0.5 with the lone person as a miss)

    alone = load_keypoint_dataset({**coco, "annotations": coco["annotations"][1:]}, image_root=tmp_path)
    with pytest.warns(DataWarning, match=r"1 labelled people have no area \(no bbox, keypoints at one spot or in a "
                                         r"line\); COCO AP leaves them out, PCK scores them"):
        evaluate.evaluate(alone, "dots", protocol="whole", progress=False)


def test_each_image_is_read_once_for_all_models_and_people(tmp_path, monkeypatch):
    import movenet.evaluate as evaluate

    ds, points = _dot_dataset(tmp_path)
    ds.images[0].people.append(ds.images[0].people[0])  # a second person in the same image
    reads = []
    monkeypatch.setattr(evaluate, "read_image", lambda path: reads.append(path) or _read(path))
    samples, _ = make_samples(ds, "topdown")
    preds, *_ = run_models(ds, samples, {"a": DotPredictor(100), "b": DotPredictor(200)}, progress=False)
    assert len(reads) == 1 and preds.shape[:2] == (2, 2)
    np.testing.assert_allclose(preds[:, :, :3, :2], np.broadcast_to(points, (2, 2, 3, 2)), atol=1e-4)


def _read(path):
    from movenet.image import read_image
    return read_image(path)


def test_protocols_select_people(coco_mini):
    ds = load_keypoint_dataset(coco_mini)
    usable = [[p for p in e.people if not p.iscrowd and p.num_labelled > 0] for e in ds.images]
    whole, out_whole = make_samples(ds, "whole")
    topdown, _ = make_samples(ds, "topdown")
    assert len(whole) == sum(len(u) == 1 for u in usable) and len(whole) + out_whole == len(ds)
    assert len(topdown) == sum(len(u) for u in usable) == 86


# ---------------------------------------------------------------- reference predictor
def test_reference_predictor_matches_our_port(lsp_dir, reference_dir, lightning):
    from movenet.image import read_image
    from movenet.predict import TorchPredictor

    ref = ReferencePredictor(reference_dir / "movenet_lightning.onnx", threads=1)
    ours = TorchPredictor(lightning)
    assert ref.input_size == 192 and ref.num_keypoints == 17
    for i in (1, 2, 3):
        img = read_image(lsp_dir / "images" / f"im{i:04d}.jpg")
        side = max(img.shape[:2])
        for box in (None, (10.0, 5.0, 120.0, 120.0)):
            a, b = ref(img, box), ours(img, box)
            scale = side if box is None else box[2]
            assert np.abs(a[:, :2] - b[:, :2]).max() / scale < 2e-3  # well below one input pixel
            np.testing.assert_allclose(a[:, 2], b[:, 2], atol=2e-3)


def test_reference_tflite_int8_runs_close_to_fp32(lsp_dir, reference_dir):
    pytest.importorskip("ai_edge_litert")
    from movenet.image import read_image

    int8 = ReferencePredictor(reference_dir / "movenet_lightning_int8.tflite", threads=1)
    fp32 = ReferencePredictor(reference_dir / "movenet_lightning.onnx", threads=1)
    assert int8.input_size == 192
    img = read_image(lsp_dir / "images" / "im0001.jpg")
    err = np.linalg.norm(int8(img)[5:, :2] - fp32(img)[5:, :2], axis=1) / max(img.shape[:2])
    assert np.median(err) < 0.03


def test_reference_predictor_rejects_non_models(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(MoveNetError, match="not a loadable ONNX model"):
        ReferencePredictor(junk)
    with pytest.raises(MoveNetError, match="file not found"):
        ReferencePredictor(tmp_path / "absent.tflite")


# ---------------------------------------------------------------- movenet eval
def _movenet_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("movenet:")]


def test_eval_two_models_writes_full_report(tmp_path, lsp_dir, reference_dir, capsys):
    out = tmp_path / "report"
    ref = str(reference_dir / "movenet_lightning.onnx")
    assert main(["eval", str(lsp_dir), "--model", "lightning", "--model", ref, "--limit", "20",
                 "--out", str(out), "--threads", "1"]) == 0
    names = {"report.md", "report.json", "pck_per_keypoint.png", "pck_curve.png",
             "worst_lightning.png", "worst_movenet_lightning.png"}
    assert {p.name for p in out.iterdir()} == names
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary folder left
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert report["people"] == 20 and report["skipped"] == []
    a, b = report["models"]["lightning"], report["models"]["movenet_lightning"]
    assert abs(a["pck_torso"]["overall"] - b["pck_torso"]["overall"]) <= 0.01  # same network
    assert a["pck_torso"]["per_keypoint"]["nose"] is None  # LSP has no face points
    assert 0 < a["pck_torso"]["overall"] <= 1 and 0 < a["coco"]["AP"] <= 1
    assert a["pckh"] is not None and len(a["pck_torso_curve"]) == len(report["pck_curve_alphas"])
    text = (out / "report.md").read_text()
    assert "| lightning | 192 |" in text and "worst_movenet_lightning.png" in text
    # a second run replaces the earlier report as a whole
    assert main(["eval", str(lsp_dir), "--model", ref, "--limit", "3", "--out", str(out)]) == 0
    assert list(json.loads((out / "report.json").read_text())["models"]) == ["movenet_lightning"]
    assert not (out / "worst_lightning.png").exists()


def test_eval_refine_scores_what_predict_outputs(tmp_path, lsp_dir, reference_dir, lightning, capsys):
    from movenet.evaluate import evaluate
    from movenet.image import read_image
    from movenet.predict import TorchPredictor
    from movenet.tracking import predict_person

    dataset = load_keypoint_dataset(lsp_dir)
    dataset = dataset.subset([e.id for e in dataset.images[:4]])
    predictor = TorchPredictor(lightning)
    for refine in (False, True):
        run = evaluate(dataset, ["lightning"], threads=1, progress=False, refine=refine)
        expected = [predict_person(predictor, read_image(e.path), refine=refine) for e in dataset.images]
        np.testing.assert_allclose(run.models[0].predictions, np.stack(expected), atol=1e-3)
        assert run.settings["refine"] is refine
    # the second look also works for a model that outputs keypoints only (Google's graph)
    out = tmp_path / "report"
    ref = str(reference_dir / "movenet_lightning.onnx")
    assert main(["eval", str(lsp_dir), "--model", "lightning", "--model", ref, "--limit", "4", "--refine",
                 "--out", str(out), "--threads", "1"]) == 0
    assert "whole protocol with a second look" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["refine"] is True
    a, b = report["models"]["lightning"], report["models"]["movenet_lightning"]
    assert abs(a["pck_torso"]["overall"] - b["pck_torso"]["overall"]) <= 0.01
    assert "(whole protocol, second look)" in (out / "report.md").read_text()


def _small_coco(tmp_path, lsp_dir, n: int = 3) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    coco = lsp_to_coco(lsp_dir)
    coco["images"], coco["annotations"] = coco["images"][:n], coco["annotations"][:n]
    for im in coco["images"]:
        shutil.copy(lsp_dir / "images" / im["file_name"], images / im["file_name"])
    path = tmp_path / "people.json"
    path.write_text(json.dumps(coco))
    return path


def test_eval_reports_unreadable_images_and_exits_non_zero(tmp_path, lsp_dir, reference_dir, capsys):
    path = _small_coco(tmp_path, lsp_dir)
    (tmp_path / "images" / "im0002.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    rc = main(["eval", str(path), "--model", str(reference_dir / "movenet_lightning.onnx"), "--out", str(out)])
    assert rc == 1
    lines = _movenet_lines(capsys.readouterr().err)
    assert len(lines) == 2 and "im0002.jpg: not a readable image" in lines[0]
    report = json.loads((out / "report.json").read_text())
    assert report["people"] == 2 and len(report["skipped"]) == 1


def test_eval_warns_in_one_line_about_an_image_of_another_size(tmp_path, lsp_dir, reference_dir):
    path = _small_coco(tmp_path, lsp_dir)
    image = tmp_path / "images" / "im0002.jpg"
    cv2.imwrite(str(image), cv2.resize(cv2.imread(str(image)), None, fx=0.5, fy=0.5))
    with pytest.warns(DataWarning) as caught:
        assert main(["eval", str(path), "--model", str(reference_dir / "movenet_lightning.onnx"),
                     "--out", str(tmp_path / "out")]) == 0
    assert len(caught) == 1
    line = warnings.formatwarning(caught[0].message, caught[0].category, caught[0].filename, caught[0].lineno)
    assert re.fullmatch(r"movenet: warning: \S*im0002\.jpg: the image is \d+x\d+, its annotation says \d+x\d+ "
                        r"\(resized after labelling, or another image of that name\?\)\n", line)
    other = warnings.formatwarning("x", DeprecationWarning, "f.py", 3)  # other warnings keep their origin
    assert "f.py:3" in other


def test_eval_with_no_readable_image_writes_no_report(tmp_path, lsp_dir, reference_dir, capsys):
    path = _small_coco(tmp_path, lsp_dir, n=2)
    for image in (tmp_path / "images").iterdir():
        image.write_bytes(b"garbage")
    out = tmp_path / "out"
    rc = main(["eval", str(path), "--model", str(reference_dir / "movenet_lightning.onnx"), "--out", str(out)])
    assert rc == 2
    lines = _movenet_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "none of its 2 images to evaluate could be read" in lines[0]
    assert "im0001.jpg: not a readable image" in lines[0]
    assert not out.exists()


def test_eval_bad_annotation_file_is_one_line(tmp_path, reference_dir, capsys):
    path = tmp_path / "people.json"
    path.write_text(json.dumps({"images": []}))
    rc = main(["eval", str(path), "--model", str(reference_dir / "movenet_lightning.onnx"),
               "--out", str(tmp_path / "out")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == f"movenet: error: {path}: missing 'annotations'"
    assert not (tmp_path / "out").exists()


def _constant_model(path: Path, keypoints: int = 13) -> None:
    """A MoveNet-format ONNX model ([1,1,K,3] output) that always answers the same pose."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    const = numpy_helper.from_array(np.full((1, 1, keypoints, 3), 0.5, np.float32), "c")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
         helper.make_node("Mul", ["m", "zero"], ["z"]),
         helper.make_node("Add", ["c", "z"], ["out"])],
        "constant", [helper.make_tensor_value_info("input", TensorProto.INT32, [1, 32, 32, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, keypoints, 3])], [const, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize("k", [13, 18])  # (fewer or more outputs than the data's keypoints)
def test_eval_rejects_model_with_other_keypoint_count(tmp_path, lsp_dir, capsys, k):
    model = tmp_path / f"k{k}.onnx"
    _constant_model(model, k)
    rc = main(["eval", str(_small_coco(tmp_path, lsp_dir, 1)), "--model", str(model), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == f"movenet: error: {model}: predicts {k} keypoints, the data has 17 (coco17)"


def test_a_full_disk_while_the_report_is_written_is_one_line(tmp_path, lsp_dir, reference_dir, capsys, monkeypatch):
    import errno

    import movenet.evaluate

    def no_room(report, path):
        path.write_bytes(b"half a plot")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(movenet.evaluate, "plot_per_keypoint", no_room)
    out = tmp_path / "report"
    rc = main(["eval", str(_small_coco(tmp_path, lsp_dir, 1)), "--model", str(reference_dir / "movenet_lightning.onnx"),
               "--out", str(out)])
    assert rc == 2 and capsys.readouterr().err.endswith(
        f"movenet: error: {out}: cannot write (No space left on device)\n")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]


def test_eval_refuses_to_replace_a_foreign_folder(tmp_path, lsp_dir, reference_dir, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc = main(["eval", str(lsp_dir), "--model", str(reference_dir / "movenet_lightning.onnx"), "--out", str(out)])
    assert rc == 2 and "not an earlier eval report" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (out / "report.json").write_text("{}")  # an earlier report, with a model kept in it
    (out / "mine.pt").write_text("weights")
    rc = main(["eval", str(lsp_dir), "--model", str(out / "mine.pt"), "--out", str(out)])
    assert rc == 2 and capsys.readouterr().err == (
        f"movenet: error: {out}: holds files an eval report does not write (mine.pt, notes.txt), which replacing "
        "it would delete; choose another --out\n")
    assert sorted(p.name for p in out.iterdir()) == ["mine.pt", "notes.txt", "report.json"]


# ---------------------------------------------------------------- a training config as data
def _config_with_two_sources(tmp_path) -> Path:
    import yaml

    from train_helpers import write_coco_folder

    sources = []
    for name, n in (("a", 10), ("b", 6)):
        write_coco_folder(tmp_path / name, n, 64)
        sources.append({"path": str(tmp_path / name)})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"data": {"sources": sources, "val_fraction": 0.3, "split_seed": 4}}))
    return path


def test_a_training_config_gives_the_trainers_own_held_out_images(tmp_path):
    from movenet.config import load_config
    from movenet.datasets import concat_datasets
    from movenet.evaluate import config_split
    from movenet.train import build_data

    path = _config_with_two_sources(tmp_path)
    val, train = config_split(path), config_split(path, "train")
    _, trainer_val = build_data(load_config(path), verbose=False)
    assert val.coco == trainer_val.coco  # the images and ids the trainer validates on
    assert len(val) == 3 + 2 and len(train) == 7 + 4
    paths = lambda ds: {e.path for e in ds.images}  # noqa: E731
    assert not paths(val) & paths(train) and len(paths(val) | paths(train)) == 16
    for ds in (val, train):  # every person keeps its own image's (renumbered) id
        assert all(p.image_id == e.id for e in ds.images for p in e.people)
        assert sorted(e.id for e in ds.images) == sorted(im["id"] for im in ds.coco["images"])
    with pytest.raises(ValueError):
        concat_datasets([])
    with pytest.raises(ValueError, match="split must be"):
        config_split(path, "test")
    from movenet.quantize import load_labelled  # export --int8 --check takes a config as well

    views, keypoints = load_labelled(path)
    assert views == [(e.path, None) for e in val.images] and len(keypoints) == 5


def test_eval_of_a_training_config_scores_its_split(tmp_path, capsys):
    path = _config_with_two_sources(tmp_path)
    model = tmp_path / "constant.onnx"
    _constant_model(model, 17)
    for split, people in ((None, 5), ("train", 11)):
        out = tmp_path / f"report_{split}"
        args = ["eval", str(path), "--model", str(model), "--out", str(out)] + (["--split", split] if split else [])
        assert main(args) == 0
        assert json.loads((out / "report.json").read_text())["people"] == people
        assert f"({split or 'val'} split of recipe.yaml): {people} people" in capsys.readouterr().out
    for args, message in (
            ([str(tmp_path / "a"), "--split", "val"], "--split applies to a training config"),
            ([str(path), "--images", str(tmp_path)], "--images does not apply to a training config"),
            ([str(tmp_path / "none.yaml")], "none.yaml: file not found")):
        assert main(["eval", *args, "--model", str(model), "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    path.write_text(path.read_text().replace("val_fraction: 0.3", "val_fraction: 0.0"))
    assert main(["eval", str(path), "--model", str(model), "--out", str(tmp_path / "x")]) == 2
    assert "recipe.yaml: no validation images" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_topdown_says_how_many_people_have_no_box(tmp_path, lsp_dir, reference_dir, capsys):
    path = _small_coco(tmp_path, lsp_dir, 2)
    coco = json.loads(path.read_text())
    ann = coco["annotations"][0]
    ann["keypoints"] = [v if 15 <= i < 18 else 0 for i, v in enumerate(ann["keypoints"])]  # a shoulder only
    ann.pop("bbox", None)
    path.write_text(json.dumps(coco))
    from movenet.errors import DataWarning

    with pytest.warns(DataWarning, match="people: 1 labelled people have no box .* the topdown protocol leaves them out"):
        rc = main(["eval", str(path), "--model", str(reference_dir / "movenet_lightning.onnx"), "--protocol",
                   "topdown", "--out", str(tmp_path / "report")])
    assert rc == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["people"] == 1


def test_a_model_is_scored_on_the_datas_keypoints_by_name(tmp_path, lsp_dir, lightning):
    """A schema of some of COCO's keypoints, in another order: the data file with all 17 is read
    with it, and Lightning's predictions are taken by name, scoring those keypoints as before."""
    from movenet.evaluate import evaluate
    from movenet.schema import COCO17, KeypointSchema

    path = _small_coco(tmp_path, lsp_dir, 6)
    full = load_keypoint_dataset(path)
    names = [n for n in COCO17.keypoints if "_" in n and not n.endswith(("eye", "ear"))][::-1]  # 12 limbs, reversed
    limbs = KeypointSchema("limbs12", tuple(names), flip_pairs=(), skeleton=(), sigmas=tuple(
        COCO17.sigmas[COCO17.keypoints.index(n)] for n in names), torso=(names.index("left_shoulder"),
                                                                           names.index("right_hip")))
    with pytest.warns(DataWarning, match=r"its people have 17 keypoints, the limbs12 schema 12; the others \(nose, "
                                         r"left_eye, right_eye, \.\.\.: 0 labelled points\) are left out"):
        subset = load_keypoint_dataset(path, schema=limbs)  # (LSP has no face points)
    np.testing.assert_array_equal(subset.images[0].people[0].keypoints,
                                  full.images[0].people[0].keypoints[[COCO17.keypoints.index(n) for n in names]])
    a = evaluate(full, ["lightning"], progress=False).models[0].metrics["pck_torso"]["per_keypoint"]
    b = evaluate(subset, ["lightning"], progress=False).models[0].metrics["pck_torso"]["per_keypoint"]
    assert list(b) == names and all(b[n] == a[n] for n in names)
    seven = KeypointSchema("seven", ("nose", "left_paw"), flip_pairs=(), skeleton=())
    with pytest.raises(MoveNetError, match="the person category has 17 keypoints, the seven schema 2, and left_paw of "
                                           "the schema's are not among them"):
        load_keypoint_dataset(path, schema=seven)


# ---------------------------------------------------------------- edges found by mutation testing
def _ds(people, path="a.png", w=100, h=60):
    from pathlib import Path
    from movenet.datasets import ImageEntry, KeypointDataset
    return KeypointDataset("t", [ImageEntry(1, Path(path), w, h, people)], {})


def _person(pid, bbox, crowd=False):
    from movenet.datasets import PersonAnnotation
    kp = np.zeros((17, 3))
    kp[5] = (20, 20, 2)
    kp[11] = (20, 50, 2)
    return PersonAnnotation(pid, 1, kp, bbox, bbox[2] * bbox[3], crowd)


def test_crowds_are_not_scored_and_a_box_of_zero_width_is_cropped():
    from movenet.evaluate import make_samples
    ds = _ds([_person(1, (10, 10, 20, 40), crowd=True), _person(2, (20, 20, 0, 30))])
    whole, _ = make_samples(ds, "whole")
    top, _ = make_samples(ds, "topdown")
    assert [s.person.id for s in whole] == [2] and [s.person.id for s in top] == [2]


def test_whole_protocol_crop_side_is_the_longer_image_side(tmp_path):
    import cv2
    from movenet.evaluate import make_samples, run_models
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((60, 100, 3), np.uint8))
    ds = _ds([_person(1, (10, 10, 20, 40))], path=tmp_path / "a.png")
    samples, _ = make_samples(ds, "whole")
    _, sides, *_ = run_models(ds, samples, {"f": DotPredictor(64)}, progress=False)
    assert sides[0] == 100


def test_fixed_pixel_pck_uses_the_smallest_input_size(monkeypatch, tmp_path):
    import movenet.evaluate as evaluate
    ds, _ = _dot_dataset(tmp_path)
    sizes = iter([100, 200])
    monkeypatch.setattr(evaluate, "open_predictor", lambda spec, threads=None: DotPredictor(next(sizes)))
    run = evaluate.evaluate(ds, ["a", "b"], protocol="topdown", progress=False)
    assert run.settings["px_size"] == 100


# ---------------------------------------------------------------- models that lack some of the data's keypoints
FEET = tuple("left_foot" if n == "left_ankle" else "right_foot" if n == "right_ankle" else n for n in COCO17_NAMES)


class TruthPredictor(Predictor):
    """The labelled keypoints of each (whole) image, keypoint j moved j / 2 pixels to the right,
    in the order of ``names``: PCK falls from keypoint to keypoint."""

    def __init__(self, truth: dict, names=COCO17_NAMES, input_size: int = 96):
        from movenet.schema import KeypointSchema, with_sigmas
        self.truth, self.input_size = truth, input_size
        self.schema = with_sigmas(KeypointSchema("feet" if "left_foot" in names else "other", tuple(names), (), (),
                                                 COCO17.sigmas if len(names) == 17 else ()))

    def __call__(self, img, box=None):
        kpts = self.truth.get(img.tobytes(), np.zeros((17, 3))).astype(np.float64).copy()
        kpts[:, 0] += 0.5 * np.arange(17)
        kpts[:, 2] = 0.9
        names = [n.replace("foot", "ankle") for n in self.schema.keypoints]
        return kpts[[COCO17_NAMES.index(n) if n in COCO17_NAMES else 0 for n in names]]


def _people_with_feet(tmp_path):
    """The same drawn people as a COCO-17 file and with the ankles named left_foot / right_foot."""
    from train_helpers import person, write_coco_folder

    write_coco_folder(tmp_path, 6, 96)
    coco = json.loads((tmp_path / "person_keypoints.json").read_text())
    coco["categories"][0]["keypoints"] = list(FEET)
    (tmp_path / "feet.json").write_text(json.dumps(coco))
    truth = {_read(tmp_path / "images" / f"{i}.png").tobytes(): person(i, 96) for i in range(6)}
    return tmp_path / "person_keypoints.json", tmp_path / "feet.json", truth


def test_models_lacking_some_of_the_datas_keypoints_are_scored_on_the_others(tmp_path, monkeypatch):
    """Lightning beside a model trained with new keypoints: every model is scored on the keypoints
    all of them predict, the same scores as on data of those keypoints only, with a warning."""
    import movenet.evaluate as evaluate

    coco_file, feet_file, truth = _people_with_feet(tmp_path)
    models = {"coco": TruthPredictor(truth), "feet": TruthPredictor(truth, FEET),
              "head": TruthPredictor(truth, ("nose", "left_eye")), "paws": TruthPredictor(truth, ("left_paw",))}
    monkeypatch.setattr(evaluate, "open_predictor", lambda spec, threads=None: models[spec])
    coco = load_keypoint_dataset(coco_file, image_root=tmp_path / "images")
    feet = load_keypoint_dataset(feet_file, image_root=tmp_path / "images", schema=models["feet"].schema)
    shared = [n for n in COCO17_NAMES if "ankle" not in n]

    def scores(data, specs, **kw):
        run = evaluate.evaluate(data, specs, protocol="whole", progress=False, **kw)
        return run, [(r.metrics["pck_torso"]["per_keypoint"], r.metrics["coco"]["AP"]) for r in run.models]

    _, [(on_coco, ap_17)] = scores(coco, ["coco"])
    _, [(feet_alone, feet_ap)] = scores(feet, ["feet"])  # all 17: its feet are Lightning's ankles
    assert list(feet_alone) == list(FEET) and feet_ap == ap_17
    assert [feet_alone[n] for n in FEET] == [on_coco[n] for n in COCO17_NAMES]
    assert len(set(on_coco.values())) > 3  # (scores that differ by keypoint: a test that can fail)

    with pytest.warns(DataWarning, match=r"the coco17\[15\] schema 15; the others .left_ankle, right_ankle"):
        fifteen = load_keypoint_dataset(coco_file, image_root=tmp_path / "images", schema=COCO17.select(shared))
    _, [(reference, ap_15)] = scores(fifteen, ["coco"])  # the loader's own subset, for comparison
    assert ap_15 > ap_17  # (the ankles, moved farthest, are out)
    with pytest.warns(DataWarning, match=r"feet: coco lacks left_foot, right_foot of the data's 17 "
                                         r"keypoints \(feet\); it is scored on the other 15$"):
        run, [(alone, ap)] = scores(feet, ["coco"])
    assert alone == reference and ap == ap_15
    assert run.left_out == {"left_foot": ["coco"], "right_foot": ["coco"]}
    for specs in (["feet", "coco"], ["coco", "feet"]):
        with pytest.warns(DataWarning, match=r"coco lacks left_foot, right_foot of the data's 17 keypoints \(feet\); "
                                             r"all models are scored on the other 15 \(a model evaluated alone"):
            run, both = scores(feet, specs)
        assert both == [(reference, ap_15)] * 2
    with pytest.warns(DataWarning, match=r"coco lacks left_foot, right_foot; head lacks right_eye, left_ear, "
                                         r"right_ear, \.\.\. of the data's 17 keypoints \(feet\); all models are "
                                         r"scored on the other 2"):
        run, [(a, _), (b, _)] = scores(feet, ["coco", "head"])
    assert list(a) == list(b) == ["nose", "left_eye"] and a == {n: reference[n] for n in a}
    assert run.left_out["left_foot"] == ["coco", "head"] and run.left_out["right_eye"] == ["head"]

    with pytest.raises(MoveNetError, match=r"paws: predicts the 1 keypoint of other, none of the data's feet "
                                           r"\(nose, left_eye, right_eye, \.\.\.\)"):
        evaluate.evaluate(feet, ["coco", "paws"], progress=False)
    models["legs"] = TruthPredictor(truth, ("left_knee", "left_foot"))
    with pytest.raises(MoveNetError, match="feet: the models share none of the data's feet keypoints"):
        evaluate.evaluate(feet, ["head", "legs"], progress=False)


def test_eval_scores_lightning_beside_a_model_with_new_keypoints(tmp_path, lsp_dir, lightning):
    """The command line on a file whose ankles are named left_foot / right_foot: Lightning alone,
    beside Lightning's weights saved with those names (either order), and that model alone."""
    from movenet.checkpoint import save_checkpoint
    from movenet.schema import KeypointSchema

    path = _small_coco(tmp_path, lsp_dir, 4)
    coco = json.loads(path.read_text())
    coco["categories"][0]["keypoints"] = list(FEET)
    (tmp_path / "feet.json").write_text(json.dumps(coco))
    feet_model = tmp_path / "feet.pt"
    save_checkpoint(feet_model, lightning,
                    KeypointSchema("feet", FEET, COCO17.flip_pairs, COCO17.skeleton, COCO17.sigmas))

    def report(data, *models):
        out = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        args = [a for m in models for a in ("--model", str(m))]
        assert main(["eval", str(data), *args, "--images", str(tmp_path / "images"), "--out", str(out)]) == 0
        return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()

    full, _ = report(path, "lightning")
    feet_alone, _ = report(tmp_path / "feet.json", feet_model)
    scores = feet_alone["models"]["feet"]["pck_torso"]["per_keypoint"]
    assert list(scores) == list(FEET) and not feet_alone["keypoints_left_out"]
    assert list(scores.values()) == list(full["models"]["lightning"]["pck_torso"]["per_keypoint"].values())
    with pytest.warns(DataWarning, match="feet: lightning lacks left_foot, right_foot of the data's 17 keypoints "
                                         r"\(person\); it is scored on the other 15"):
        alone, md = report(tmp_path / "feet.json", "lightning")
    fifteen = {n: v for n, v in full["models"]["lightning"]["pck_torso"]["per_keypoint"].items() if "ankle" not in n}
    assert alone["models"]["lightning"]["pck_torso"]["per_keypoint"] == fifteen
    assert alone["keypoints_left_out"] == {"left_foot": ["lightning"], "right_foot": ["lightning"]}
    assert "Not scored: `left_foot`, `right_foot` (`lightning` does not predict them)." in md
    for models in ([feet_model, "lightning"], ["lightning", feet_model]):
        with pytest.warns(DataWarning, match="all models are scored on the other 15"):
            both, md = report(tmp_path / "feet.json", *models)
        assert [m["pck_torso"]["per_keypoint"] for m in both["models"].values()] == [fifteen, fifteen]
        assert [m["coco"]["AP"] for m in both["models"].values()] == [alone["models"]["lightning"]["coco"]["AP"]] * 2
        assert "| left_foot |" not in md and "Not scored: `left_foot`, `right_foot` (`lightning` does not" in md


def test_keep_keypoints_takes_the_named_keypoints_everywhere(coco_mini):
    """The keypoints kept out of the middle of the schema: in the people, the COCO annotations
    (and their counts), the category and the schema (its torso too)."""
    import dataclasses

    from movenet.datasets import keep_keypoints

    full = load_keypoint_dataset(coco_mini, schema=dataclasses.replace(COCO17, torso=(5, 12)))
    names = ["right_hip", "left_shoulder", "left_knee", "nose", "left_hip"]
    kept = keep_keypoints(full, names)
    assert kept.schema == full.schema.select(names) and kept.schema.torso_pair() == (1, 3)
    order = [COCO17.index(n) for n in kept.schema.keypoints]
    assert order == [0, 5, 11, 12, 13]
    by_id = {a["id"]: a for a in kept.coco["annotations"]}
    counts = []
    for e, e_full in zip(kept.images, full.images):
        for p, p_full in zip(e.people, e_full.people):
            np.testing.assert_array_equal(p.keypoints, p_full.keypoints[order])
            assert by_id[p.id]["keypoints"] == p.keypoints.reshape(-1).tolist()
            assert by_id[p.id]["num_keypoints"] == p.num_labelled
            counts.append((p.num_labelled, p_full.num_labelled))
    assert any(a < b for a, b in counts) and any(a > 0 for a, _ in counts)
    (category,), (before,) = kept.coco["categories"], full.coco["categories"]
    assert category["keypoints"] == list(kept.schema.keypoints)

    def bones(c):
        return {frozenset(c["keypoints"][i - 1] for i in bone) for bone in c["skeleton"]}
    assert bones(category) == {b for b in bones(before) if b <= set(names)} and len(bones(category)) >= 2


def test_the_report_says_what_is_not_scored_and_that_pck_keeps_the_datas_torso(tmp_path, monkeypatch):
    """Scored on the head only, PCK's unit is still the torso of the whole data, and the report
    says so; each model's missing keypoints are named, one or several."""
    import movenet.evaluate as evaluate

    coco_file, _, truth = _people_with_feet(tmp_path)
    models = {"head": TruthPredictor(truth, ("nose", "left_eye", "right_eye")),
              "blind": TruthPredictor(truth, ("nose", "right_eye", "left_ear")),
              "coco": TruthPredictor(truth)}
    monkeypatch.setattr(evaluate, "open_predictor", lambda spec, threads=None: models[spec])
    coco = load_keypoint_dataset(coco_file, image_root=tmp_path / "images")
    with pytest.warns(DataWarning, match="head lacks left_ear"):
        run = evaluate.evaluate(coco, ["coco", "head", "blind"], progress=False)
    assert run.dataset.schema.keypoints == ("nose", "right_eye") and run.dataset.schema.torso_pair() is None
    report = evaluate.report_dict(run, str(coco_file))
    assert report["torso"] == evaluate.torso_text(COCO17) == "distance(left shoulder, right hip) of that person"
    md = evaluate.report_markdown(report, {"per_keypoint": "p.png", "curve": "c.png",
                                           "worst": {label: "w.png" for label in models}})
    assert ("Not scored: `left_eye` (`blind` does not predict it); `left_ear` (`head` does not predict it); "
            "`right_ear`, `left_shoulder`") in md
    assert "`right_ankle` (`head`, `blind` do not predict them)." in md


def test_eval_reads_the_data_as_the_model_with_the_most_keypoints_that_it_has(tmp_path, coco_mini):
    """Lightning beside a model of 12 limb joints: the data keeps its 17 (the face is then said
    to be left out), whichever is listed first; a model of keypoints the data lacks (a neck)
    gives way to the next; data of none of the models' keypoints is the first model's error."""
    from types import SimpleNamespace

    from movenet.checkpoint import save_checkpoint
    from movenet.evaluate import load_data_for
    from movenet.model import create_model
    from movenet.schema import KeypointSchema

    limbs = COCO17.select([n for n in COCO17.keypoints if "_" in n and not n.endswith(("eye", "ear"))])
    neck = KeypointSchema("neck18", (*COCO17.keypoints, "neck"), COCO17.flip_pairs, (), (*COCO17.sigmas, 0.5))
    specs = {}
    for name, schema in (("limbs", limbs), ("neck", neck)):
        specs[name] = str(tmp_path / f"{name}.pt")
        save_checkpoint(specs[name], create_model("mobilenetv2_050", input_size=64,
                                                  num_keypoints=schema.num_keypoints), schema)
    args = SimpleNamespace(data=str(coco_mini), images=None, split=None)
    for models in ([specs["limbs"], "lightning"], ["lightning", specs["limbs"]]):
        assert load_data_for(args, models).schema.keypoints == COCO17.keypoints
    with pytest.warns(DataWarning, match="the others .* are left out"):
        assert load_data_for(args, [specs["limbs"], specs["neck"]]).schema.keypoints == limbs.keypoints
    coco = json.loads((coco_mini / "person_keypoints.json").read_text())
    coco["categories"][0]["keypoints"] = [f"paw{i}" for i in range(17)]
    (tmp_path / "paws.json").write_text(json.dumps(coco))
    paws = SimpleNamespace(data=str(tmp_path / "paws.json"), images=str(coco_mini / "images"), split=None)
    with pytest.raises(MoveNetError, match="the neck18 schema 18"):
        load_data_for(paws, [specs["limbs"], specs["neck"]])
