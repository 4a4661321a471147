"""Distillation: teacher maps resampled to the student's grid decode to the same keypoints,
soft targets are mixed as documented, and a student trains with a small teacher on labelled
and unlabelled images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from movenet.checkpoint import save_checkpoint
from movenet.config import config_from_dict
from movenet.decode import decode_batch_torch
from movenet.distill import Teacher, UnlabeledImages, mix_targets, resample_outputs
from movenet.draw import write_image
from movenet.errors import DataWarning, MoveNetError
from movenet.image import letterbox, read_image
from movenet.model import create_model
from movenet.train import Trainer, build_loss
from train_helpers import SyntheticPoses, draw, person, tiny_config, val_data

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = "src/movenet/assets/astronaut.jpg"


def _decode(outs):
    heat, center, reg, off = outs
    return decode_batch_torch(heat, center, reg, off)


def test_resampled_teacher_maps_decode_to_the_same_keypoints(lightning):
    img = read_image(ROOT / ASTRONAUT)
    square, _ = letterbox(img, 192)
    x = torch.from_numpy(square.transpose(2, 0, 1)[None].astype(np.float32))
    with torch.no_grad():
        outs = lightning(x)
    native = _decode(outs)[0]
    confident = native[:, 2] > 0.3
    assert confident.sum() >= 10
    for grid in (32, 64):  # a smaller and a larger student grid
        resampled = resample_outputs(outs, grid)
        assert all(t.shape[-1] == grid for t in resampled)
        moved = _decode(resampled)[0]
        err = (moved[confident, :2] - native[confident, :2]).abs().max()
        assert err < 1.0 / grid, (grid, float(err))  # within one student cell
    same = resample_outputs(outs, 48)
    assert all(a is b for a, b in zip(same, outs))


def test_mix_targets():
    n, k, g = 2, 17, 8
    gt = torch.rand(n, k, g, g)
    teacher = torch.rand(n, k, g, g)
    weight = torch.ones(n, k, 1, 1)
    weight[0, :5] = 0  # sample 0 has no face labels
    batch = {"heatmaps": gt, "heatmap_weight": weight, "center": gt[:, :1], "has_labels": torch.tensor([True, False])}
    out = mix_targets(batch, teacher, teacher[:, :1], alpha=0.25)
    torch.testing.assert_close(out["heatmaps"][0, 5:], 0.25 * teacher[0, 5:] + 0.75 * gt[0, 5:])
    torch.testing.assert_close(out["heatmaps"][0, :5], teacher[0, :5])  # unlabelled types: teacher alone
    assert torch.all(out["heatmap_weight"][0] == 1)
    torch.testing.assert_close(out["center"][0], 0.25 * teacher[0, :1] + 0.75 * gt[0, :1])
    own_center = mix_targets(batch, teacher, teacher[:, :1], alpha=0.25, center_alpha=1.0)
    torch.testing.assert_close(own_center["center"][0], teacher[0, :1])
    torch.testing.assert_close(own_center["heatmaps"][0], out["heatmaps"][0])
    # a sample without labels keeps its (zero-weighted) targets: the loss' teacher term teaches it
    assert torch.equal(out["heatmaps"][1], gt[1]) and torch.equal(out["heatmap_weight"][1], weight[1])
    assert batch["heatmaps"] is gt and torch.equal(batch["heatmap_weight"], weight)  # input untouched


@pytest.fixture()
def small_teacher(tmp_path):
    torch.manual_seed(1)
    model = create_model("mobilenetv2_050", input_size=64, head_channels=32)
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, model)
    return path


@pytest.fixture()
def unlabeled_dir(tmp_path):
    folder = tmp_path / "unlabeled"
    for i in range(4):
        write_image(folder / f"u{i}.png", draw(person(100 + i, 120), 120))
    return folder


def test_unlabeled_images_are_teacher_only_samples(unlabeled_dir):
    template = SyntheticPoses(2, 96)
    ds = UnlabeledImages([str(unlabeled_dir)], template)
    assert len(ds) == 4
    s = ds[0]
    ref = template[0]
    assert s["image"].shape == ref["image"].shape and s["image"].max() > 0
    assert not bool(s["has_labels"])
    assert float(s["heatmap_weight"].sum()) == 0 and float(s["regression_mask"].sum()) == 0
    assert set(s) == set(ref) and set(s["meta"]) == set(ref["meta"])
    with pytest.raises(MoveNetError, match="no such image"):
        UnlabeledImages([str(unlabeled_dir / "missing.jpg")], template)
    (unlabeled_dir / "u0.png").write_bytes(b"not an image")  # unreadable: data.on_bad_image decides
    with pytest.raises(MoveNetError, match="u0.png: not a readable image"):
        UnlabeledImages([str(unlabeled_dir)], template)[0]
    with pytest.warns(DataWarning, match=r"unreadable image skipped: .*u0.png: not a readable image \(corrupt"):
        assert UnlabeledImages([str(unlabeled_dir)], template, on_bad_image="skip")[0]["image"].max() > 0
    batch = torch.utils.data.default_collate([s, ref])  # mixes with labelled samples
    assert batch["has_labels"].tolist() == [False, True]


def test_student_trains_with_teacher_and_unlabeled_images(small_teacher, unlabeled_dir, tmp_path):
    cfg = tiny_config(**{"distill.teacher": str(small_teacher), "distill.alpha": 0.5,
                         "distill.unlabeled": [str(unlabeled_dir)], "distill.unlabeled_fraction": 0.5,
                         "loss.distill_only_unlabelled": True, "threads": 1, "epochs": 2})
    teacher = Teacher.from_spec(cfg.distill.teacher, cfg.distill.alpha, torch.device("cpu"), cfg.model_config())
    assert teacher.input_size == 64 and teacher.student_input == 96
    train = SyntheticPoses(4, 96)
    seen = []
    loss_fn = build_loss(cfg)

    def loss(outputs, batch, *t):
        if torch.is_grad_enabled():
            seen.append(batch["has_labels"].clone())
            assert len(t) == 1 and t[0][0].shape == outputs[0].shape  # teacher maps on the student grid
        return loss_fn(outputs, batch, *t)

    trainer = Trainer(cfg, tmp_path / "run", train, val_data(4, 96), loss, teacher=teacher,
                      unlabeled=UnlabeledImages(cfg.distill.unlabeled, train, cfg.augment), verbose=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    state = trainer.fit()
    labels = torch.cat(seen)
    assert (~labels).any() and labels.any()  # both kinds of sample were trained on
    last = state.history[-1]
    assert np.isfinite(last["train_loss"]) and last["train_distill"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_unlabelled_batch_learns_from_teacher_only(small_teacher, unlabeled_dir):
    cfg = tiny_config(**{"loss.distill_only_unlabelled": True, "distill.teacher": str(small_teacher),
                         "distill.unlabeled": [str(unlabeled_dir)]})
    template = SyntheticPoses(2, 96)
    batch = torch.utils.data.default_collate([UnlabeledImages([str(unlabeled_dir)], template, train=False)[i]
                                              for i in range(2)])
    teacher = Teacher.from_spec(str(small_teacher), 0.5, torch.device("cpu"), cfg.model_config())
    student = create_model(cfg.model_config())
    mixed, t_out = teacher(batch)
    loss_fn = build_loss(cfg)
    total, parts = loss_fn(student(mixed["image"]), mixed, t_out)
    assert parts["heatmap"] == 0 and parts["regression"] == 0  # no ground truth
    assert parts["distill"] > 0 and total > 0
    total.backward()
    assert student.heatmap.out.weight.grad.abs().sum() > 0


def test_a_teacher_must_know_the_students_keypoints_by_name(tmp_path):
    from movenet.schema import schema_from_config

    five = {"name": "five", "keypoints": ["a", "b", "c", "d", "e"]}
    torch.manual_seed(0)
    model = create_model("mobilenetv2_050", input_size=64, head_channels=32, num_keypoints=5).eval()
    save_checkpoint(tmp_path / "t.pt", model, schema_from_config({**five, "keypoints": ["b", "x", "a", "d", "c"]}))
    student = config_from_dict({"schema": five, "model": {"name": "mobilenetv2_050"}})
    with pytest.raises(MoveNetError, match=r"t.pt: predicts the 5 keypoints of five, without e of the student.s five \(5\)"):
        Teacher.from_spec(str(tmp_path / "t.pt"), 0.5, torch.device("cpu"), student.model_config(),
                          student_schema=student.keypoint_schema())
    # a teacher of the student's keypoints in another order, and others: its maps come in the student's order
    three = config_from_dict({"schema": {"name": "three", "keypoints": ["c", "A", "b"]},
                              "model": {"name": "mobilenetv2_050", "overrides": {"input_size": 96}}})
    teacher = Teacher.from_spec(str(tmp_path / "t.pt"), 0.5, torch.device("cpu"), three.model_config(),
                                student_schema=three.keypoint_schema())
    images = torch.rand(2, 3, 96, 96) * 255
    with torch.no_grad():
        heat, center, reg, off = model(torch.nn.functional.interpolate(images, size=(64, 64), mode="bilinear",
                                                                       align_corners=False))
    ours = [4, 2, 0]  # c, a, b in the teacher's b, x, a, d, c
    xy = [c for k in ours for c in (2 * k, 2 * k + 1)]
    expected = resample_outputs((heat[:, ours], center, reg[:, xy], off[:, xy]), 24)
    for got, want in zip(teacher.outputs(images), expected):
        torch.testing.assert_close(got, want)
    with pytest.raises(MoveNetError, match="distill.unlabeled and distill.unlabeled_fraction need distill.teacher"):
        config_from_dict({"distill": {"unlabeled": ["photos"]}})
    with pytest.raises(MoveNetError, match="loss.distill_only_unlabelled .* needs distill.unlabeled"):
        config_from_dict({"distill": {"teacher": "thunder"}, "loss": {"distill_only_unlabelled": True}})
    config_from_dict({"distill": {"teacher": "thunder", "unlabeled": ["photos"]},
                      "loss": {"distill_only_unlabelled": True}})
    # Settings that would do nothing are refused too.
    with pytest.raises(MoveNetError, match="distill.unlabeled_fraction .* needs distill.unlabeled"):
        config_from_dict({"distill": {"teacher": "thunder", "unlabeled_fraction": 0.3}})
    with pytest.raises(MoveNetError, match="loss.distill 0 teaches them nothing"):
        config_from_dict({"distill": {"teacher": "thunder", "unlabeled": ["photos"]}, "loss": {"distill": 0}})
    config_from_dict({"distill": {"teacher": "thunder"}, "loss": {"distill": 0}})  # mixed targets only
    with pytest.raises(MoveNetError, match="needs distill.unlabeled and a distill.teacher"):
        config_from_dict({"loss": {"distill_only_unlabelled": True}})
