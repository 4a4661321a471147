"""Training configuration: YAML + key=value overrides, types, unknown keys, the saved copy,
the learning-rate schedule, and the recipes in configs/ load."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from movenet.config import TrainConfig, config_from_dict, load_config, save_config
from movenet.errors import MoveNetError
from movenet.train import center_mode_note, lr_factor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cfg_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name": "lightning", "overrides": {"input_size": 128}},
        "data": {"sources": [{"path": "somewhere"}], "val_fraction": 0.2},
        "optim": {"lr": 0.001, "betas": [0.8, 0.99]},
        "epochs": 3,
    }))
    return path


def test_yaml_and_typed_overrides(cfg_file):
    cfg = load_config(cfg_file, ["optim.lr=3e-4", "epochs=7", "ema.enabled=true", "optim.warmup_epochs=2",
                                 "augment.scale_range=[0.5, 1.5]", "model.overrides.width=0.5"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.epochs == 7 and cfg.ema.enabled is True
    assert cfg.optim.warmup_epochs == 2.0 and isinstance(cfg.optim.warmup_epochs, float)
    assert cfg.augment.scale_range == (0.5, 1.5)
    assert cfg.optim.betas == (0.8, 0.99)
    assert cfg.data.sources[0]["path"] == "somewhere" and cfg.data.val_fraction == 0.2
    model_cfg = cfg.model_config()
    assert model_cfg.width == 0.5 and model_cfg.input_size == 128
    assert cfg.data.input_size == 128  # the samples follow the model's input size
    # a list of paths may be written as one path
    teacher = "distill.teacher=thunder"  # (unlabelled images need one)
    assert load_config(cfg_file, [teacher, "distill.unlabeled=../photos"]).distill.unlabeled == ["../photos"]
    assert load_config(cfg_file, [teacher, "distill.unlabeled=[a, b]"]).distill.unlabeled == ["a", "b"]


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=1", ["unknown key 'optim.lrr'", "lr"]),
    ("nosuch=1", ["(override nosuch=1): unknown key 'nosuch'"]),  # (the command line's, not the file's)
    ("epochs=many", ["epochs", "integer"]),
    ("ema.enabled=3", ["ema.enabled", "true or false"]),
    ("optim.betas=[0.9]", ["optim.betas", "2 values"]),
    ("augment.scale_range=wide", ["augment.scale_range", "expected a list"]),
    ("optim.name=sgd", ["optim.name", "adam"]),
    ("amp_dtype=float8", ["amp_dtype", "bfloat16"]),
    ("optim.backbone_lr_scale=-0.1", ["optim.backbone_lr_scale", ">= 0"]),
    ("dist_timeout_s=-5", ["dist_timeout_s", ">= 0"]),
    ("optim.freeze_backbone_to_stride=2", ["optim.freeze_backbone_to_stride", "0, 4, 8, 16 or 32", "2"]),
    ("epochs", ["not key=value"]),
    ("model.name.x=1", ["(override model.name.x=1): ", "no sub-keys"]),
])
def test_bad_overrides_fail_in_one_line(cfg_file, override, words):
    with pytest.raises(MoveNetError) as e:
        load_config(cfg_file, [override])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(cfg_file))
    for w in words:
        assert w in msg


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 0.1\n  momentum: 0.9\n")
    with pytest.raises(MoveNetError, match=r"unknown key 'optim.momentum'"):
        load_config(path)


def test_input_size_conflict(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: lightning}\ndata: {input_size: 256}\n")
    with pytest.raises(MoveNetError, match="differs from the model's input size 192"):
        load_config(path)
    assert load_config(path, ["model.overrides.input_size=256"]).data.input_size == 256


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(MoveNetError, match="file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(MoveNetError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(MoveNetError, match="mapping"):
        load_config(bad)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # an image saved as .yaml
    with pytest.raises(MoveNetError, match=r"bad.yaml: not UTF-8 text \(a YAML config is expected\)"):
        load_config(bad)
    bad.write_bytes("# caf\u00e9\nepochs: 3\n".encode("latin-1"))
    with pytest.raises(MoveNetError, match=r"bad.yaml: not UTF-8 text"):
        load_config(bad)
    bad.write_bytes("\ufeffepochs: 3\r\n".encode("utf-8"))  # a byte-order mark and CRLF, as Windows editors write
    assert load_config(bad).epochs == 3
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(MoveNetError, match="folder.yaml: is a folder, not a config file"):
        load_config(tmp_path / "folder.yaml")


def test_an_image_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    import numpy as np

    from movenet.image import read_image

    image = tmp_path / "locked.jpg"
    image.write_bytes(b"\xff\xd8")

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(np, "fromfile", denied)  # (chmod 000 does not stop root)
    with pytest.raises(MoveNetError, match=r"locked.jpg: cannot read \(Permission denied\)"):
        read_image(image)

    from pathlib import Path

    from movenet.image import list_images

    def no_stat(self, *args, **kwargs):  # a file in a folder that cannot be searched
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_dir", no_stat)
    monkeypatch.setattr(Path, "exists", no_stat)
    inside = str(tmp_path / "locked" / "a.jpg")
    assert list_images([inside]) == [inside]  # listed as given: reading it says why not
    with pytest.raises(MoveNetError, match=r"a.jpg: cannot read \(Permission denied\)"):
        read_image(inside)


def test_saved_config_reproduces_the_run(cfg_file, tmp_path):
    cfg = load_config(cfg_file, ["optim.lr=0.02", "distill.teacher=thunder", "distill.unlabeled=[a, b]"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert again.to_dict() == cfg.to_dict()
    assert again == cfg


def test_recipes_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert isinstance(cfg, TrainConfig) and cfg.data.sources, path.name
        cfg.model_config()
        assert center_mode_note(cfg) is None, path.name  # no recipe moves Google's centres


def test_fine_tuning_google_weights_toward_box_centres_gets_a_note(cfg_file):
    for init in ("lightning", "thunder"):
        note = center_mode_note(load_config(cfg_file, [f"init={init}", "data.center_mode=box"]))
        assert note and "data.center_mode=mean" in note and "\n" not in note
        assert center_mode_note(load_config(cfg_file, [f"init={init}", "data.center_mode=mean"])) is None
    assert center_mode_note(load_config(cfg_file, ["init=imagenet", "data.center_mode=box"])) is None


def test_cli_reports_bad_key_in_one_line(cfg_file):
    proc = subprocess.run([sys.executable, "-m", "movenet.cli", "train", str(cfg_file), "optim.lrr=1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("movenet: error:") and "optim.lrr" in lines[0]


def _cfg(**optim) -> TrainConfig:
    from movenet.config import config_from_dict
    return config_from_dict({"epochs": 10, "optim": optim})


def test_lr_schedule_warmup_cosine_step():
    spe = 10  # steps per epoch
    cos = _cfg(warmup_epochs=1.0, schedule="cosine", min_lr_ratio=0.1)
    warm = [lr_factor(s, cos, spe) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear, reaching 1
    assert lr_factor(10, cos, spe) == pytest.approx(1.0)
    mid = 10 + 45  # halfway through the cosine
    assert lr_factor(mid, cos, spe) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, cos, spe) == pytest.approx(0.1)
    values = [lr_factor(s, cos, spe) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))

    step = _cfg(warmup_epochs=0.0, schedule="step", milestones=[3, 6], gamma=0.5)
    assert [lr_factor(s, step, spe) for s in (0, 29, 30, 59, 60, 99)] == \
        pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])
    const = _cfg(warmup_epochs=0.5, schedule="constant")
    assert lr_factor(4, const, spe) == pytest.approx(1.0) and lr_factor(80, const, spe) == 1.0
    assert not math.isnan(lr_factor(0, _cfg(warmup_epochs=0.0), spe))


def test_cli_overrides_after_options_are_applied(cfg_file, tmp_path):
    # `train CONFIG --out DIR key=value`: the override after the option must still count
    # (here: a bad key, which proves it reached the config loader).
    proc = subprocess.run([sys.executable, "-m", "movenet.cli", "train", str(cfg_file), "--out",
                           str(tmp_path / "run"), "optim.lrr=1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "optim.lrr" in proc.stderr and "unrecognized" not in proc.stderr
    stray = subprocess.run([sys.executable, "-m", "movenet.cli", "train", str(cfg_file), "--out",
                            str(tmp_path / "run"), "--bogus"], capture_output=True, text=True, timeout=60)
    assert stray.returncode == 2 and "unrecognized arguments: --bogus" in stray.stderr


def test_a_tilde_in_a_configs_paths_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = config_from_dict({"out_dir": "~/runs/a", "init": "~/m.pt",
                            "data": {"sources": [{"path": "~/data", "image_root": "~/images"}],
                                     "val_sources": [{"path": "~/val.json"}]},
                            "distill": {"teacher": "~/t.pt", "unlabeled": ["~/photos"]}})
    assert cfg.out_dir == f"{tmp_path}/runs/a" and cfg.init == f"{tmp_path}/m.pt"
    assert cfg.data.sources == [{"path": f"{tmp_path}/data", "image_root": f"{tmp_path}/images", "weight": 1.0}]
    assert cfg.data.val_sources[0]["path"] == f"{tmp_path}/val.json"
    assert cfg.distill.teacher == f"{tmp_path}/t.pt" and cfg.distill.unlabeled == [f"{tmp_path}/photos"]


def test_numbers_with_an_exponent_are_numbers_everywhere_in_a_config(tmp_path):
    """YAML 1.1 reads 1e-1 or 1.0e9 as strings; a config reads them as YAML 1.2 does, also
    where no typed field converts them (model overrides, lists, schema sigmas)."""
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: lightning, overrides: {width: 5e-1, norm_shift: -1E0}}\n"
                    "schema: {name: two, keypoints: [a, b], sigmas: [2.5e-2, 1e-1]}\n"
                    "optim: {lr: 1.0e-3}\n")
    cfg = load_config(path, ["model.overrides.norm_scale=[1e-2, 1e-2, 1e-2]", "optim.weight_decay=1e-4"])
    model = cfg.model_config()
    assert model.width == 0.5 and model.norm_shift == -1.0 and model.norm_scale == (0.01, 0.01, 0.01)
    assert cfg.keypoint_schema().sigmas == (0.025, 0.1)
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 1e-4
    with pytest.raises(MoveNetError, match=r"c.yaml \(override model.overrides.width=1e9x\): model width must be a number > 0, got '1e9x'"):
        load_config(path, ["model.overrides.width=1e9x"])  # not a number: still a string, and refused


def test_a_value_refused_because_of_an_override_names_the_override(cfg_file, tmp_path):
    with pytest.raises(MoveNetError, match=re.escape(f"{cfg_file} (override batch_size=0): batch_size must be >= 1")):
        load_config(cfg_file, ["epochs=2", "batch_size=0", "optim.lr=1e-3"])
    # the override that makes the file's own settings wrong is the one named
    with pytest.raises(MoveNetError, match=re.escape(f"{cfg_file} (override model.overrides.num_keypoints=5): "
                                                     "model.overrides.num_keypoints 5 differs from the schema's 17")):
        load_config(cfg_file, ["model.overrides.num_keypoints=5"])
    # an override refused only until a later one mends it is not the one named
    with pytest.raises(MoveNetError, match=re.escape(f"{cfg_file} (override epochs=-3): epochs must be >= 1")):
        load_config(cfg_file, ["distill.alpha=0.3", "distill.teacher=lightning", "epochs=-3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 0\n")
    with pytest.raises(MoveNetError, match=re.escape(f"{bad}: epochs must be >= 1")):  # the file's own error
        load_config(bad, ["batch_size=2"])
    with pytest.raises(MoveNetError, match=re.escape(f"{bad} (override batch_size=0): batch_size must be >= 1")):
        load_config(bad, ["epochs=3", "batch_size=0"])
    assert load_config(bad, ["epochs=3"]).epochs == 3  # (an override that mends the file)
