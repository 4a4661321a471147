"""Training engine: it learns (one batch overfits), a resumed run equals an uninterrupted one,
a NaN loss stops cleanly keeping the last good checkpoint, and the CLI trains, resumes and
produces a checkpoint that `movenet predict` takes alone (smoke recipe on LSP, COCO recipe on
coco-mini)."""
from __future__ import annotations

import copy
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from movenet.checkpoint import load_model, read_checkpoint, save_checkpoint
from movenet.errors import DataWarning, MoveNetError, user_message
from movenet.schema import COCO17
from movenet.curves import plot_training_curves
from movenet.train import (BEST, CURVES, FINAL, LAST, EpochSampler, ModelEMA, NonFiniteLoss, SeededSamples, Trainer,
                           build_loss, build_model, build_optimizer, evaluate, format_epoch, init_distributed,
                           stopped_from_outside)
from train_helpers import (CountingLoss, SyntheticPoses, resume_config, resume_trainer, tiny_config, untimed,
                           val_data, write_coco_folder)

ROOT = Path(__file__).resolve().parents[1]


def test_overfits_one_batch(tmp_path):
    cfg = tiny_config(**{"optim.lr": 1e-2, "model.overrides.input_size": 64, "batch_size": 2, "threads": 1})
    loss = CountingLoss(cfg)
    trainer = Trainer(cfg, tmp_path, SyntheticPoses(2, 64, repeat=60), None, loss, verbose=False)
    trainer.fit()
    assert len(loss.values) == 60
    assert loss.values[-1] < 0.1 * loss.values[0], loss.values[::10]


def test_epoch_line_before_training_has_no_loss():
    assert format_epoch({"epoch": 0, "val_pck": 0.5, "val_ap": 0.25}, 8) == \
        "epoch 0/8, before training, val PCK@0.2 0.5000 AP 0.2500"
    line = format_epoch({"epoch": 1, "train_loss": 2.0, "train_heatmap": 1.5, "val_pck": 0.5,
                         "train_images": 32, "train_seconds": 2.0}, 8)
    assert line == "epoch 1/8, loss 2.0000, (heatmap 1.5000), val PCK@0.2 0.5000 AP nan, 16.0 img/s"
    # resumed inside an epoch: its seconds timed only the images after the resume (none: no rate)
    resumed = {"epoch": 1, "train_loss": 2.0, "train_images": 32, "train_seconds": 2.0}
    assert format_epoch(resumed | {"timed_images": 8}, 8) == "epoch 1/8, loss 2.0000, 4.0 img/s"
    assert format_epoch(resumed | {"timed_images": 0, "train_seconds": 0.001}, 8) == "epoch 1/8, loss 2.0000"
    assert "(heatmap 1.0000, distill 0.5000)" in format_epoch(  # every loss term that counts in the total
        {"epoch": 1, "train_loss": 1.5, "train_heatmap": 1.0, "train_distill": 0.5}, 8)
    # with the time this process has spent on its epochs (here 2 epochs of a run resumed at epoch 3)
    timed = format_epoch({"epoch": 5, "train_loss": 2.0}, 8, elapsed=1500.0, epochs_timed=2)
    assert timed == "epoch 5/8, loss 2.0000, 25 min so far, ~38 min to go"
    assert format_epoch({"epoch": 2, "train_loss": 2.0}, 302, elapsed=45.0, epochs_timed=2).endswith(
        "45 s so far, ~1 h 52 min to go")
    assert "to go" not in format_epoch({"epoch": 8, "train_loss": 2.0}, 8, elapsed=1500.0, epochs_timed=2)


def test_curves_png_is_drawn_after_validations_and_can_be_turned_off(tmp_path):
    cfg = tiny_config(**{"model.overrides.input_size": 64, "epochs": 3, "val_every": 2, "threads": 1,
                         "val_before": True})
    Trainer(cfg, tmp_path / "on", SyntheticPoses(8, 64), val_data(4, 64), build_loss(cfg), verbose=False).fit()
    png = cv2.imread(str(tmp_path / "on" / CURVES))
    assert png is not None and png.shape == (420, 1100, 3)
    off = tiny_config(**{"model.overrides.input_size": 64, "threads": 1, "log.curves": False})
    Trainer(off, tmp_path / "off", SyntheticPoses(4, 64), val_data(4, 64), build_loss(off), verbose=False).fit()
    assert not (tmp_path / "off" / CURVES).exists() and (tmp_path / "off" / LAST).exists()


def test_curves_show_what_the_history_holds(tmp_path):
    def drawn(history, name):  # coloured pixels of the losses and validation panels, dark ones of the first
        image = cv2.imread(str(plot_training_curves(history, tmp_path / name))).astype(int)
        colour = image.max(axis=2) - image.min(axis=2) > 80
        return colour[:, 80:530].sum(), colour[:, 620:].sum(), (image[:, 80:530].max(axis=2) < 128).sum()

    epochs = [{"epoch": e, "train_loss": 10.0 / e, "train_heatmap": 6.0 / e, "train_center": 3.0 / e,
               "train_regression": 1.0 / e, "train_offset": 0.5, "train_bone": 0.0} for e in range(1, 11)]
    scored = [{"epoch": 0, "val_pck": 0.1, "val_ap": 0.05, "val_loss": 11.0}] + [
        {**h, "val_pck": 0.1 + 0.06 * h["epoch"], "val_ap": 0.05 * h["epoch"], "val_loss": 9.0 / h["epoch"]}
        for h in epochs]
    bare = drawn(epochs, "bare.png")
    full = drawn(scored, "scored.png")
    empty = drawn([], "empty.png")
    assert empty[:2] == (0, 0) and bare[0] > 1000 and bare[1] == 0  # four loss terms drawn (bone is 0)
    assert full[0] > 1000 and full[1] > 1000  # PCK and AP
    assert full[2] > bare[2] + 200  # the validation loss, in grey
    with pytest.raises(MoveNetError, match="is a folder"):
        plot_training_curves(epochs, tmp_path)


def test_validation_calibrates_the_decoding_offset_and_stores_it_with_the_weights(tmp_path):
    cfg = tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "threads": 1, "optim.lr": 1e-2,
                         "calibrate_distance_offset": [1.8, 4.0, 1000.0]})
    val = val_data(6, 64)
    trainer = Trainer(cfg, tmp_path, SyntheticPoses(4, 64, repeat=8), val, build_loss(cfg), verbose=False)
    trainer.fit()
    model = copy.deepcopy(trainer.eval_model())
    alone = {}
    for d in (1.8, 4.0, 1000.0):  # each offset on its own, as the model's decoding
        model.distance_offset.fill_(d)
        alone[d] = evaluate(model, val, 8, torch.device("cpu"))[0]["pck"]
    metrics = read_checkpoint(tmp_path / LAST)["metrics"]
    chosen = max(alone, key=alone.get)
    assert metrics["val_distance_offset"] == chosen and metrics["val_pck"] == pytest.approx(alone[chosen])
    assert [metrics[f"val_pck_at_offset_{d:g}"] for d in alone] == pytest.approx(list(alone.values()))
    loaded, _ = load_model(tmp_path / LAST)
    assert float(loaded.distance_offset) == pytest.approx(chosen)
    assert float(trainer.model.distance_offset) == pytest.approx(chosen)  # the raw weights (resume) too
    assert "decoding offset" in format_epoch({"epoch": 1, "val_pck": 0.5, "val_distance_offset": 4.0}, 1)


def _calibration_case(tmp_path) -> Path:
    """A config of 8 small COCO images (half held out) and a tiny trained run in tmp_path/run."""
    data = tmp_path / "data"
    write_coco_folder(data, 8, 64)
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{sources: [{{path: {data}}}], val_fraction: 0.5, num_workers: 0}}\nval_batch_size: 4\n")
    cfg = tiny_config(**{"model.overrides.input_size": 64, "threads": 1})
    Trainer(cfg, tmp_path / "run", SyntheticPoses(4, 64), None, build_loss(cfg), verbose=False).fit()
    return config


def test_calibrate_cli_writes_the_best_offset_and_refuses_bad_input(tmp_path, capsys):
    from movenet.cli import main

    config = _calibration_case(tmp_path)
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", str(config), "--model", str(tmp_path / "run" / LAST), "--offsets", "1.8", "1000",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    chosen = float(re.search(r"distance offset 1.8 -> ([\d.]+)", text).group(1))
    assert chosen in (1.8, 1000.0) and text.count("<-") == 1
    ckpt = read_checkpoint(out)
    assert float(ckpt["state_dict"]["distance_offset"]) == pytest.approx(chosen)
    assert ckpt["calibrated"]["offsets"] == [1.8, 1000.0] and "train_state" not in ckpt

    # data whose ankles are named feet (a schema of its own): calibrated on the 15 keypoints it has, as eval
    data = tmp_path / "data"
    coco = json.loads((data / "person_keypoints.json").read_text())
    feet = ["left_foot" if n == "left_ankle" else "right_foot" if n == "right_ankle" else n for n in COCO17.keypoints]
    coco["categories"][0]["keypoints"] = feet
    (data / "feet.json").write_text(json.dumps(coco))
    feet_config = tmp_path / "feet.yaml"
    feet_config.write_text(f"schema: {{name: feet, keypoints: {json.dumps(feet)}}}\n"
                           f"data: {{sources: [{{path: {data / 'feet.json'}, image_root: {data / 'images'}}}], "
                           "val_fraction: 0.5, num_workers: 0}\nval_batch_size: 4\n")
    with pytest.warns(DataWarning, match=r"last.pt lacks left_foot, right_foot of .*feet.yaml's 17 keypoints \(feet\); "
                                         r"it is calibrated on the other 15"), \
            pytest.warns(DataWarning, match=r"feet.json: its people have 17 keypoints, the feet\[15\] schema 15"):
        assert main(["calibrate", str(feet_config), "--model", str(tmp_path / "run" / LAST), "--offsets", "1.8",
                     "1000", "--out", str(tmp_path / "feet.pt")]) == 0
    assert read_checkpoint(tmp_path / "feet.pt")["schema"]["keypoints"] == list(COCO17.keypoints)
    capsys.readouterr()

    config.write_text(f"data: {{sources: [{{path: {data}}}], val_fraction: 0}}\n")
    assert main(["calibrate", str(config), "--model", str(out), "--out", str(tmp_path / "no.pt")]) == 2
    for bad in ("0", "inf", "nan"):
        with pytest.raises(SystemExit) as e:
            main(["calibrate", str(config), "--model", str(out), "--offsets", "1.8", bad, "--out", str(tmp_path / "no.pt")])
        assert e.value.code == 2
    assert main(["calibrate", str(config), "--model", "m.onnx", "--out", str(tmp_path / "no.pt")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("movenet")]
    assert err == [f"movenet: error: {config}: no validation images (set data.val_fraction or data.val_sources)",
                   *(f"movenet calibrate: error: argument --offsets: must be a finite number > 0, got {bad} "
                     "(usage: movenet calibrate --help)"
                     for bad in ("0", "inf", "nan")),
                   "movenet: error: m.onnx: calibrate takes lightning, thunder or a .pt checkpoint (calibrate the "
                   "checkpoint, then export it)"]
    assert not (tmp_path / "no.pt").exists()
    with pytest.raises(MoveNetError, match="calibrate_distance_offset must hold offsets > 0"):
        tiny_config(calibrate_distance_offset=[1.8, -1.0])


def test_calibrate_cli_picks_the_offset_by_ap_and_records_the_one_before(tmp_path, capsys):
    from movenet.cli import main

    config = _calibration_case(tmp_path)
    before = float(read_checkpoint(tmp_path / "run" / LAST)["state_dict"]["distance_offset"])
    assert main(["calibrate", str(config), "--model", str(tmp_path / "run" / LAST), "--offsets", "5", "1000",
                 "--metric", "ap", "--out", str(tmp_path / "ap.pt")]) == 0
    calibrated = read_checkpoint(tmp_path / "ap.pt")["calibrated"]
    aps = {d: calibrated["metrics"][f"ap_at_offset_{d:g}"] for d in (5.0, 1000.0)}
    assert calibrated["metric"] == "ap" and calibrated["distance_offset"] == max(aps, key=aps.get)
    assert calibrated["before"] == pytest.approx(before) != calibrated["distance_offset"]
    (marked,) = [line.split() for line in capsys.readouterr().out.splitlines() if "<-" in line]
    assert marked[:2] == ["offset", f"{calibrated['distance_offset']:g}"]

def test_backbone_lr_scale_sets_the_backbone_step(tmp_path):
    cfg = tiny_config(**{"optim.backbone_lr_scale": 0.0, "optim.weight_decay": 1e-2, "batch_size": 2,
                         "model.overrides.input_size": 64, "threads": 1})
    model = build_model(cfg, verbose=False)
    groups = build_optimizer(cfg, model).param_groups
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # without a scale, the two groups (decay / no decay) that earlier checkpoints hold
    assert len(build_optimizer(tiny_config(), model).param_groups) == 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(cfg, tmp_path, SyntheticPoses(2, 64, repeat=1), None, build_loss(cfg),
                      verbose=False, model=model)
    trainer.fit()
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and all(not n.startswith("backbone.") for n in moved)
    assert any(n.startswith("neck.") for n in moved) and any(n.startswith("regression.") for n in moved)


def test_frozen_backbone_layers_keep_weights_and_batch_norm_statistics(tmp_path):
    cfg = tiny_config(**{"optim.freeze_backbone_to_stride": 8, "batch_size": 2,
                         "model.overrides.input_size": 64, "threads": 1})
    model = build_model(cfg, verbose=False)
    names = {id(m): n for n, m in model.named_modules()}
    frozen = tuple(names[id(m)] + "." for m in model.backbone.layers_to_stride(8))
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    trainer = Trainer(cfg, tmp_path, SyntheticPoses(2, 64, repeat=2), None, build_loss(cfg),
                      verbose=False, model=model)
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    trainer.fit()
    after = trainer.model.state_dict()
    moved = {n for n, t in after.items() if not torch.equal(t, before[n])}
    assert frozen and not any(n.startswith(frozen) for n in moved), sorted(moved)[:5]
    # later backbone layers learn, and their batch norms keep running statistics
    later = [n for n in moved if n.startswith("backbone.") and not n.startswith(frozen)]
    assert any(n.endswith(".weight") for n in later) and any(n.endswith("running_mean") for n in later)
    assert all(id(p) not in optimised for m in model.backbone.layers_to_stride(8) for p in m.parameters())


def test_ema_is_the_exponential_average_of_the_weights_and_copies_counters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, warmup_steps=2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(4.0)
        model[1].num_batches_tracked += 5
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 2))  # the decay warms up
    for key in ("0.weight", "0.bias", "1.running_mean", "1.running_var"):
        expected = d * start[key] + (1 - d) * model.state_dict()[key]
        torch.testing.assert_close(ema.module.state_dict()[key], expected, msg=key)
    assert ema.module[1].num_batches_tracked.item() == 5
    assert not torch.equal(ema.module[0].weight, model[0].weight)


def test_sample_seeds_belong_to_places_in_the_epoch_not_to_processes():
    one = EpochSampler(10, seed=3, with_seeds=True)
    ranks = [EpochSampler(10, seed=3, rank=r, world_size=2, with_seeds=True) for r in (0, 1)]
    for s in (one, *ranks):
        s.set_epoch(4)
    stream = list(one)
    assert sorted(i for i, _ in stream) == list(range(10)) and len({k for _, k in stream}) == 10
    assert list(ranks[0]) == stream[0::2] and list(ranks[1]) == stream[1::2]
    one.set_epoch(4, skip=7)
    assert list(one) == stream[7:]  # a resume inside the epoch gets the same seeds
    one.set_epoch(5)
    assert [k for _, k in one] != [k for _, k in stream]

    data = SeededSamples(SyntheticPoses(4, 32, noise=30.0))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b, c = data[(2, 11)], data[(2, 11)], data[(2, 12)]
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is left alone


def test_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = resume_config()
    full_loss = CountingLoss(cfg)
    full = resume_trainer(cfg, tmp_path / "full", full_loss)
    full.fit()
    assert len(full_loss.values) == 12  # 3 epochs of 4 steps

    broken_loss = CountingLoss(cfg, fail_at=7)  # interrupted in the middle of epoch 2
    with pytest.raises(KeyboardInterrupt):
        resume_trainer(cfg, tmp_path / "cut", broken_loss).fit()
    assert read_checkpoint(tmp_path / "cut" / LAST)["epoch"] == 1

    resumed_loss = CountingLoss(cfg)
    resumed = resume_trainer(cfg, tmp_path / "cut", resumed_loss)
    resumed.resume(tmp_path / "cut" / LAST)
    resumed.fit()
    assert broken_loss.values[:4] + resumed_loss.values == full_loss.values
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(full.ema.module.state_dict().values(), resumed.ema.module.state_dict().values()):
        assert torch.equal(a, b)
    assert untimed(resumed.state.history) == untimed(full.state.history)
    assert resumed.optimizer.state_dict()["state"][0]["step"] == full.optimizer.state_dict()["state"][0]["step"]


def test_a_run_stopped_by_max_steps_goes_on_where_it_stopped(tmp_path):
    """max_steps inside an epoch keeps the place, as an interruption does: raising it and
    resuming trains what an uninterrupted run with the higher limit trains, bit for bit."""
    full_loss = CountingLoss(resume_config())
    full = resume_trainer(resume_config(max_steps=7), tmp_path / "full", full_loss)
    full.fit()
    first_loss = CountingLoss(resume_config())
    first = resume_trainer(resume_config(max_steps=3), tmp_path / "cut", first_loss)
    first.fit()
    ckpt = read_checkpoint(tmp_path / "cut" / LAST)
    assert (ckpt["epoch"], ckpt["step"], ckpt["train_state"]["batch_in_epoch"]) == (0, 3, 3)
    assert ckpt["metrics"]["epoch"] == 0.75 and "val_pck" in ckpt["metrics"]  # the run's end is validated
    assert format_epoch(ckpt["metrics"], 3).startswith("epoch 1/3 to batch 3 (max_steps), loss ")

    resumed_loss = CountingLoss(resume_config())
    resumed = resume_trainer(resume_config(max_steps=7), tmp_path / "cut", resumed_loss)
    resumed.resume(tmp_path / "cut" / LAST)
    resumed.fit()
    assert first_loss.values + resumed_loss.values == full_loss.values and len(full_loss.values) == 7
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert (resumed.state.epoch, resumed.state.batch_in_epoch) == (1, 3) == (full.state.epoch, full.state.batch_in_epoch)
    whole = [h for h in resumed.state.history if "batch_in_epoch" not in h]
    assert untimed(whole) == untimed([h for h in full.state.history if "batch_in_epoch" not in h])
    assert [h["epoch"] for h in resumed.state.history] == [0.75, 1, 1.75]


def test_resume_with_another_model_names_what_changed(tmp_path):
    cfg = tiny_config(**{"model.overrides.input_size": 64, "threads": 1})
    Trainer(cfg, tmp_path, SyntheticPoses(4, 64), None, build_loss(cfg), verbose=False).fit()
    other = tiny_config(**{"model.overrides.input_size": 64, "model.overrides.head_channels": 48, "threads": 1})
    trainer = Trainer(other, tmp_path / "other", SyntheticPoses(4, 64), None, build_loss(other), verbose=False)
    with pytest.raises(MoveNetError, match=rf"^{re.escape(str(tmp_path / LAST))}: a run of another model than "
                                           r"this config's \(head_channels 32 -> 48\); resume with the settings"):
        trainer.resume(tmp_path / LAST)
    same = Trainer(cfg, tmp_path / "same", SyntheticPoses(4, 64), None, build_loss(cfg), verbose=False)
    same.resume(tmp_path / LAST)
    assert same.state.step == 1


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = resume_config()
    loss = CountingLoss(cfg, fail_at=6, failure="nan")
    trainer = resume_trainer(cfg, tmp_path, loss)
    with pytest.raises(NonFiniteLoss) as e:
        trainer.fit()
    msg = str(e.value)
    assert "\n" not in msg and "loss is nan" in msg and "epoch 2" in msg and "last good checkpoint" in msg
    ckpt = read_checkpoint(tmp_path / LAST)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    model, _ = load_model(tmp_path / LAST)  # still a usable model
    assert model.config.input_size == 64


def _movenet(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "movenet.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_train_resume_predict(lsp_dir, tmp_path):
    out = tmp_path / "run"
    proc = _movenet("train", "configs/smoke.yaml", "threads=1", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"config.yaml", "last.pt", "best.pt", "curves.png"} <= {p.name for p in out.iterdir()}
    assert (out / "tensorboard").is_dir()
    ckpt = read_checkpoint(out / "best.pt")
    assert ckpt["epoch"] == 0 and ckpt["step"] == 2 and 0 <= ckpt["metrics"]["val_pck"] <= 1
    assert ckpt["config"]["model"]["name"] == "mobilenetv2_050"

    again = _movenet("train", "configs/smoke.yaml", "threads=1", "--out", out)
    assert again.returncode == 2 and "--resume" in again.stderr
    nothing = _movenet("train", "configs/smoke.yaml", "--resume", tmp_path / "nothing")
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == f"movenet: error: {tmp_path / 'nothing' / LAST}: no checkpoint to resume from"

    proc = _movenet("train", "configs/smoke.yaml", "threads=1", "epochs=2", "max_steps=4", "--resume", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = read_checkpoint(out / LAST)  # max_steps went on inside the first epoch
    assert ckpt["epoch"] == 0 and ckpt["step"] == 4 and ckpt["train_state"]["batch_in_epoch"] == 4
    assert len(ckpt["train_state"]["history"]) == 2
    assert proc.stdout.startswith(f"{out}: 0 epochs and 4 batches, 4 steps; best val pck ")
    # a finished run resumed into another folder has nothing to train: said, not an empty run folder
    proc = _movenet("train", "configs/smoke.yaml", "threads=1", "epochs=2", "max_steps=4", "--resume", out / LAST,
                    "--out", tmp_path / "elsewhere")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"movenet: error: {out / LAST}: nothing to train into {tmp_path / 'elsewhere'}: its run stopped at max_steps "
        "(4 steps): raise max_steps= (0: no limit) to go on")
    assert not (tmp_path / "elsewhere").exists()

    # started from that run, finished with its weights mixed back in: final.pt
    proc = _movenet("train", "configs/smoke.yaml", "threads=1", f"init={out / 'best.pt'}",
                    "final_init_weight=0.5", "--out", tmp_path / "mixed")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {tmp_path / 'mixed' / FINAL} (0.5 x trained + 0.5 x {out / 'best.pt'}): val PCK@0.2" in proc.stderr

    image = lsp_dir / "images" / "im0001.jpg"
    proc = _movenet("predict", image, "--model", tmp_path / "mixed" / FINAL, "--json", tmp_path / "p.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    people = json.loads((tmp_path / "p.json").read_text())[0]["people"]
    assert len(people[0]["keypoints"]) == 17


def test_coco_recipe_two_steps(coco_mini, tmp_path):
    mini = str(coco_mini)
    proc = _movenet("train", "configs/coco_full.yaml", f"data.sources=[{{path: {mini}}}]",
                    f"data.val_sources=[{{path: {mini}}}]", "init=scratch", "max_steps=2", "batch_size=2",
                    "val_batch_size=16", "data.num_workers=1", "threads=1", "--out", tmp_path / "coco")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = read_checkpoint(tmp_path / "coco" / LAST)
    assert ckpt["step"] == 2 and "val_ap" in ckpt["metrics"]


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_training_image_is_one_line_naming_it_also_from_a_loader_worker(tmp_path, workers):
    data = tmp_path / "data"
    write_coco_folder(data, 6, 64)
    for image in (data / "images").iterdir():
        image.write_bytes(b"not an image")  # the index reads only the JSON: the first batch fails
    config = tmp_path / "c.yaml"
    config.write_text(
        f"model: {{name: mobilenetv2_050, overrides: {{input_size: 64, head_channels: 32}}}}\n"
        f"data: {{sources: [{{path: {data}}}], val_fraction: 0.34, num_workers: {workers}}}\n"
        "log: {tensorboard: false, images: 0}\nbatch_size: 2\nthreads: 1\ndevice: cpu\n")
    proc = _movenet("train", config, "--out", tmp_path / "run")
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.startswith("movenet: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(lines) == 1 and re.fullmatch(rf"movenet: error: {data}/images/\d\.png: not a readable image .*", lines[0])
    assert not (tmp_path / "run" / LAST).exists()


def test_run_folder_under_a_file_is_refused_before_the_data_are_read(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("kept")
    proc = _movenet("train", "configs/smoke.yaml", "data.sources=[{path: /nonexistent}]", "--out", blocker / "run")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"movenet: error: {blocker / 'run'}: cannot create the folder ({blocker} is a file)"


def test_user_message_unwraps_an_error_reraised_by_a_loader_worker():
    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise MoveNetError(f"im{i}.jpg: not a readable image")

    loader = torch.utils.data.DataLoader(Failing(), num_workers=1)
    with pytest.raises(MoveNetError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)
    assert user_message(caught.value) == "im0.jpg: not a readable image"
    assert user_message(MoveNetError("a: b")) == "a: b"


def test_a_killed_loader_worker_is_one_line():
    class Killing(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            os.kill(os.getpid(), signal.SIGKILL)  # as the system does when memory runs out

    with pytest.raises(RuntimeError) as caught:
        next(iter(torch.utils.data.DataLoader(Killing(), num_workers=1)))
    error = stopped_from_outside(caught.value, init_distributed("cpu"))
    assert re.fullmatch(r"DataLoader worker \(pid.*\d+\) exited unexpectedly: short of memory\? fewer "
                        r"data\.num_workers or a smaller batch_size need less", str(error))
    assert stopped_from_outside(RuntimeError("shape mismatch"), init_distributed("cpu")) is None


class SignallingLoss(CountingLoss):
    """Sends this process SIGINT during training call ``at`` (Ctrl-C in the middle of a step)."""

    def __init__(self, cfg, at: int):
        super().__init__(cfg)
        self.at = at

    def __call__(self, outputs, batch, *teacher):
        if torch.is_grad_enabled() and len(self.values) + 1 == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__call__(outputs, batch, *teacher)


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_inside_an_epoch_resumes_at_the_next_batch(tmp_path, capsys, workers):
    full_cfg = resume_config()
    full_loss = CountingLoss(full_cfg)
    full = resume_trainer(full_cfg, tmp_path / "full", full_loss)
    full.fit()

    # The interrupted and resumed runs load with (persistent) workers: each sample's random draws
    # belong to its place in the epoch, not to a worker, so they repeat the run without workers.
    cfg = resume_config(**{"data.num_workers": workers})
    cut_loss = SignallingLoss(cfg, at=7)  # Ctrl-C during step 7 = batch 3 of epoch 2
    with pytest.raises(KeyboardInterrupt):
        resume_trainer(cfg, tmp_path / "cut", cut_loss).fit()
    assert "interrupted at epoch 2, batch 3/4" in capsys.readouterr().err
    ckpt = read_checkpoint(tmp_path / "cut" / LAST)
    assert (ckpt["epoch"], ckpt["step"], ckpt["train_state"]["batch_in_epoch"]) == (1, 7, 3)

    resumed_loss = CountingLoss(cfg)
    resumed = resume_trainer(cfg, tmp_path / "cut", resumed_loss)
    resumed.resume(tmp_path / "cut" / LAST)
    resumed.fit()
    assert cut_loss.values + resumed_loss.values == full_loss.values  # the step finished, none repeated
    # the random state a later resume would start from is the uninterrupted run's too
    rng = [read_checkpoint(tmp_path / run / LAST)["train_state"]["rng"][0]["torch"] for run in ("full", "cut")]
    assert torch.equal(*rng)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert untimed(resumed.state.history) == untimed(full.state.history)  # epoch 2's mean losses too


def test_sigterm_to_the_process_group_saves_the_step_as_ctrl_c_does(tmp_path, capsys):
    import multiprocessing

    class Preempted(CountingLoss):  # `timeout`, `kill -- -PGID`, a scheduler: every process gets it
        def __call__(self, outputs, batch, *teacher):
            if torch.is_grad_enabled() and len(self.values) + 1 == 7:
                for worker in multiprocessing.active_children():
                    os.kill(worker.pid, signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__call__(outputs, batch, *teacher)

    from movenet.errors import Interrupted

    cfg = resume_config(**{"data.num_workers": 2})
    with pytest.raises(Interrupted) as stopped:
        resume_trainer(cfg, tmp_path, Preempted(cfg)).fit()
    assert stopped.value.terminated  # (`movenet train` exits 143, as other commands on SIGTERM)
    assert "interrupted at epoch 2, batch 3/4" in capsys.readouterr().err
    assert read_checkpoint(tmp_path / LAST)["train_state"]["batch_in_epoch"] == 3


def test_checkpoint_every_steps_writes_within_epochs(tmp_path):
    cfg = tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "epochs": 1, "threads": 1,
                         "checkpoint_every_steps": 3})
    written = []

    class Watching(CountingLoss):
        def __call__(self, outputs, batch, *teacher):
            if torch.is_grad_enabled() and (tmp_path / LAST).exists():
                written.append(read_checkpoint(tmp_path / LAST)["train_state"]["batch_in_epoch"])
            return super().__call__(outputs, batch, *teacher)

    Trainer(cfg, tmp_path, SyntheticPoses(4, 64, repeat=2), None, Watching(cfg), verbose=False).fit()
    assert written == [3]  # after step 3 of 4; the end of the epoch writes the final one
    assert read_checkpoint(tmp_path / LAST)["train_state"]["batch_in_epoch"] == 0


def test_final_mixes_last_with_the_initial_weights_also_after_resume(tmp_path):
    init = tmp_path / "init.pt"
    torch.manual_seed(3)
    save_checkpoint(init, build_model(resume_config(), verbose=False))
    cfg = resume_config()
    cfg.init, cfg.final_init_weight = str(init), 0.25

    full = resume_trainer(cfg, tmp_path / "full", CountingLoss(cfg))
    full.fit()
    final = read_checkpoint(tmp_path / "full" / FINAL)
    last = read_checkpoint(tmp_path / "full" / LAST)["state_dict"]
    start = read_checkpoint(init)["state_dict"]
    floats = [k for k, v in last.items() if v.is_floating_point()]
    assert any(not torch.equal(last[k], start[k]) for k in floats)  # it trained
    for k in floats:
        torch.testing.assert_close(final["state_dict"][k], 0.75 * last[k] + 0.25 * start[k])
    assert set(final["metrics"]) >= {"pck", "ap"} and load_model(tmp_path / "full" / FINAL)[0].training is False

    # interrupted in epoch 2 and resumed: final.pt still mixes in the initial weights, not the
    # weights the resumed process loaded
    with pytest.raises(KeyboardInterrupt):
        resume_trainer(cfg, tmp_path / "cut", CountingLoss(cfg, fail_at=7)).fit()
    assert not (tmp_path / "cut" / FINAL).exists()  # unfinished runs write none
    resumed = resume_trainer(cfg, tmp_path / "cut", CountingLoss(cfg))
    resumed.resume(tmp_path / "cut" / LAST)
    resumed.fit()
    again = read_checkpoint(tmp_path / "cut" / FINAL)["state_dict"]
    for k in floats:
        assert torch.equal(again[k], final["state_dict"][k]), k


def test_final_keeps_the_trained_channels_of_keypoints_the_initial_weights_lack(tmp_path, capsys):
    """A schema with a keypoint its init has no weights for: that keypoint's head channels started
    random, so final.pt must not mix them halfway back to noise."""
    from movenet.pretrained import KEYPOINT_OUTPUTS
    from movenet.schema import COCO17

    init = tmp_path / "init.pt"
    torch.manual_seed(3)
    save_checkpoint(init, build_model(resume_config(), verbose=False))
    head17 = {**COCO17.to_dict(), "name": "head17", "keypoints": ["head", *COCO17.keypoints[1:]]}
    cfg = resume_config(schema=head17, epochs=1, init=str(init), final_init_weight=0.5)
    schema = cfg.keypoint_schema()
    trainer = Trainer(cfg, tmp_path / "run", SyntheticPoses(4, 64, repeat=2), val_data(4, 64), CountingLoss(cfg),
                      schema=schema, verbose=True)
    assert trainer.fresh_keypoints == ["head"]
    trainer.fit()
    assert "head, which " + str(init) + " lacks, as trained" in capsys.readouterr().err
    final = read_checkpoint(tmp_path / "run" / FINAL)["state_dict"]
    trained = trainer.eval_model().state_dict()
    start = read_checkpoint(init)["state_dict"]
    for layer, per in KEYPOINT_OUTPUTS.items():
        key = f"{layer}.weight"
        assert not torch.equal(trained[key][:per], start[key][:per])  # (the init's nose channels differ)
        assert torch.equal(final[key][:per], trained[key][:per])  # head: trained
        torch.testing.assert_close(final[key][per:], 0.5 * trained[key][per:] + 0.5 * start[key][per:])


@pytest.mark.parametrize("init, weight, message", [
    ("scratch", 0.5, "needs init lightning, thunder or a checkpoint, not scratch"),
    ("imagenet", 0.5, "not imagenet"),
    ("run.pt", 1.0, "final_init_weight must be in [0, 1)"),
    ("run.pt", -0.1, "final_init_weight must be in [0, 1)"),
])
def test_final_init_weight_needs_full_initial_weights(init, weight, message):
    with pytest.raises(MoveNetError) as e:
        tiny_config(init=init, final_init_weight=weight)
    assert message in str(e.value) and "\n" not in str(e.value)


class _WarningSamples(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        import warnings

        from movenet.errors import DataWarning
        warnings.warn(DataWarning("im7.jpg: the image is 80x60, its annotation says 160x120"))
        return torch.zeros(1)


def test_a_data_warning_from_a_spawned_loader_worker_is_one_line(capfd):
    # macOS and Windows start loader workers with `spawn`: they inherit nothing from the CLI
    from movenet.errors import one_line_data_warnings
    from movenet.train import make_loader

    one_line_data_warnings()
    loader = make_loader(_WarningSamples(), 1, torch.utils.data.SequentialSampler(range(1)), 1, train=False)
    loader.multiprocessing_context = "spawn"
    assert len(list(loader)) == 1
    err = capfd.readouterr().err
    assert "movenet: warning: im7.jpg: the image is 80x60, its annotation says 160x120\n" in err
    assert "DataWarning" not in err and "warnings.warn" not in err


def test_ctrl_c_on_the_step_that_reaches_max_steps_still_ends_the_run(tmp_path, capsys):
    cfg = resume_config(max_steps=6)  # step 6 = batch 2 of epoch 2
    resume_trainer(cfg, tmp_path / "full", CountingLoss(cfg)).fit()
    trainer = resume_trainer(cfg, tmp_path / "cut", SignallingLoss(cfg, at=6))
    trainer.fit()  # (no interruption: the run ends at that step, validated, as it would have)
    assert "interrupted" not in capsys.readouterr().err
    history = [untimed(read_checkpoint(tmp_path / run / LAST)["train_state"]["history"]) for run in ("full", "cut")]
    assert history[0] == history[1] and "val_pck" in history[1][-1] and history[1][-1]["step"] == 6


def test_a_run_killed_before_its_first_epoch_ended_resumes_after_val_before(tmp_path):
    """val_before writes best.pt at epoch 0, and last.pt with it: a folder with a best.pt but no
    last.pt could be neither resumed nor used by a new run."""
    cfg = resume_config(val_before=True)
    full = resume_trainer(cfg, tmp_path / "full", CountingLoss(cfg))
    full.fit()
    with pytest.raises(KeyboardInterrupt):  # an exception in step 2, as a kill: no checkpoint of its own
        resume_trainer(cfg, tmp_path / "cut", CountingLoss(cfg, fail_at=2)).fit()
    assert read_checkpoint(tmp_path / "cut" / LAST)["step"] == 0 and (tmp_path / "cut" / BEST).exists()
    (tmp_path / "cut" / BEST).unlink()  # (as a kill between the two would leave it)
    resumed = resume_trainer(cfg, tmp_path / "cut", CountingLoss(cfg))
    resumed.resume(tmp_path / "cut" / LAST)
    assert resumed.best_in_last  # the initial model was the best so far: its best.pt is written again
    resumed.fit()
    for name in (LAST, BEST):
        a, b = (read_checkpoint(tmp_path / run / name) for run in ("full", "cut"))
        assert a["step"] == b["step"] and all(torch.equal(a["state_dict"][k], b["state_dict"][k])
                                              for k in a["state_dict"]), name


def test_a_resume_writes_the_best_pt_a_stopped_process_did_not(tmp_path, capsys):
    """Stopped between last.pt and best.pt of an epoch that was the best (here: no validation,
    so every epoch is), or leaving an older best.pt: the resume writes it from last.pt."""
    cfg = resume_config(epochs=1)
    run = tmp_path / "run"
    Trainer(cfg, run, SyntheticPoses(4, 64, repeat=2), None, CountingLoss(cfg), verbose=False).fit()
    last = read_checkpoint(run / LAST)
    (run / BEST).unlink()
    trainer = Trainer(cfg, run, SyntheticPoses(4, 64, repeat=2), None, CountingLoss(cfg))
    trainer.resume(run / LAST)
    trainer.fit()  # nothing to train
    err = capsys.readouterr().err
    assert f"wrote {run / BEST} from last.pt: the run had stopped between the two" in err
    best = read_checkpoint(run / BEST)
    assert best["step"] == last["step"] and all(torch.equal(best["state_dict"][k], v)
                                                 for k, v in last["state_dict"].items())
    # a best.pt that is there and current is left as it is
    mtime = (run / BEST).stat().st_mtime_ns
    trainer = Trainer(cfg, run, SyntheticPoses(4, 64, repeat=2), None, CountingLoss(cfg), verbose=False)
    trainer.resume(run / LAST)
    trainer.fit()
    assert (run / BEST).stat().st_mtime_ns == mtime


def test_a_run_folder_named_like_a_file_is_still_resumed_as_a_folder(tmp_path, capsys):
    from movenet.cli import main
    from movenet.train import check_run_folder, resolve_resume

    folder = tmp_path / "exp_lr0.5"
    assert resolve_resume("", str(folder)) == (folder / LAST, folder)
    folder.mkdir()
    with pytest.raises(MoveNetError, match=r"exp_lr0.5/last.pt: no checkpoint to resume from"):
        check_run_folder(folder, folder / LAST)
    with pytest.raises(MoveNetError, match=r"exp_lr0.5: no checkpoint to resume from"):
        check_run_folder(tmp_path / "other", folder)  # (a folder named as the checkpoint)
    # from the command line: the folder of --out, or the config's out_dir
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{sources: [{{path: {tmp_path}}}]}}\nout_dir: {tmp_path / 'runs0.1'}\n")
    for args in (["--out", str(tmp_path / "exp_lr0.25")], []):
        assert main(["train", str(config), "--resume", *args]) == 2
        run = args[-1] if args else str(tmp_path / "runs0.1")
        assert capsys.readouterr().err.strip() == f"movenet: error: {run}/last.pt: no checkpoint to resume from"


def test_a_resume_that_changes_the_optimiser_groups_names_the_setting(tmp_path):
    cfg = resume_config(epochs=1)
    resume_trainer(cfg, tmp_path, CountingLoss(cfg)).fit()
    other = resume_config(epochs=2, **{"optim.backbone_lr_scale": 0.5})
    with pytest.raises(MoveNetError, match=r"training state does not fit this configuration \(changed: "
                                           r"optim.backbone_lr_scale 1.0 -> 0.5; resume with the run's settings"):
        resume_trainer(other, tmp_path, CountingLoss(other)).resume(tmp_path / LAST)


def test_the_schedule_goes_on_at_the_runs_epoch_when_an_epoch_has_other_steps(tmp_path):
    """Resumed at an epoch's end with another batch size (or number of processes), the learning
    rate goes on at the same place of the schedule in epochs, not at the same step number."""
    from movenet.train import lr_factor

    cfg = resume_config(max_steps=4)  # epoch 1 of 3, 4 steps of 2 (warm-up: that epoch)
    resume_trainer(cfg, tmp_path, CountingLoss(cfg)).fit()
    other = resume_config(batch_size=4)  # 2 steps an epoch
    trainer = resume_trainer(other, tmp_path, CountingLoss(other))
    trainer.resume(tmp_path / LAST)
    assert trainer.scheduler.last_epoch == 2 and trainer.state.step == 4
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(other.optim.lr * lr_factor(2, other, 2)) == pytest.approx(other.optim.lr)
    # as a run of batch 4 from the start has it after its first epoch
    fresh = resume_trainer(resume_config(batch_size=4, max_steps=2), tmp_path / "fresh", CountingLoss(other))
    fresh.fit()
    assert fresh.optimizer.param_groups[0]["lr"] == pytest.approx(lr)


def test_a_resume_inside_an_epoch_with_other_images_says_so(tmp_path):
    cfg = resume_config(max_steps=3)  # batch 3 of epoch 1's 4
    resume_trainer(cfg, tmp_path, CountingLoss(cfg)).fit()
    other = resume_config()
    more = Trainer(other, tmp_path, SyntheticPoses(5, 64, noise=30.0, repeat=2), val_data(4, 64), CountingLoss(other),
                   verbose=False)  # (a folder of unlabelled images that gained some, say)
    with pytest.raises(MoveNetError, match=re.escape(
            "changed: samples 8 -> 10 (the images of data.sources or distill.unlabeled, or the data settings). Resume "
            "with the run's settings (its config.yaml), with the images it had and max_steps=4 to finish that epoch")):
        more.resume(tmp_path / LAST)


def test_calibration_reports_the_ap_of_the_offset_it_chose():
    from movenet.train import ValPredictions, score_validation

    val = val_data(6, 64)
    ids = np.array([a["id"] for a in val.coco["annotations"]])
    gt = np.stack([np.asarray(a["keypoints"], np.float32).reshape(-1, 3) for a in val.coco["annotations"]])
    exact = gt.copy()
    exact[..., 2] = 0.9
    off = exact.copy()
    off[..., :2] += 30  # far off: neither PCK nor AP counts these
    metrics = score_validation([ValPredictions(ids, {1.8: off, 5.0: exact})], val, calibrating=True)
    assert metrics["distance_offset"] == 5.0 and metrics["pck"] == 1.0
    alone = score_validation([ValPredictions(ids, {5.0: exact})], val)["ap"]
    assert alone > 0.5 and metrics["ap"] == pytest.approx(alone)
