"""Training settings and data that must be refused or handled: values out of range, schemas that
cannot work, keypoints named in another order than the schema's, keypoints far outside their
image, an unreadable validation image, predictions that are not numbers; and the run's ends:
max_steps, the initial model as best.pt, Ctrl-C during a validation, TensorBoard after a resume."""
from __future__ import annotations

import json
import re
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from movenet.checkpoint import read_checkpoint, save_checkpoint
from movenet.cli import main
from movenet.config import load_config
from movenet.datasets import load_keypoint_dataset
from movenet.errors import DataWarning, Interrupted, MoveNetError
from movenet.metrics import coco_keypoint_ap, oks, pck
from movenet.samples import DataConfig, build_index
from movenet.schema import COCO17, KeypointSchema
from movenet.train import BEST, FINAL, LAST, Trainer, build_model
from train_helpers import CountingLoss, SyntheticPoses, coco_dict, tiny_config, val_data, write_coco_folder

SMOKE = os.path.join(os.path.dirname(__file__), "..", "configs", "smoke.yaml")


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "optim.lr must be > 0, got -1.0"),
    ("optim.betas=[2,3]", "optim.betas must be two values in [0, 1)"),
    ("optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
    ("optim.min_lr_ratio=-1", "optim.min_lr_ratio must be in [0, 1]"),
    ("optim.clip_grad_norm=-1", "optim.clip_grad_norm must be >= 0"),
    ("ema.decay=1.5", "ema.decay must be in [0, 1)"),
    ("val_batch_size=0", "val_batch_size must be >= 1"),
    ("val_every=0", "val_every must be >= 1"),
    ("log.every_steps=0", "log.every_steps must be >= 1"),
    ("threads=-2", "threads must be in [0, 1024] (0: torch's default), got -2"),
    ("max_steps=-5", "max_steps must be >= 0"),
    ("checkpoint_every_steps=-1", "checkpoint_every_steps must be >= 0"),
    ("device=gpu", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("data.num_workers=-1", "data.num_workers must be >= 0"),
    ("data.crop_expand=0", "data.crop_expand must be > 0"),
    ("augment.rotation_deg=-5", "augment.rotation_deg must be >= 0"),
    ("augment.rotation_deg=.nan", "augment.rotation_deg: expected a finite number, got nan"),
    ("optim.lr=.inf", "optim.lr: expected a finite number, got inf"),
    ("loss.bone=-1", "loss.bone must be >= 0"),
    ("data.sources=[{path: x, weight: abc}]", "a data source's weight must be a number, got 'abc' for x"),
    ("data.sources=[{path: x, weight: 0}]", "a data source's weight must be a finite number > 0, got 0.0 for x"),
    ("data.sources=[{path: x, weight: .inf}]", "a data source's weight must be a finite number > 0, got inf for x"),
    ("data.sources=[{path: x, weight: true}]", "a data source's weight must be a number, got True for x"),
    ("data.regression_radius=-1", "data.regression_radius must be >= 0 (0: one cell), got -1"),
    ("data.offset_radius=-2", "data.offset_radius must be >= 0"),
    ("data.center_sigma_scale=0", "data.center_sigma_scale must be > 0, got 0.0"),
    ("data.sigma_factor=-1", "data.sigma_factor must be > 0"),
    ("data.val_fraction=1", "data.val_fraction must be in [0, 1), got 1.0"),
    ("augment.flip_prob=2", "augment.flip_prob must be in 0..1, got 2.0"),
    ("optim.milestones=[5,-1]", "optim.milestones must be epochs > 0, in order, got [5.0, -1.0]"),
    ("epochs=0", "epochs must be >= 1, got 0"),
    ("distill.teacher=off", "distill.teacher: expected a string, got false (YAML reads yes, no, on and off"),
    ("augment.hue=5", "augment.hue must be in [0, 0.5], got 5.0"),
    ("augment.translate=3", "augment.translate must be in [0, 1.0], got 3.0"),
    ("augment.brightness=1.5", "augment.brightness must be in [0, 1.0], got 1.5"),
    ("seed=-1", "seed must be in [0, 2^32), got -1"),
    ("data.split_seed=-1", "data.split_seed must be in [0, 2^32), got -1"),
    ("epochs=true", "epochs: expected an integer, got True"),
    ("optim.betas=[0.9,0.99,0.5]", "optim.betas: expected 2 values, got 3"),
    ("optim.betas=[0.9,1]", "optim.betas must be two values in [0, 1), got (0.9, 1.0)"),
    ("ema.decay=1", "ema.decay must be in [0, 1), got 1.0"),
    ("optim.lr=0", "optim.lr must be > 0, got 0.0"),
    ("optim.milestones=[6,3]", "optim.milestones must be epochs > 0, in order, got [6.0, 3.0]"),
    ("distill.alpha=1.5", "distill.alpha must be in 0..1, got 1.5"),
    ("distill.center_alpha=-0.1", "distill.center_alpha must be in 0..1, got -0.1"),
    ("loss.bone=0.1", None),  # COCO-17 has a skeleton: fine
])
def test_values_out_of_range_are_one_line_errors(override, message):
    if message is None:
        assert load_config(SMOKE, [override]).loss.bone == 0.1
        return
    with pytest.raises(MoveNetError) as e:
        load_config(SMOKE, [override])
    assert str(e.value).startswith(f"{SMOKE} (override {override}): ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_settings_that_contradict_each_other_and_values_holding_an_equals_sign():
    with pytest.raises(MoveNetError, match="final_init_weight mixes in the initial weights: it needs init lightning, "
                                           "thunder or a checkpoint, not imagenet"):
        load_config(SMOKE, ["init=imagenet", "final_init_weight=0.5"])
    assert load_config(SMOKE, ["out_dir=runs/lr=3e-4"]).out_dir == "runs/lr=3e-4"  # split at the first '='


@pytest.mark.parametrize("overrides, message", [
    (["distill.alpha=0.7"], "distill.alpha weighs a teacher's targets: without distill.teacher it does nothing"),
    (["loss.distill=0.5", "distill.center_alpha=1"], "distill.center_alpha, loss.distill weigh a teacher's"),
    (["data.sources=[{path: a, weight: 3}, {path: b}]", "augment.source_balance=false"],
     "data.sources weights (a 3) set each source's share with augment.source_balance only, which is false"),
    (["data.val_sources=[{path: v, weight: 5}]"], "data.val_sources weights (v 5) do nothing"),
    (["augment.pose_cluster_power=0.7"], "augment.pose_cluster_power weighs pose clusters: it needs"),
])
def test_settings_that_would_do_nothing_are_refused(overrides, message):
    with pytest.raises(MoveNetError, match=re.escape(message)):
        load_config(SMOKE, overrides)
    # with what they act on, they are taken
    load_config(SMOKE, ["distill.teacher=thunder", "distill.alpha=0.7", "loss.distill=0.5"])
    load_config(SMOKE, ["data.sources=[{path: a, weight: 3}, {path: b}]", "augment.pose_clusters=4",
                        "augment.pose_cluster_power=0.7"])


def test_schemas_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="flip pairs must join two different keypoints"):
        KeypointSchema("s", ("a", "b", "c"), flip_pairs=((0, 1), (0, 2)), skeleton=())
    with pytest.raises(ValueError, match="flip pairs must join two different keypoints"):
        KeypointSchema("s", ("a", "b"), flip_pairs=((0, 0),), skeleton=())
    with pytest.raises(ValueError, match="sigmas must be > 0"):
        KeypointSchema("s", ("a", "b"), flip_pairs=(), skeleton=(), sigmas=(0.5, -0.1))
    no_bones = "schema={name: s, keypoints: [a, b, c], flip_pairs: [[b, c]]}"
    with pytest.raises(MoveNetError, match="loss.bone needs the schema's skeleton"):
        load_config(SMOKE, [no_bones, "loss.bone=0.1"])
    cfg = load_config(SMOKE, [no_bones, "schema.sigmas=[0.3, 0.4, 0.4]"])  # a sub-key of a schema mapping
    assert cfg.keypoint_schema().sigmas == (0.3, 0.4, 0.4)
    # a sub-key of a built-in schema (the default coco17) changes that schema's mapping
    cfg = load_config(SMOKE, ["schema.torso=[left_shoulder, left_hip]"])
    assert cfg.keypoint_schema().torso == (5, 11) and cfg.keypoint_schema().keypoints == COCO17.keypoints
    with pytest.raises(MoveNetError, match="schema coco17: 1 sigmas for 17 keypoints"):
        load_config(SMOKE, ["schema=coco17", "schema.sigmas=[1]"])
    with pytest.raises(MoveNetError, match=r"schema is 'mine', not a mapping; set it whole"):
        load_config(SMOKE, ["schema=mine", "schema.sigmas=[1]"])


@pytest.mark.parametrize("override, message", [
    ("model.overrides.norm_mean=[1]", "model norm_mean must be 3 finite numbers, got [1]"),
    ("model.overrides.neck_channels=[1,2]", "model neck_channels must be 4 whole numbers >= 1, got [1, 2]"),
    ("model.overrides.norm_shift=abc", "model norm_shift must be a finite number, got 'abc'"),
    ("model.overrides.backbone=foo", "model backbone must be one of ['mobilenetv2', "),
    ("model.overrides.approx_sigmoid=2", "model approx_sigmoid must be true or false, got 2"),
    ("model.overrides.neck_channels=[24,32,64,96]", "the stride-16 and stride-32 widths must be equal"),
    ("model.overrides.norm_scale=[0,0,0]", "model norm_scale must not hold 0"),
    ("model.overrides.backbone_kwargs={last_channels: 0}", "model mobilenetv2_050: "),
    ("init=", "init '' is not one of scratch, imagenet, lightning, thunder and no such checkpoint"),
    ("init=nowhere.pt", "init 'nowhere.pt' is not one of scratch, imagenet, lightning, thunder and no such checkpoint"),
    ("init=lightning@100", "the input size after '@' must be a positive multiple of 32"),
    ("distill.teacher=nowhere.pt", "distill.teacher 'nowhere.pt' is not one of lightning, thunder and no such"),
    ("model.overrides.backbone_kwargs={foo: 1}", "model mobilenetv2_050: MobileNetV2.__init__() got an unexpected "
                                                 "keyword argument 'foo'"),
    # weights that are there but do not fit the model
    ("init=lightning", "Google's lightning weights: weights of mobilenetv2 width 1.0 do not fit mobilenetv2 width 0.5"),
    ("init=imagenet", "imagenet: weights exist for mobilenetv2 width 1.0 only, the model is mobilenetv2 width 0.5"),
    ("init=lightning@192", "lightning@192: the model being initialised is 96 px"),
    ("init=TMP/model.onnx", "init TMP/model.onnx: an exported model, not a PyTorch checkpoint"),
    # a teacher that cannot be used: before the data too
    ("distill.teacher=TMP/model.onnx", "model.onnx: an exported model, not a PyTorch checkpoint"),
    ("distill.teacher=TMP/junk.pt", "junk.pt: not a readable checkpoint"),
])
def test_a_model_or_weights_that_cannot_be_had_stop_before_the_data_are_read(tmp_path, capsys, monkeypatch, override,
                                                                              message, request):
    if override == "init=lightning":
        request.getfixturevalue("lightning")  # (skips where Google's weights cannot be had)
    def no_data(*args, **kwargs):
        raise AssertionError("the data were read")

    monkeypatch.setattr("movenet.train.build_data", no_data)
    somewhere = f"data.sources=[{{path: {tmp_path}}}]"  # (only looked for)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    override = override.replace("TMP", str(tmp_path))
    assert main(["train", SMOKE, somewhere, override, "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.replace("TMP", str(tmp_path)) in err[0], err
    assert not (tmp_path / "run").exists()


def _three_point_file(tmp_path, names: list[str]):
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "keypoints": [10, 10, 2, 20, 20, 2, 0, 0, 0]}],
            "categories": [{"id": 1, "name": "person", "keypoints": names, "skeleton": [[1, 2]]}]}
    path = tmp_path / "k.json"
    path.write_text(json.dumps(coco))
    return path


def test_keypoints_are_taken_by_name_not_by_place(tmp_path):
    schema = KeypointSchema("s3", ("head", "hand", "foot"), flip_pairs=(), skeleton=())
    ds = load_keypoint_dataset(_three_point_file(tmp_path, ["foot", "head", "hand"]), schema=schema)
    kp = ds.images[0].people[0].keypoints
    assert kp.tolist() == [[20, 20, 2], [0, 0, 0], [10, 10, 2]]  # head, hand, foot
    category = ds.coco["categories"][0]
    assert category["keypoints"] == ["head", "hand", "foot"] and category["skeleton"] == [[3, 1]]
    assert ds.coco["annotations"][0]["keypoints"] == [20, 20, 2, 0, 0, 0, 10, 10, 2]  # what AP compares with
    with pytest.raises(MoveNetError, match=r"k.json: the person category's keypoints are not those of the s3 "
                                           r"schema: it lacks foot and names toe instead; name them as the schema"):
        load_keypoint_dataset(_three_point_file(tmp_path, ["head", "hand", "toe"]), schema=schema)
    # an empty list names none: read in the schema's order, as a file without names
    assert load_keypoint_dataset(_three_point_file(tmp_path, []), schema=schema).images[0].people[0].keypoints[0, 0] == 10
    # more names than the schema's: its keypoints are taken by name, the others left out
    two = KeypointSchema("s2", ("head", "foot"), flip_pairs=(), skeleton=())
    with pytest.warns(DataWarning, match=r"k.json: its people have 3 keypoints, the s2 schema 2; the others "
                                         r"\(hand: 0 labelled points\) are left out"):
        ds = load_keypoint_dataset(_three_point_file(tmp_path, ["foot", "head", "hand"]), schema=two)
    with pytest.raises(MoveNetError, match="k.json: the person category names the keypoint 'head' twice"):
        load_keypoint_dataset(_three_point_file(tmp_path, ["head", "head", "foot"]), schema=schema)
    assert ds.images[0].people[0].keypoints.tolist() == [[20, 20, 2], [10, 10, 2]]
    assert ds.coco["categories"][0]["keypoints"] == ["head", "foot"] and ds.coco["categories"][0]["skeleton"] == [[2, 1]]
    assert ds.coco["annotations"][0]["keypoints"] == [20, 20, 2, 10, 10, 2]


def test_keypoints_far_outside_their_image_are_unlabelled_and_counted(tmp_path):
    write_coco_folder(tmp_path, 2, 96)
    coco = json.loads((tmp_path / "person_keypoints.json").read_text())
    kp = coco["annotations"][0]["keypoints"]
    kp[0], kp[3 * 5 + 1] = 5000.0, -1e6  # nose x, left shoulder y
    kp[3 * 6] = 100.0  # just outside (a cut-off limb): kept
    ds = load_keypoint_dataset(coco, image_root=tmp_path / "images")
    index = build_index([ds], DataConfig())
    assert index.skipped["keypoints far outside their image (unlabelled)"] == 2
    assert index.keypoints[0, [0, 5, 6], 2].tolist() == [0, 0, 2]


def test_predictions_that_are_not_numbers_score_nothing():
    coco = coco_dict(3, 96)
    gt = np.array([a["keypoints"] for a in coco["annotations"]], np.float64).reshape(3, 17, 3)
    nan = np.full_like(gt, np.nan)
    assert pck(nan[..., :2], gt, np.full(3, 10.0))[1] == 0.0  # misses, not unlabelled keypoints
    assert oks(nan[0, :, :2], gt[0], 1000.0) == 0.0
    results = [{"image_id": a["image_id"], "score": float("nan"), "keypoints": [float("nan")] * 51}
               for a in coco["annotations"]]
    assert coco_keypoint_ap(coco, results)["AP"] == 0.0
    good = [{"image_id": a["image_id"], "score": 1.0, "keypoints": a["keypoints"]} for a in coco["annotations"]]
    assert coco_keypoint_ap(coco, good)["AP"] == pytest.approx(1.0)


def _trainer(cfg, out, val=True):
    return Trainer(cfg, out, SyntheticPoses(4, 64, repeat=2), val_data(4, 64) if val else None,
                   CountingLoss(cfg), verbose=False)


def test_max_steps_ends_the_run_with_its_final_model(tmp_path):
    init = tmp_path / "init.pt"
    settings = {"model.overrides.input_size": 64, "batch_size": 2, "epochs": 3, "threads": 1, "max_steps": 2}
    save_checkpoint(init, build_model(tiny_config(**settings), verbose=False))
    cfg = tiny_config(**settings, init=str(init), final_init_weight=0.5)
    state = _trainer(cfg, tmp_path / "run").fit()
    assert state.step == 2 and (tmp_path / "run" / FINAL).exists()


def test_the_initial_model_competes_for_best(tmp_path):
    cfg = tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "epochs": 2, "threads": 1,
                         "val_before": True})
    trainer = _trainer(cfg, tmp_path)
    scores = iter([0.9, 0.5, 0.7])  # training only makes it worse

    def validate(epoch, *args, **kwargs):
        return {"pck": next(scores), "ap": 0.0}
    trainer._validate = validate
    initial = {k: v.clone() for k, v in trainer.eval_model().state_dict().items()}
    state = trainer.fit()
    assert [h["val_pck"] for h in state.history] == [0.9, 0.5, 0.7]
    assert (state.best, state.best_epoch) == (0.9, 0) and read_checkpoint(tmp_path / BEST)["epoch"] == 0
    best = read_checkpoint(tmp_path / BEST)["state_dict"]
    assert all(torch.equal(best[k], v) for k, v in initial.items())


def test_ctrl_c_during_a_validation_stops_at_the_end_of_that_epoch(tmp_path, capsys):
    cfg = tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "epochs": 2, "threads": 1})
    trainer = _trainer(cfg, tmp_path)
    validate = trainer._validate

    def interrupted_validation(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # handled: the validation finishes
        return validate(*args, **kwargs)
    trainer._validate = interrupted_validation
    with pytest.raises(Interrupted):
        trainer.fit()
    assert "interrupted after epoch 1" in capsys.readouterr().err
    assert read_checkpoint(tmp_path / LAST)["epoch"] == 1


def test_an_unreadable_validation_image_is_left_out_with_on_bad_image_skip(tmp_path, capsys):
    data = tmp_path / "data"
    write_coco_folder(data, 8, 64)
    coco = json.loads((data / "person_keypoints.json").read_text())
    (data / "images" / coco["images"][0]["file_name"]).write_bytes(b"not an image")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "model": {"name": "mobilenetv2_050", "overrides": {"input_size": 64, "head_channels": 32}},
        "data": {"sources": [{"path": str(data)}], "val_sources": [{"path": str(data)}], "num_workers": 0,
                 "on_bad_image": "skip"},
        "log": {"tensorboard": False, "images": 2}, "batch_size": 4, "epochs": 1, "threads": 1}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    # shown as main() installs it (one line), or recorded where another test installed it before
    assert "unreadable image skipped: " in err + " ".join(str(w.message) for w in caught)
    assert ": not a readable image (corrupt" in err + " ".join(str(w.message) for w in caught)
    assert "Traceback" not in err
    history = read_checkpoint(tmp_path / "run" / LAST)["train_state"]["history"]
    assert np.isfinite(history[-1]["val_pck"])


def test_tensorboard_keeps_what_was_logged_at_the_step_a_run_resumes_from(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "epochs": 2, "threads": 1,
                         "log.tensorboard": True, "log.every_steps": 1})
    _trainer(cfg, tmp_path).fit()
    resumed = _trainer(cfg, tmp_path)
    resumed.resume(tmp_path / LAST)
    resumed.fit()  # a finished run: nothing to do, the log must stay whole
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/pck")] == [4, 8]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))


def test_train_names_the_model_to_use(lsp_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", SMOKE, f"data.sources=[{{path: {lsp_dir}}}]", "--out", str(out)]) == 0
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.endswith(f"model: {out / 'best.pt'}")


def test_ctrl_c_during_the_final_models_validation_writes_no_final(tmp_path, capsys):
    init = tmp_path / "init.pt"
    settings = {"model.overrides.input_size": 64, "batch_size": 2, "epochs": 1, "threads": 1}
    save_checkpoint(init, build_model(tiny_config(**settings), verbose=False))
    cfg = tiny_config(**settings, init=str(init), final_init_weight=0.5)
    trainer = _trainer(cfg, tmp_path)
    validate = trainer._validate

    def validate_then_ctrl_c(epoch, *args, **kwargs):
        if args and args[-1] == "final":
            os.kill(os.getpid(), signal.SIGINT)
        return validate(epoch, *args, **kwargs)
    trainer._validate = validate_then_ctrl_c
    with pytest.raises(Interrupted):
        trainer.fit()
    assert "interrupted before final.pt was written" in capsys.readouterr().err
    assert not (tmp_path / FINAL).exists()
    resumed = _trainer(cfg, tmp_path)
    resumed.resume(tmp_path / LAST)
    resumed.fit()
    assert (tmp_path / FINAL).exists()


def test_resuming_a_finished_run_keeps_its_final_model(tmp_path):
    init = tmp_path / "init.pt"
    settings = {"model.overrides.input_size": 64, "batch_size": 2, "epochs": 1, "threads": 1}
    save_checkpoint(init, build_model(tiny_config(**settings), verbose=False))
    cfg = tiny_config(**settings, init=str(init), final_init_weight=0.5)
    _trainer(cfg, tmp_path).fit()
    written = (tmp_path / FINAL).stat().st_mtime_ns
    tags = []

    def resumed(cfg):
        trainer = _trainer(cfg, tmp_path)
        validate = trainer._validate
        trainer._validate = lambda epoch, *args, **kwargs: tags.append(args[-1:]) or validate(epoch, *args, **kwargs)
        trainer.resume(tmp_path / LAST)
        trainer.fit()

    resumed(cfg)  # nothing left to do: final.pt is neither validated nor written again
    assert tags == [] and (tmp_path / FINAL).stat().st_mtime_ns == written
    resumed(tiny_config(**settings, init=str(init), final_init_weight=0.25))  # another mix: movenet average's
    assert tags == [] and (tmp_path / FINAL).stat().st_mtime_ns == written
    (tmp_path / FINAL).unlink()  # as when an interruption kept it from being written: the resume writes it
    resumed(cfg)
    assert tags == [("final",)] and read_checkpoint(tmp_path / FINAL)["config"]["final_init_weight"] == 0.5


def test_resuming_with_other_settings_says_which(tmp_path, capsys):
    from movenet.train import config_changes

    settings = {"model.overrides.input_size": 64, "batch_size": 2, "epochs": 1, "threads": 1}
    cfg = tiny_config(**settings)
    _trainer(cfg, tmp_path / "run").fit()
    run = tmp_path / "run"
    saved = read_checkpoint(run / LAST)["train_state"]["optimizer"]["param_groups"]
    for other, changed in ((cfg, None), (tiny_config(**{**settings, "epochs": 2, "optim.lr": 0.5}),
                                         "epochs 1 -> 2; optim.lr 0.003 -> 0.5")):
        trainer = _trainer(other, run)
        trainer.verbose = True
        trainer.resume(run / LAST)
        groups = [g["lr"] for g in trainer.optimizer.param_groups]
        kept = run / f"config.step{trainer.state.step}.yaml"
        assert not kept.exists()  # written when the training goes on: a resume that fails writes nothing
        if changed is not None:
            # the new rate is used, at the schedule's place: the constant schedule's 0.5 itself
            assert groups == [0.5] * len(groups) == trainer.scheduler.get_last_lr()
        trainer.fit()
        err = capsys.readouterr().err
        if changed is None:
            assert "warning" not in err and not list(run.glob("config.step*.yaml"))
            assert groups == [g["lr"] for g in saved]  # exactly the saved state
        else:
            assert f"movenet: warning: {run / LAST}: resumed with other settings than the run's ({changed}); " \
                   f"the run's are in {kept}: give it as the config to go on with them" in err
            assert load_config(kept).to_dict() == cfg.to_dict()
    assert config_changes({"a": {"b": 1, "c": 2}, "out_dir": "x"}, {"a": {"b": 1, "c": 3}, "d": 4, "out_dir": "y"}) \
        == ["a.c 2 -> 3", "d None -> 4"]


def test_validation_images_that_are_also_training_images_are_warned_about(tmp_path):
    from movenet.errors import DataWarning
    from movenet.samples import split_sources

    write_coco_folder(tmp_path / "a", 4, 64)
    write_coco_folder(tmp_path / "b", 3, 64)
    same = DataConfig(sources=[{"path": str(tmp_path / "a")}], val_sources=[{"path": str(tmp_path / "a")}])
    with pytest.warns(DataWarning, match=r"4 of the 4 validation images are also training images"):
        split_sources(same)
    apart = DataConfig(sources=[{"path": str(tmp_path / "a")}], val_sources=[{"path": str(tmp_path / "b")}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_sources(apart)
        split_sources(DataConfig(sources=[{"path": str(tmp_path / "a")}, {"path": str(tmp_path / "b")}],
                                 val_fraction=0.5))
    # the photos of a in a second source under other ids, each source split on its own by val_fraction
    again = json.loads((tmp_path / "a" / "person_keypoints.json").read_text())
    for entry in again["images"] + again["annotations"]:
        entry["id"] += 100
    for ann in again["annotations"]:
        ann["image_id"] += 100
    (tmp_path / "a" / "again.json").write_text(json.dumps(again))
    twice = DataConfig(sources=[{"path": str(tmp_path / "a")}, {"path": str(tmp_path / "a" / "again.json")}],
                       val_fraction=0.5)
    with pytest.warns(DataWarning, match=r"validation images are also training images \(two data.sources share "
                                         r"them, and each source's split put them on another side\)"):
        split_sources(twice)


def test_eval_warns_about_keypoints_far_outside_their_image(tmp_path):
    from movenet.errors import DataWarning
    from movenet.evaluate import evaluate

    write_coco_folder(tmp_path, 2, 96)
    coco = json.loads((tmp_path / "person_keypoints.json").read_text())
    coco["annotations"][0]["keypoints"][0] = 5000.0
    ds = load_keypoint_dataset(coco, image_root=tmp_path / "images")
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, build_model(tiny_config(**{"model.overrides.input_size": 64}), verbose=False))
    with pytest.warns(DataWarning, match="1 labelled keypoints lie more than an image's size outside"):
        evaluate(ds, [str(model)], progress=False)


def test_a_full_disk_at_tensorboards_close_does_not_hide_the_error_that_stopped_the_run(tmp_path):
    import errno

    from movenet.train import build_loss

    class FullDiskWriter:
        def close(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    cfg = tiny_config(**{"model.overrides.input_size": 64, "threads": 1})
    trainer = Trainer(cfg, tmp_path / "run", SyntheticPoses(4, 64), None, build_loss(cfg), verbose=False)
    trainer.writer = FullDiskWriter()
    with pytest.raises(MoveNetError, match=r"run/tensorboard: cannot write \(No space left on device\)"):
        trainer._close_writer()
    with pytest.raises(MoveNetError, match="run/last.pt: cannot write"):  # the checkpoint's error is the one said
        try:
            raise MoveNetError(f"{tmp_path / 'run' / LAST}: cannot write (No space left on device)")
        finally:
            trainer._close_writer()


def test_batch_norms_of_folded_weights_are_frozen_unless_the_config_says(lightning, tmp_path):
    from movenet.model import create_model
    from movenet.train import batch_norms_folded, build_loss

    assert batch_norms_folded(lightning, "lightning")  # Google's: identity statistics (variance 1 - eps)
    fresh = create_model("mobilenetv2_050", input_size=64, head_channels=32)
    assert not batch_norms_folded(fresh, "scratch") and not batch_norms_folded(fresh, "imagenet")
    assert batch_norms_folded(fresh, "some.pt")  # a checkpoint that kept identity statistics
    fresh.train()(torch.rand(2, 3, 64, 64) * 255)  # statistics learnt from batches
    assert not batch_norms_folded(fresh, "some.pt")

    for setting, frozen in ((None, True), (False, False), (True, True)):
        cfg = tiny_config(**{"model.overrides.input_size": 64, "threads": 1, "init": str(tmp_path / "x.pt"),
                             "optim.freeze_bn": setting})
        model = create_model("mobilenetv2_050", input_size=64, head_channels=32, num_keypoints=17)
        trainer = Trainer(cfg, tmp_path / "run", SyntheticPoses(4, 64), None, build_loss(cfg), model=model,
                          verbose=False)
        assert trainer.freeze_bn is frozen, setting


def test_annotation_tool_exports_are_read_as_meant(tmp_path):
    """What annotation tools write: points not labelled at (0, 0) with v > 0 (CVAT, scripts),
    an empty box or area, a 'person' box category beside the keypoint one, people of a second
    keypoint category, string category ids, and Label Studio's images/ paths (also as Windows writes them)."""
    import copy
    import warnings as w

    from movenet.errors import DataWarning

    base = coco_dict(3, 64)
    truth = load_keypoint_dataset(copy.deepcopy(base))
    coco = copy.deepcopy(base)
    ann = coco["annotations"][0]
    ann["keypoints"][0:3] = [0, 0, 2]  # the nose "labelled" at the origin
    ann["bbox"], ann["area"] = [0, 0, 0, 0], 0
    coco["annotations"][1]["category_id"] = "1"
    coco["annotations"][2]["category_id"] = 1.0
    coco["categories"] = [{"id": 3, "name": "person"}, {"id": 1, "name": "human", "keypoints": list(COCO17.keypoints)}]
    coco["annotations"].append({**copy.deepcopy(coco["annotations"][2]), "id": 99, "category_id": 3})
    with pytest.warns(DataWarning) as caught:
        ds = load_keypoint_dataset(coco)
    messages = [str(c.message) for c in caught]
    assert any("1 keypoints labelled at (0, 0) read as not labelled" in m for m in messages), messages
    assert any("1 annotations with keypoints in other categories (id 3: 1) left out; only category 1 (human)" in m
               for m in messages), messages
    first = ds.images[0].people[0]
    assert first.keypoints[0, 2] == 0 and first.num_labelled == truth.images[0].people[0].num_labelled - 1
    assert first.bbox[2] > 0 and first.area == pytest.approx(first.bbox[2] * first.bbox[3])  # the labels' box
    assert ds.coco["annotations"][0]["keypoints"][2] == 0  # pycocotools sees it unlabelled too
    assert [len(e.people) for e in ds.images] == [1, 1, 1]  # "1" and 1.0 are category 1
    two = copy.deepcopy(coco)  # two keypoint categories beside the 'person' box one: which is meant?
    two["categories"].append({"id": 5, "name": "athlete", "keypoints": list(COCO17.keypoints)})
    with pytest.raises(MoveNetError, match="2 categories have 17 keypoints \\('human', 'athlete'\\) and none is "
                                           "'person': keep one of them"):
        load_keypoint_dataset(two)

    folder = tmp_path / "label_studio"  # file_name "images/x.png" beside an images/ folder
    (folder / "images").mkdir(parents=True)
    ls = copy.deepcopy(base)
    for im in ls["images"][1:]:  # (the first image missing: the others decide)
        (folder / "images" / im["file_name"]).write_bytes(b"")
    for im in ls["images"]:
        im["file_name"] = f"images/{im['file_name']}"
    (folder / "result.json").write_text(json.dumps(ls))
    with w.catch_warnings():
        w.simplefilter("error")
        loaded = load_keypoint_dataset(folder / "result.json")
    assert loaded.images[1].path == folder / "images" / "1.png"
    for im in ls["images"]:  # written on Windows: images\\1.png
        im["file_name"] = im["file_name"].replace("/", "\\")
    (folder / "result.json").write_text(json.dumps(ls))
    with w.catch_warnings():
        w.simplefilter("error")
        loaded = load_keypoint_dataset(folder / "result.json")
    assert loaded.images[1].path == folder / "images" / "1.png" and loaded.images[1].path.exists()


def test_a_schema_pairs_left_and_right_by_name_unless_told():
    from movenet.schema import pairs_by_name, schema_from_config

    from movenet.errors import DataWarning

    assert pairs_by_name(COCO17.keypoints) == list(COCO17.flip_pairs)
    assert pairs_by_name(["nose", "L_knee", "R_knee", "hand_left", "hand_right", "Left Foot", "Right Foot",
                          "LShoulder", "RShoulder", "leftHand", "rightHand", "hip.left", "hip.right",
                          "lip", "rip", "Lens"]) == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]
    assert pairs_by_name(["left_l", "right_l", "left_r", "right_r"]) == [(0, 1), (2, 3)]  # each in one pair
    named = {"name": "five", "keypoints": ["head", "left_hand", "right_hand", "foot_l", "foot_r"]}
    assert schema_from_config(named).flip_pairs == ((1, 2), (3, 4))
    assert schema_from_config({**named, "flip_pairs": []}).flip_pairs == ()  # said: none
    with pytest.warns(DataWarning, match="schema tail: left_tail names a side but has no partner by name"):
        assert schema_from_config({"name": "tail", "keypoints": ["head", "left_tail"]}).flip_pairs == ()


def test_a_schema_is_resolved_once_per_config_and_names_repeated_keypoints_first(recwarn):
    from movenet.config import load_config
    from movenet.errors import DataWarning

    cfg = load_config(None, ["schema={name: tail, keypoints: [head, left_tail], skeleton: [[head, left_tail]]}"])
    for _ in range(3):
        assert cfg.keypoint_schema().keypoints == ("head", "left_tail")
    said = [str(w.message) for w in recwarn if issubclass(w.category, DataWarning)]
    assert said == ["schema tail: left_tail names a side but has no partner by name; a flip keeps their labels "
                    "(give flip_pairs, or [] for none)"]
    cfg.schema = {"name": "two", "keypoints": ["a", "b"]}  # a changed schema is resolved again
    assert cfg.keypoint_schema().name == "two"
    with pytest.raises(MoveNetError, match=r"schema three: keypoint names must be given, each once \(a more than "
                                           r"once\)"):  # (not the bone naming the keypoint the duplicate replaced)
        load_config(None, ["schema={name: three, keypoints: [a, b, a], skeleton: [[a, c]]}"])


def test_counts_in_messages_agree_with_their_number():
    from movenet.errors import counted

    assert counted(1, "images with crowd regions") == "1 image with crowd regions"
    assert counted(2, "images with crowd regions") == "2 images with crowd regions"
    assert counted(1, "target people") == "1 target person"
    assert counted(1, "keypoints far outside their image (unlabelled)") == \
        "1 keypoint far outside their image (unlabelled)"
    assert counted(0, "people without keypoints") == "0 people without keypoints"


def test_a_new_run_refuses_a_folder_of_other_files(tmp_path):
    from movenet.train import check_run_folder

    out = tmp_path / "photos"
    out.mkdir()
    (out / "annotations.json").write_text("{}")
    with pytest.raises(MoveNetError, match=r"photos: holds files a run does not write \(annotations.json\); "
                                           "choose another --out"):
        check_run_folder(out, None)
    check_run_folder(out, None, writes=False)  # (another machine's process does not write)
    left = tmp_path / "failed"  # what a run that stopped before its first checkpoint leaves
    (left / "tensorboard").mkdir(parents=True)
    (left / "config.yaml").write_text("epochs: 1\n")
    (left / ".last.pt.x1y2.tmp.pt").write_text("")
    check_run_folder(left, None)


def _folder_config(tmp_path, **extra) -> Path:
    write_coco_folder(tmp_path / "data", 8, 64)
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "model": {"name": "mobilenetv2_050", "overrides": {"input_size": 64, "head_channels": 32}},
        "data": {"sources": [{"path": str(tmp_path / "data")}], "val_fraction": 0.25, "num_workers": 0},
        "optim": {"warmup_epochs": 0.0}, "log": {"images": 0}, "batch_size": 2, "epochs": 1, "threads": 1,
        **extra}))
    return config


def test_resumed_runs_write_into_no_other_run_and_change_nothing_when_they_fail(tmp_path, capsys):
    config = _folder_config(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", str(config), "--out", str(a)]) == 0
    assert main(["train", str(config), "max_steps=2", "--out", str(b)]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in b.iterdir()}
    capsys.readouterr()
    # another run's folder as --out of a resume: refused, that run untouched
    assert main(["train", str(config), "epochs=2", "--resume", str(a / LAST), "--out", str(b)]) == 2
    assert capsys.readouterr().err.strip() == (f"movenet: error: {b}: already holds another run's {LAST}; resuming "
                                               f"{a / LAST} there would write over it: choose another --out")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["train", str(config), "epochs=2", "--resume", str(a / LAST), "--out", str(foreign)]) == 2
    assert "holds files a run does not write (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]  # (no lock file left in someone's folder)
    assert main(["train", str(config), "--out", str(foreign)]) == 2  # (a new run: the same)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # finished, and into another folder with other settings: nothing written there
    assert main(["train", str(config), "optim.lr=0.1", "--resume", str(a / LAST), "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()
    # b stopped after batch 2 of its 3; with batch_size 6 its epoch would go on in another order (and
    # has 1 batch): said before anything is written
    assert main(["train", str(config), "batch_size=6", "--resume", str(b)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{b / LAST}: stopped inside epoch 1 (after batch 2), which goes on only in the same order of samples; "
        "changed: batch_size 2 -> 6. Resume with the run's settings (its config.yaml) and max_steps=3 to finish "
        "that epoch, then with yours")
    # and with the same max_steps, or with other settings, there is nothing to train: nothing is written
    for extra in ([], ["optim.lr=0.1"]):
        assert main(["train", str(config), "max_steps=2", *extra, "--resume", str(b)]) == 0
        assert f"{b}: nothing to train: the run stopped at max_steps (2 steps): raise max_steps= (0: no limit) " \
               "to go on" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in b.iterdir()} == before
    # the way out the refusal gives: the epoch finished with the run's settings, then the change
    assert main(["train", str(b / "config.yaml"), "max_steps=3", "--resume", str(b)]) == 0
    assert read_checkpoint(b / LAST)["train_state"]["batch_in_epoch"] == 0
    assert main(["train", str(b / "config.yaml"), "batch_size=6", "max_steps=0", "epochs=2", "--resume", str(b)]) == 0
    capsys.readouterr()
    # a folder with another run's model (its last.pt gone) is not a new run's either
    (b / LAST).unlink()
    assert main(["train", str(config), "--out", str(b)]) == 2
    assert capsys.readouterr().err.strip() == (f"movenet: error: {b}: already holds another run's {BEST}; a new "
                                               "run would write over it: choose another --out")


def test_a_run_resumed_into_another_folder_takes_its_best_model_along(tmp_path, capsys):
    config = _folder_config(tmp_path, epochs=2)
    a, c = tmp_path / "a", tmp_path / "c"
    assert main(["train", str(config), "max_steps=3", "--out", str(a)]) == 0
    capsys.readouterr()
    assert main(["train", str(config), "optim.lr=0.001", "--resume", str(a), "--out", str(c)]) == 0
    out = capsys.readouterr()
    best = read_checkpoint(c / BEST)  # the run's best so far (a's, copied), or a better one since
    assert best["best"]["value"] >= read_checkpoint(a / BEST)["best"]["value"]
    assert f"best val pck {best['best']['value']:.4f} (epoch {best['best']['epoch']})" in out.out
    assert out.out.strip().endswith(f"model: {c / BEST}")
    # one that fails before its first checkpoint there leaves nothing in the way of a retry, and a
    # failed run's logs in that folder do not mix with the new run's
    d = tmp_path / "d"
    (d / "tensorboard").mkdir(parents=True)
    (d / "tensorboard" / "events.out.tfevents.old").write_bytes(b"old")
    assert main(["train", str(config), "optim.lr=1e12", "--resume", str(a), "--out", str(d)]) == 2
    assert not (d / BEST).exists() and not (d / "tensorboard" / "events.out.tfevents.old").exists()
    assert main(["train", str(config), "--resume", str(a), "--out", str(d)]) == 0
    assert (d / BEST).exists() and (d / LAST).exists()


def test_max_steps_ends_a_run_with_a_validation_also_between_validated_epochs(tmp_path):
    config = _folder_config(tmp_path, epochs=3, val_every=2)
    assert main(["train", str(config), "max_steps=3", "--out", str(tmp_path / "run")]) == 0  # 3 batches an epoch
    history = read_checkpoint(tmp_path / "run" / LAST)["train_state"]["history"]
    assert [h["epoch"] for h in history] == [1] and "val_pck" in history[0]


def test_stale_files_are_removed_when_a_run_starts_or_goes_on(tmp_path, capsys):
    init = tmp_path / "init.pt"
    save_checkpoint(init, build_model(tiny_config(**{"model.overrides.input_size": 64}), verbose=False))
    config = _folder_config(tmp_path, init=str(init), final_init_weight=0.5)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    first_final = read_checkpoint(run / FINAL)
    assert first_final["epoch"] == 1
    capsys.readouterr()
    # trained further with final_init_weight 0: the old end's final.pt is not the model any more
    assert main(["train", str(config), "epochs=2", "final_init_weight=0", "--resume", str(run)]) == 0
    out = capsys.readouterr()
    assert f"removed what is stale in {run}: {FINAL}" in out.err and not (run / FINAL).exists()
    assert out.out.strip().endswith(f"model: {run / BEST}")
    # a run that stopped before its first checkpoint: the next run in its folder starts with clean logs
    failed = tmp_path / "failed"
    (failed / "tensorboard").mkdir(parents=True)
    (failed / "tensorboard" / "events.out.tfevents.1").write_bytes(b"old")
    (failed / "config.yaml").write_text("{}")
    assert main(["train", str(config), "log.tensorboard=true", "--out", str(failed)]) == 0
    assert not (failed / "tensorboard" / "events.out.tfevents.1").exists()
    assert f"removed what is stale in {failed}: tensorboard" in capsys.readouterr().err


def test_weights_that_turn_non_finite_are_never_written_nor_loaded(tmp_path, capsys):
    """A step can make the weights NaN while its loss is still finite: the checkpoint of that
    epoch is not written, and a model file holding such weights is refused when loaded."""
    from movenet.checkpoint import load_model

    trainer = Trainer(tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "epochs": 2, "threads": 1}),
                      tmp_path / "run", SyntheticPoses(4, 64), val_data(4, 64), CountingLoss(tiny_config()),
                      verbose=False)
    step = trainer._step

    def poisoned(batch):  # the second epoch's last step leaves a NaN in the weights
        out = step(batch)
        if trainer.state.step == 4:
            with torch.no_grad():
                weight = next(trainer.model.parameters())
                weight[(0,) * weight.ndim] = float("nan")
        return out
    trainer._step = poisoned
    with pytest.raises(MoveNetError) as e:
        trainer.fit()
    assert str(e.value) == (f"{tmp_path / 'run'}: the weights hold NaN or infinite values after step 4 (the training "
                            f"diverged: lower optim.lr); training stopped (last good checkpoint kept: "
                            f"{tmp_path / 'run' / LAST})")
    good = read_checkpoint(tmp_path / "run" / LAST)
    assert good["step"] == 2 and all(torch.isfinite(v).all() for v in good["state_dict"].values()
                                     if v.is_floating_point())
    first = next(iter(good["state_dict"].values()))
    first[(0,) * first.ndim] = float("inf")
    torch.save(good, tmp_path / "bad.pt")
    with pytest.raises(MoveNetError, match=r"bad.pt: 1 of its \d+ weight tensors hold NaN or infinite values "
                                           r"\(first: .+\); a training that diverged\?"):
        load_model(tmp_path / "bad.pt", verbose=False)
    assert main(["predict", "--model", str(tmp_path / "bad.pt")]) == 2
    assert "weight tensors hold NaN or infinite values" in capsys.readouterr().err
    # nor started from, nor resumed
    config = _folder_config(tmp_path, init=str(tmp_path / "bad.pt"))
    assert main(["train", str(config), "--out", str(tmp_path / "from_bad")]) == 2
    assert "bad.pt: 1 of its" in capsys.readouterr().err and not (tmp_path / "from_bad").exists()
    good["train_state"]["model"] = good["state_dict"]
    torch.save(good, tmp_path / "run" / LAST)
    with pytest.raises(MoveNetError, match=r"last.pt: 1 of its \d+ weight tensors hold NaN"):
        trainer.resume(tmp_path / "run" / LAST)


def test_ten_unreadable_images_in_a_row_are_one_line(tmp_path):
    data = tmp_path / "data"
    write_coco_folder(data, 12, 64)
    for image in (data / "images").iterdir():
        image.write_bytes(b"not an image")
    from movenet.datasets import load_keypoint_dataset
    from movenet.samples import PoseSampleDataset

    samples = PoseSampleDataset(load_keypoint_dataset(data), DataConfig(on_bad_image="skip", input_size=64),
                                verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MoveNetError, match=r"images/\S+: 10 unreadable images in a row; check the data"):
            samples[0]


def test_a_script_with_a_training_loader_exits_without_stopping_its_workers(tmp_path):
    """Persistent workers ignore the first SIGTERM (a process group's: the main process saves
    first); multiprocessing's exit handler sends just that one, then waits. make_loader ends them
    before it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from train_helpers import SyntheticPoses\n"
        "from movenet.train import EpochSampler, SeededSamples, make_loader\n"
        "data = SyntheticPoses(8, 64)\n"
        "sampler = EpochSampler(len(data), seed=0, with_seeds=True)\n"
        "loader = make_loader(SeededSamples(data), 4, sampler, workers=2, train=True)\n"
        "print(sum(len(batch['image']) for batch in loader))\n")
    proc = subprocess.run([sys.executable, "-c", script, os.path.dirname(__file__)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "8", proc.stderr[-2000:]


def test_distillation_and_balancing_settings_that_would_mislead_are_named(tmp_path):
    """Unlabelled images that are validation images, a weighted source left without targets, and
    a teacher that cannot be opened: each said, naming the setting."""
    from movenet.datasets import load_keypoint_dataset
    from movenet.distill import UnlabeledImages
    from movenet.errors import DataWarning
    from movenet.samples import PoseSampleDataset, build_datasets
    from movenet.train import build_data, build_teacher, warn_unlabelled_in_validation

    write_coco_folder(tmp_path / "a", 8, 64)
    write_coco_folder(tmp_path / "b", 4, 64)
    cfg = tiny_config(**{"model.overrides.input_size": 64})
    cfg.data.sources, cfg.data.val_fraction = [{"path": str(tmp_path / "a"), "weight": 1.0}], 0.25
    train, val = build_data(cfg, verbose=False)
    with pytest.warns(DataWarning, match=r"2 of the 2 validation images are also unlabelled training images "
                                         r"\(distill.unlabeled\)"):
        warn_unlabelled_in_validation(UnlabeledImages([str(tmp_path / "a" / "images")], train).paths, val)

    few = DataConfig(sources=[{"path": str(tmp_path / "a"), "weight": 3}, {"path": str(tmp_path / "b"), "weight": 1}],
                     val_fraction=0, min_keypoints=1, input_size=64)
    ann = json.loads((tmp_path / "b" / "person_keypoints.json").read_text())
    for a in ann["annotations"]:
        a["keypoints"] = [0.0] * 51  # b: nobody to teach
    (tmp_path / "b" / "person_keypoints.json").write_text(json.dumps(ann))
    with pytest.warns(DataWarning, match=r"b: no target person for training from this source \(of data.sources; "
                                         r"its weight 1 is not used\)"):
        build_datasets(few, verbose=False)

    cfg.distill.teacher = str(tmp_path / "a")  # a folder
    with pytest.raises(MoveNetError, match=r"^distill.teacher: .*a: "):
        build_teacher(cfg, torch.device("cpu"), None)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"not an image")
    template = PoseSampleDataset(load_keypoint_dataset(tmp_path / "a"), DataConfig(input_size=64), verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MoveNetError, match=r"x.jpg: all 1 unlabelled images are unreadable \(distill.unlabeled\)"):
            UnlabeledImages([str(bad)], template, on_bad_image="skip")[0]


def test_a_run_folder_is_written_by_one_run_at_a_time(tmp_path, capsys, monkeypatch):
    import subprocess
    import sys

    def no_data(*args, **kwargs):
        raise AssertionError("the data were read")

    monkeypatch.setattr("movenet.train.build_data", no_data)
    somewhere = f"data.sources=[{{path: {tmp_path}}}]"
    out = tmp_path / "run"
    holder = subprocess.Popen(  # as a run started there a moment ago, in another process
        [sys.executable, "-c", "import sys, time; from movenet.fileio import lock_folder; "
         "lock_folder(sys.argv[1], 'x'); print('held', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", SMOKE, somewhere, "--out", str(out)]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"movenet: error: {out}: another movenet train is writing there now; wait for it or "
                       "choose another folder"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # the lock ends with its process (not with processes forked from it, such as loader workers)
    assert main(["train", SMOKE, somewhere, "init=nowhere.pt", "--out", str(out)]) != 0
    assert "init 'nowhere.pt'" in capsys.readouterr().err
    # A run that stops before writing anything leaves no folder it made behind.
    assert main(["train", SMOKE, somewhere, "init=nowhere.pt", "--out", str(tmp_path / "new" / "run")]) != 0
    assert not (tmp_path / "new").exists() and out.is_dir()


def test_a_forked_process_does_not_keep_the_run_folders_lock(tmp_path):
    import subprocess
    import sys

    from movenet.fileio import lock_folder

    script = ("import os, sys, time; from movenet.fileio import lock_folder\n"
              "lock_folder(sys.argv[1], 'x')\n"
              "if os.fork() == 0:\n    os.close(1)\n    os.close(2)\n    time.sleep(30)\n    os._exit(0)\n"  # a loader worker outliving its parent
              "print('forked', flush=True); os._exit(0)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "forked"
    fd = lock_folder(tmp_path, "x")  # the parent is gone, its child still runs: the folder is free
    assert fd is not None
    os.close(fd)


def test_best_pt_follows_ap_where_no_validation_person_has_a_torso(tmp_path, capsys):
    """PCK@0.2 of the torso is undefined when no validation person has both torso keypoints:
    best.pt follows AP then (it was never written), and says so."""
    config = _folder_config(tmp_path)
    data = tmp_path / "data" / "person_keypoints.json"
    coco = json.loads(data.read_text())
    for ann in coco["annotations"]:  # left shoulders unlabelled everywhere
        ann["keypoints"][5 * 3:5 * 3 + 3] = [0, 0, 0]
        ann["num_keypoints"] = 16
    data.write_text(json.dumps(coco))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    captured = capsys.readouterr()
    assert ("movenet: warning: none of the 2 validation people has both torso keypoints (left_shoulder, "
            "right_hip): PCK@0.2 is undefined there, so best.pt follows AP") in captured.err
    assert "best val ap " in captured.out
    best = read_checkpoint(run / BEST)
    assert best["best"]["metric"] == "ap" and best["best"]["value"] == best["metrics"]["val_ap"]


def test_eval_of_a_config_warns_about_a_model_trained_on_some_of_its_held_out_images(tmp_path):
    """A run that held out less (or split with another seed) trained on some of the config's
    held-out images; one that held out more, or trained on fewer images, did not."""
    from movenet.errors import DataWarning

    config = _folder_config(tmp_path)  # (val_fraction 0.25 of 8 images)
    runs = {name: tmp_path / name for name in ("less", "seed", "more", "fewer")}
    for name, extra in (("less", ["data.val_fraction=0.125"]), ("seed", ["data.split_seed=3"]),
                        ("more", ["data.val_fraction=0.5"]), ("fewer", ["data.train_images=2"])):
        assert main(["train", str(config), *extra, "max_steps=1", "--out", str(runs[name])]) == 0
    with pytest.warns(DataWarning) as caught:
        assert main(["eval", str(config), *[a for r in runs.values() for a in ("--model", str(r / LAST))],
                     "--threads", "1", "--out", str(tmp_path / "eval")]) == 0
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert said == [
        f"{runs['less'] / LAST}: trained on another split than {config}'s (data.val_fraction 0.125, this config's "
        f"0.25): some of these held-out images are among its training images; {runs['less'] / 'config.yaml'} "
        "holds its own",
        f"{runs['seed'] / LAST}: trained on another split than {config}'s (data.split_seed 3, this config's 0): some "
        f"of these held-out images may be among its training images; {runs['seed'] / 'config.yaml'} holds its own"]

def test_a_run_removes_the_half_written_checkpoints_a_killed_process_left(tmp_path, capsys):
    config = _folder_config(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    half = [run / ".last.pt.k3j9x_1.tmp.pt", run / ".config.step3.yaml.a_b.tmp.yaml"]
    for path in half:
        path.write_bytes(b"\0" * 1000)
    mine = run / ".notes.last.pt.x.tmp.pt"  # (not a name a run writes)
    mine.write_bytes(b"")
    capsys.readouterr()
    assert main(["train", str(config), "--resume", str(run)]) == 0  # (nothing to train: it removes them all the same)
    assert (f"removed 2 files that a stopped process left half written in {run} (.config.step3.yaml.a_b.tmp.yaml, "
            ".last.pt.k3j9x_1.tmp.pt)") in capsys.readouterr().err
    assert not any(path.exists() for path in half) and mine.exists()
