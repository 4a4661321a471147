"""Keypoint schemas other than COCO-17: declared in a training config, trained, evaluated,
predicted, exported; Google's weights taken over by keypoint name."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from movenet.cli import main
from movenet.config import config_from_dict
from movenet.errors import DataWarning, MoveNetError
from movenet.metrics import torso_size
from movenet.runtime import model_schema
from movenet.schema import COCO17, schema_from_config

FIVE = {"name": "stick5", "keypoints": ["head", "left_hand", "right_hand", "left_foot", "right_foot"],
        "flip_pairs": [["left_hand", "right_hand"], ["left_foot", "right_foot"]],
        "skeleton": [["head", "left_hand"], ["head", "right_hand"], ["head", "left_foot"], ["head", "right_foot"]]}
COLOURS = [(255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def test_schema_from_config_takes_names_and_fills_sigmas():
    schema = schema_from_config({**FIVE, "torso": ["head", "left_foot"]})
    assert schema.num_keypoints == 5 and schema.flip_pairs == ((1, 2), (3, 4)) and schema.torso_pair() == (0, 3)
    assert schema.sigmas == (pytest.approx(np.mean(COCO17.sigmas)),) * 5  # COCO's mean when not given
    limbs = schema_from_config({"name": "l", "keypoints": ["left_knee", "right_knee", "hand", "nose"]})
    assert limbs.sigmas == (0.87, 0.87, pytest.approx(np.mean(COCO17.sigmas)), 0.26)  # COCO's by name where it has them
    assert list(schema.flip_index()) == [0, 2, 1, 4, 3]
    assert schema_from_config("coco17") is COCO17 and COCO17.torso_pair() == (5, 12)
    assert schema_from_config(FIVE).torso_pair() is None  # PCK then uses the keypoints' box
    assert schema_from_config({**FIVE, "torso": [["head", "left_foot"]]}).torso_pair() == (0, 3)  # as other pairs
    for bad, words in [({**FIVE, "colour": 1}, "unknown key 'colour'"), ({"name": "x"}, "'keypoints' is missing"),
                       ({**FIVE, "skeleton": [["head", "tail"]]}, "no keypoint named 'tail'"),
                       ({"name": "x", "keypoints": ["a", "a"]}, "each once"),
                       ({**FIVE, "sigmas": [0.5, 0.5]}, "2 sigmas for 5 keypoints"),
                       ({**FIVE, "torso": ["head", "head"]}, r"torso is two different keypoints, got \[0, 0\]"),
                       ({**FIVE, "torso": ["head"]}, r"torso is two different keypoints, got \[0\]"),
                       ({**FIVE, "torso": [["head", "left_foot"], ["head", "right_foot"]]},
                        r"torso is one pair of keypoints \(\[left_shoulder, right_hip\]\)"),
                       ({**FIVE, "flip_pairs": [["left_hand"]]}, r"each of flip_pairs is two keypoints, got \['left_hand'\]"),
                       ({**FIVE, "skeleton": ["head"]}, "each of skeleton is two keypoints, got 'head'")]:
        with pytest.raises(ValueError, match=words):
            schema_from_config(bad)
    with pytest.raises(MoveNetError, match="schema: unknown key 'colour'"):  # in a config: one line
        config_from_dict({"schema": {**FIVE, "colour": 1}})


def test_the_model_follows_the_schema():
    cfg = config_from_dict({"schema": FIVE})
    assert cfg.model_config().num_keypoints == 5
    assert config_from_dict({}).model_config().num_keypoints == 17
    with pytest.raises(MoveNetError, match="num_keypoints 7 differs from the schema's 5"):
        config_from_dict({"schema": FIVE, "model": {"overrides": {"num_keypoints": 7}}})


def test_pck_unit_without_a_torso_is_the_longer_side_of_the_keypoint_box():
    schema = schema_from_config(FIVE)
    gt = np.zeros((3, 5, 3))
    gt[0, :, :2] = [[10, 0], [0, 20], [20, 20], [5, 40], [15, 40]]
    gt[0, :, 2] = 2
    gt[1, :2] = [[3, 3, 2], [7, 6, 2]]  # two labelled keypoints: a 4 x 3 box
    gt[2, 0] = [5, 5, 2]  # one: no unit
    np.testing.assert_allclose(torso_size(gt, schema), [40.0, 4.0, np.nan])


def _stick_figures(root, n: int, size: int = 64) -> None:
    """COCO-format data of a "stick5" category: five coloured dots per image."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    coco = {"images": [], "annotations": [],
            "categories": [{"id": 3, "name": "stick", "keypoints": FIVE["keypoints"], "skeleton": []}]}
    for i in range(n):
        img = np.full((size, size, 3), 40, np.uint8)
        cx, cy = rng.uniform(24, 40, 2)
        pts = np.array([[cx, cy - 14], [cx - 12, cy], [cx + 12, cy], [cx - 7, cy + 16], [cx + 7, cy + 16]])
        pts += rng.normal(0, 1.5, pts.shape)
        for (x, y), colour in zip(pts, COLOURS):
            cv2.circle(img, (int(x), int(y)), 3, colour, -1)
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        coco["images"].append({"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size})
        kpts = np.concatenate([pts, np.full((5, 1), 2.0)], axis=1)
        box = [float(pts[:, 0].min()), float(pts[:, 1].min()), float(np.ptp(pts[:, 0])), float(np.ptp(pts[:, 1]))]
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 3, "iscrowd": 0,
                                    "keypoints": [round(float(v), 2) for v in kpts.ravel()], "num_keypoints": 5,
                                    "bbox": box, "area": box[2] * box[3]})
    (root / "annotations.json").write_text(json.dumps(coco))


def test_a_custom_schema_trains_evaluates_predicts_exports_and_runs_on_video(tmp_path, capsys):
    data = tmp_path / "sticks"
    _stick_figures(data, 8)
    config = tmp_path / "sticks.yaml"
    config.write_text(
        f"schema: {json.dumps(FIVE)}\n"
        "model: {name: mobilenetv2_050, overrides: {input_size: 64, head_channels: 32}}\n"
        f"data: {{sources: [{{path: {data / 'annotations.json'}, image_root: {data / 'images'}}}], "
        "val_fraction: 0.25, num_workers: 0}\n"
        "log: {tensorboard: false, images: 2}\n"
        "epochs: 2\nbatch_size: 2\nval_batch_size: 4\nthreads: 1\n")
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["schema"]["keypoints"] == FIVE["keypoints"] and ckpt["model_config"]["num_keypoints"] == 5
    assert np.isfinite(ckpt["metrics"]["val_pck"])  # PCK on the keypoints' box: a number, not nan
    assert main(["data", "stats", str(config), "--out", str(tmp_path / "stats")]) == 0

    # eval on the data file and on the config's held-out images: the model's keypoints
    for source, people in ((str(data / "annotations.json"), 8), (str(config), 2)):
        out = tmp_path / f"report{people}"
        args = ["--images", str(data / "images")] if people == 8 else []
        assert main(["eval", source, *args, "--model", str(run / "last.pt"), "--out", str(out)]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["people"] == people and report["schema"] == "stick5"
        assert list(report["models"]["last"]["pck_torso"]["per_keypoint"]) == FIVE["keypoints"]
        assert "PCK@0.2 torso: error <= 0.2 x the longer side of the box of that person's labelled keypoints" \
            in (out / "report.md").read_text()  # stick5 names no torso
    # a COCO-17 model beside it, listed first or not, is the one named as not fitting
    from movenet.checkpoint import save_checkpoint
    from movenet.model import create_model

    coco = tmp_path / "coco17.pt"
    save_checkpoint(coco, create_model("mobilenetv2_050", input_size=64))
    capsys.readouterr()
    for models in ([coco, run / "last.pt"], [run / "last.pt", coco]):
        args = [a for m in models for a in ("--model", str(m))]
        assert main(["eval", str(data / "annotations.json"), "--images", str(data / "images"), *args,
                     "--out", str(tmp_path / "mixed")]) == 2
        assert (f"{coco}: predicts the 17 keypoints of coco17, none of the data's stick5 "
                f"({', '.join(FIVE['keypoints'][:3])}, ...)") in capsys.readouterr().err
    assert main(["calibrate", str(config), "--model", str(coco), "--out", str(tmp_path / "c.pt")]) == 2
    assert (f"coco17.pt: predicts the 17 keypoints of coco17, without {', '.join(FIVE['keypoints'][:3])}, ... of the "
            "data's stick5 (5)") in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists()

    image = data / "images" / "0.png"
    onnx = tmp_path / "sticks.onnx"
    assert main(["export", str(run / "last.pt"), "-o", str(onnx)]) == 0
    for spec in (onnx, run / "last.pt", f"{run / 'last.pt'}@96"):
        assert model_schema(spec).name == "stick5", spec
    assert model_schema("lightning") is COCO17 and model_schema(tmp_path / "absent.pt") is COCO17
    with pytest.warns(DataWarning, match="of the checked images are calibration images too"):  # (one folder)
        assert main(["export", str(run / "last.pt"), "-o", str(tmp_path / "sticks_int8.onnx"), "--int8",
                     "--calib", str(data / "images"), "--check", str(config)]) == 0  # PCK on the stick5 keypoints
    for model in (run / "last.pt", onnx):
        out = tmp_path / f"{model.suffix[1:]}.json"
        assert main(["predict", str(image), "--model", str(model), "--json", str(out),
                     "--save-dir", str(tmp_path / "drawn")]) == 0
        record = json.loads(out.read_text())[0]
        assert np.array(record["people"][0]["keypoints"]).shape == (5, 3)
        assert record["keypoint_names"] == FIVE["keypoints"]
    assert main(["predict", str(image), "--model", str(onnx), "--multi", "--json", str(tmp_path / "multi.json")]) == 0

    video = tmp_path / "sticks.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(3):
        writer.write(cv2.imread(str(data / "images" / f"{i}.png")))
    writer.release()
    capsys.readouterr()
    assert main(["video", str(video), "--model", str(run / "last.pt"), "--json", str(tmp_path / "v.jsonl")]) == 2
    assert "do not name: use --no-track" in capsys.readouterr().err
    assert main(["video", str(video), "--model", str(run / "last.pt"), "--json", str(tmp_path / "v.jsonl"),
                 "--no-track"]) == 0
    frames = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert len(frames) == 3 and len(frames[0]["people"][0]["keypoints"]) == 5


def test_init_from_lightning_takes_the_keypoint_channels_it_has_by_name(lightning, capsys):
    from movenet.train import build_model

    limbs = list(COCO17.keypoints[5:])
    schema = {"name": "limbs_and_neck", "keypoints": ["neck", *limbs],
              "flip_pairs": [[f"left_{p}", f"right_{p}"]
                             for p in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")]}
    cfg = config_from_dict({"schema": schema, "model": {"name": "lightning"}, "init": "lightning",
                            "data": {"center_mode": "mean"}})
    model = build_model(cfg)
    assert "12 of 13 keypoints taken by name, neck fresh (init_keypoints starts one" in capsys.readouterr().err
    google = lightning.state_dict()
    ours = model.state_dict()
    for name in ("left_knee", "right_wrist"):
        i, j = cfg.keypoint_schema().index(name), COCO17.index(name)
        torch.testing.assert_close(ours["heatmap.out.weight"][i], google["heatmap.out.weight"][j])
        torch.testing.assert_close(ours["regression.out.weight"][2 * i:2 * i + 2],
                                   google["regression.out.weight"][2 * j:2 * j + 2])
        torch.testing.assert_close(ours["offset.out.bias"][2 * i:2 * i + 2], google["offset.out.bias"][2 * j:2 * j + 2])
    torch.testing.assert_close(ours["center.out.weight"], google["center.out.weight"])
    first = next(k for k in ours if k.startswith("backbone."))
    torch.testing.assert_close(ours[first], google[first])
    neck_row = ours["heatmap.out.weight"][0]
    assert not any(torch.equal(neck_row, row) for row in google["heatmap.out.weight"])  # fresh


def test_keypoint_names_match_by_side_and_part_when_spelled_otherwise():
    from movenet.schema import keypoint_key, matching_names

    assert {keypoint_key(n) for n in ("left_knee", "l_knee", "LKnee", "knee.left", "Left-Knee", "knee_L")} == {"left:knee"}
    assert keypoint_key("right_hip") == keypoint_key("RHip") == "right:hip" != keypoint_key("hip")
    assert keypoint_key("Nose") == ":nose" and keypoint_key("lower_back") == ":lowerback"
    google = COCO17.keypoints
    assert matching_names(["r_wrist", "nose", "l_wrist", "neck"], google) == {
        "r_wrist": "right_wrist", "nose": "nose", "l_wrist": "left_wrist"}
    # the same name first; a side and part shared by two unmatched names matches nothing
    assert matching_names(["left_knee", "l_knee"], ["left_knee", "LKnee"]) == {"left_knee": "left_knee", "l_knee": "LKnee"}
    assert matching_names(["l_knee", "L.knee"], ["left_knee"]) == {}
    assert matching_names(["l_knee"], ["left_knee", "LKnee"]) == {}


def test_init_and_eval_take_googles_keypoints_for_names_spelled_otherwise(tmp_path, lightning, capsys):
    from movenet.datasets import ImageEntry, KeypointDataset, PersonAnnotation
    from movenet.evaluate import shared_keypoints
    from movenet.predict import TorchPredictor
    from movenet.train import build_model

    names = ["l_shoulder", "r_shoulder", "LHip", "RHip", "knee.left", "knee.right"]
    google_names = ["left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee"]
    cfg = config_from_dict({"schema": {"name": "six", "keypoints": names}, "model": {"name": "lightning"},
                            "init": "lightning", "data": {"center_mode": "mean"}})
    model = build_model(cfg)
    assert "6 of 6 keypoints taken by name)" in capsys.readouterr().err
    for i, name in enumerate(google_names):
        j = COCO17.index(name)
        torch.testing.assert_close(model.state_dict()["heatmap.out.weight"][i], lightning.state_dict()["heatmap.out.weight"][j])
    person = PersonAnnotation(1, 1, np.zeros((6, 3)), (0, 0, 10, 10), 100.0, False)
    data = KeypointDataset("d", [ImageEntry(1, tmp_path / "a.png", 64, 64, [person])], {},
                           cfg.keypoint_schema())
    same, left_out, (where,) = shared_keypoints(data, {"lightning": TorchPredictor(lightning)}, ["lightning"])
    assert same is data and not left_out and list(where) == [COCO17.index(n) for n in google_names]


def test_coco17s_pairs_and_bones_join_the_right_keypoints():
    from movenet.schema import COCO17, pairs_by_name

    names = COCO17.keypoints
    assert sorted(COCO17.flip_pairs) == sorted(pairs_by_name(names))  # every left has its right
    assert all(names[a].replace("left_", "") == names[b].replace("right_", "") for a, b in COCO17.flip_pairs)
    side = {i: n.split("_")[0] if "_" in n else "middle" for i, n in enumerate(names)}
    for a, b in COCO17.skeleton:  # a limb stays on its side; shoulders and hips are joined across
        assert "middle" in (side[a], side[b]) or side[a] == side[b] or (min(a, b), max(a, b)) in COCO17.flip_pairs
    assert len(set(COCO17.skeleton)) == 18 and COCO17.torso_pair() == (5, 12)


def test_drawings_colour_sides_as_the_schema_pairs_them():
    from movenet.draw import CENTER, LEFT, RIGHT, draw_pose
    from movenet.schema import side_of

    schema = schema_from_config({"name": "robot5", "keypoints": ["head", "l_hand", "r_hand", "LFoot", "RFoot"]})
    assert schema.flip_pairs == ((1, 2), (3, 4))
    assert [side_of(n) for n in schema.keypoints] == [None, "left", "right", "left", "right"]
    kpts = np.array([[50, 10, 1], [20, 50, 1], [80, 50, 1], [30, 90, 1], [70, 90, 1]], float)
    img = draw_pose(np.zeros((100, 100, 3), np.uint8), kpts, schema)
    colours = [tuple(int(c) for c in img[int(y), int(x)]) for x, y, _ in kpts]
    assert colours == [CENTER, LEFT, RIGHT, LEFT, RIGHT]


def test_calibrate_scores_lightning_on_a_schema_of_some_of_its_keypoints(tmp_path, lsp_dir, lightning, capsys):
    """Google's 17 beside a config of LSP's 12 limb joints in another order: calibrated on those
    12, as the 12-keypoint model taken from it by name, and written whole with the offset chosen."""
    from movenet.checkpoint import read_checkpoint, save_checkpoint
    from movenet.config import load_config
    from movenet.train import build_model

    limbs = list(reversed(COCO17.keypoints[5:]))
    config = tmp_path / "limbs.yaml"
    config.write_text(f"schema: {json.dumps({'name': 'limbs12', 'keypoints': limbs})}\n"
                      f"data: {{sources: [{{path: {lsp_dir}}}], val_fraction: 0.04, num_workers: 0}}\n"
                      "init: lightning\nval_batch_size: 8\nthreads: 1\n")
    taken = build_model(load_config(config))  # (init: lightning, 12 of 12 keypoints taken by name)
    save_checkpoint(tmp_path / "twelve.pt", taken, load_config(config).keypoint_schema())
    for model, out in (("lightning", "whole.pt"), (str(tmp_path / "twelve.pt"), "twelve_c.pt")):
        with pytest.warns(DataWarning, match="the limbs12 schema 12; the others .* are left out"):
            assert main(["calibrate", str(config), "--model", model, "--offsets", "1.8", "5", "1000",
                         "--out", str(tmp_path / out)]) == 0
    whole, twelve = read_checkpoint(tmp_path / "whole.pt"), read_checkpoint(tmp_path / "twelve_c.pt")
    assert whole["calibrated"]["metrics"] == pytest.approx(twelve["calibrated"]["metrics"], abs=1e-6)
    assert whole["calibrated"]["metrics"]["pck_at_offset_1.8"] > 0.75  # (the limbs, not other channels)
    assert whole["schema"]["keypoints"] == list(COCO17.keypoints)
    chosen = whole["calibrated"]["distance_offset"]
    for name, tensor in whole["state_dict"].items():
        want = torch.tensor(chosen) if name == "distance_offset" else lightning.state_dict()[name]
        torch.testing.assert_close(tensor, want.to(tensor.dtype), msg=name)


def test_a_selected_schema_keeps_the_pairs_bones_sigmas_and_torso_among_its_keypoints():
    limbs = [n for n in COCO17.keypoints if n.endswith(("shoulder", "hip", "knee"))][::-1]  # (order: the schema's)
    schema = COCO17.select(limbs)
    assert schema.keypoints == ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee")
    assert [(schema.keypoints[a], schema.keypoints[b]) for a, b in schema.flip_pairs] == [
        ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"), ("left_knee", "right_knee")]
    assert {(schema.keypoints[a], schema.keypoints[b]) for a, b in schema.skeleton} == {
        ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
        ("left_hip", "right_hip"), ("left_hip", "left_knee"), ("right_hip", "right_knee")}
    assert schema.sigmas == (.79, .79, 1.07, 1.07, .87, .87) and schema.torso_pair() == (0, 3)
    five = schema_from_config({**FIVE, "torso": ["head", "left_foot"]})
    assert five.select(["head", "left_foot"]).torso == (0, 1) and five.select(["head", "right_foot"]).torso == ()


def test_coco_keypoints_spelled_otherwise_keep_the_torso_sigmas_and_tracking():
    """OpenPose's names (``LShoulder``...) are COCO's keypoints: PCK's unit is still the torso,
    OKS takes COCO's sigmas and video tracking follows the hips and shoulders."""
    from movenet.tracking import determine_crop_region, tracker_schema

    spelled = {"left_shoulder": "LShoulder", "right_shoulder": "RShoulder", "left_hip": "LHip", "right_hip": "RHip"}
    names = [spelled.get(n, n) for n in COCO17.keypoints]
    schema = schema_from_config({"name": "op", "keypoints": names})
    assert schema.torso_pair() == COCO17.torso_pair() == (5, 12) and schema.sigmas == COCO17.sigmas
    assert schema.find("left_hip") == 11 and schema.find("neck") is None and COCO17.find("left_hip") == 11

    class Model:
        pass

    model = Model()
    model.schema = schema
    assert tracker_schema(model, None, track=True) is schema
    pose = np.zeros((17, 3), np.float32)
    pose[:, :2] = np.random.default_rng(0).uniform(100, 300, (17, 2))
    pose[:, 2] = 0.9
    assert determine_crop_region(pose, 640, 480, schema) == determine_crop_region(pose, 640, 480, COCO17)
    model.schema = schema_from_config({"name": "no_hips", "keypoints": ["LShoulder", "RShoulder", "nose"]})
    with pytest.raises(MoveNetError, match="tracking follows a person by the hips and shoulders"):
        tracker_schema(model, None, track=True)


def test_the_torso_pair_needs_both_the_shoulder_and_the_hip():
    """Without left_shoulder or without right_hip (however spelled) PCK's unit is the keypoint
    box, not a pair with a missing end."""
    for gone in ("left_shoulder", "right_hip"):
        assert COCO17.select([n for n in COCO17.keypoints if n != gone]).torso_pair() is None
    from movenet.schema import KeypointSchema

    assert KeypointSchema("op", ("nose", "LShoulder", "RHip"), (), ()).torso_pair() == (1, 2)
    assert KeypointSchema("op", ("nose", "LShoulder"), (), ()).torso_pair() is None


def test_spelling_is_this_schemas_own_name_for_a_keypoint():
    from movenet.schema import KeypointSchema

    schema = KeypointSchema("op", ("nose", "LShoulder", "r_hip"), (), ())
    assert [schema.spelling(n) for n in ("left_shoulder", "right_hip", "nose", "neck")] == [
        "LShoulder", "r_hip", "nose", None]
    assert COCO17.spelling("l_ankle") == "left_ankle"


def test_a_selected_schema_keeps_pairs_given_from_the_higher_index():
    from movenet.schema import KeypointSchema

    schema = KeypointSchema("r", ("right_hand", "left_hand", "head"), flip_pairs=((1, 0),), skeleton=((2, 1), (0, 2)))
    hands = schema.select(["left_hand", "right_hand"])
    assert hands.flip_pairs == ((1, 0),) and hands.skeleton == ()
    assert schema.select(["head", "left_hand"]).skeleton == ((1, 0),)
