"""The training engine's parts one by one: the EMA weights are the ones validated and written,
the schedule advances and clipping bounds every step, an infinite loss stops the run, best.pt
survives a resume, epoch losses are means over samples, validation follows val_every, the
optimiser's groups, folded batch norms, the random state of a resume, the teacher's targets and
share, and checkpoints written atomically."""
from __future__ import annotations

import pytest
import torch

import movenet.train as train
from movenet.checkpoint import load_model, read_checkpoint, save_checkpoint
from movenet.distill import Teacher, UnlabeledImages, resample_outputs
from movenet.draw import write_image
from movenet.errors import MoveNetError
from movenet.model import create_model
from movenet.train import (BEST, FINAL, LAST, NonFiniteLoss, Trainer, batch_norms_folded, build_model,
                           build_optimizer, evaluate, lr_factor)
from train_helpers import (CountingLoss, SyntheticPoses, resume_config, resume_trainer, tiny_config,
                           val_data)


def _floats(state: dict) -> dict:
    return {k: v for k, v in state.items() if v.is_floating_point()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in _floats(a))


def test_the_ema_weights_are_validated_written_and_mixed_into_final(tmp_path, monkeypatch):
    init = tmp_path / "init.pt"
    torch.manual_seed(3)
    save_checkpoint(init, build_model(resume_config(), verbose=False))
    cfg = resume_config(epochs=2, init=str(init), final_init_weight=0.5)
    trainer = resume_trainer(cfg, tmp_path / "run", CountingLoss(cfg))
    seen = []
    real = train.predict_validation

    def recording(model, *args, **kwargs):
        seen.append((model, {k: v.clone() for k, v in model.state_dict().items()}))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(train, "predict_validation", recording)
    trainer.fit()
    ema, raw = trainer.ema.module.state_dict(), trainer.model.state_dict()
    assert not _same(ema, raw)  # (else this test could not tell them apart)
    assert _same(read_checkpoint(tmp_path / "run" / LAST)["state_dict"], ema)
    assert len(seen) == 3 and all(model is trainer.ema.module for model, _ in seen[:2])
    final = read_checkpoint(tmp_path / "run" / FINAL)
    model, state = seen[2]  # the final validation scores the mix that final.pt holds
    assert model is not trainer.ema.module and _same(state, final["state_dict"])
    metrics, _ = evaluate(load_model(tmp_path / "run" / FINAL)[0], val_data(4, 64), 8, torch.device("cpu"))
    assert metrics["pck"] == pytest.approx(final["metrics"]["pck"])


def test_the_schedule_advances_and_clipping_bounds_every_step(tmp_path):
    cfg = resume_config(epochs=2, **{"ema.enabled": False, "optim.clip_grad_norm": 1e-3})
    trainer = resume_trainer(cfg, tmp_path, CountingLoss(cfg))
    lrs, norms = [], []

    def before_step(optimizer, args, kwargs):
        lrs.append(optimizer.param_groups[0]["lr"])
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(before_step)
    trainer.fit()
    steps = trainer.steps_per_epoch
    assert len(lrs) == 2 * steps == 8 and trainer.scheduler.last_epoch == 8
    assert lrs == pytest.approx([cfg.optim.lr * lr_factor(s, cfg, steps) for s in range(8)])
    assert len(set(lrs)) > 4  # warm-up, then cosine: it moved every step
    assert norms and all(n <= 1e-3 * (1 + 1e-4) for n in norms), norms


def test_an_infinite_loss_stops_the_run_as_nan_does(tmp_path):
    cfg = resume_config()
    with pytest.raises(NonFiniteLoss, match="loss is inf at epoch 2"):
        resume_trainer(cfg, tmp_path, CountingLoss(cfg, fail_at=6, failure="inf")).fit()
    assert read_checkpoint(tmp_path / LAST)["step"] == 4


def _scored_trainer(cfg, out, scores):
    trainer = Trainer(cfg, out, SyntheticPoses(4, 64, repeat=2), val_data(4, 64), CountingLoss(cfg), verbose=False)
    trainer._validate = lambda epoch, *args, **kwargs: {"pck": next(scores), "ap": 0.0}
    return trainer


def test_best_survives_a_resume_and_a_tie_keeps_the_earlier(tmp_path):
    settings = {"model.overrides.input_size": 64, "batch_size": 2, "threads": 1, "val_before": True}
    _scored_trainer(tiny_config(epochs=1, **settings), tmp_path, iter([0.9, 0.5])).fit()
    resumed = _scored_trainer(tiny_config(epochs=2, **settings), tmp_path, iter([0.7]))
    resumed.resume(tmp_path / LAST)
    state = resumed.fit()
    assert (state.best, state.best_epoch) == (0.9, 0) and read_checkpoint(tmp_path / BEST)["epoch"] == 0
    tied = _scored_trainer(tiny_config(epochs=2, **{**settings, "val_before": False}), tmp_path / "tie",
                           iter([0.5, 0.5])).fit()
    assert tied.best_epoch == 1 and read_checkpoint(tmp_path / "tie" / BEST)["epoch"] == 1


def test_without_validation_the_latest_weights_are_best(tmp_path):
    cfg = tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "threads": 1, "epochs": 2})
    state = Trainer(cfg, tmp_path, SyntheticPoses(4, 64), None, CountingLoss(cfg), verbose=False).fit()
    assert state.best_epoch == 2 and read_checkpoint(tmp_path / BEST)["epoch"] == 2
    assert _same(read_checkpoint(tmp_path / BEST)["state_dict"], read_checkpoint(tmp_path / LAST)["state_dict"])


def test_an_epochs_losses_are_means_over_its_samples_and_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "threads": 1, "log.tensorboard": True,
                         "log.every_steps": 1})
    loss = CountingLoss(cfg)
    state = Trainer(cfg, tmp_path, SyntheticPoses(4, 64, repeat=2), None, loss, verbose=False).fit()
    last = state.history[-1]
    assert len(loss.values) == 4 and last["train_images"] == 8
    assert last["train_loss"] == pytest.approx(sum(loss.values) / 4, rel=1e-6)
    for term in ("heatmap", "center", "regression", "offset"):
        assert last[f"train_{term}"] == pytest.approx(sum(p[term] for p in loss.parts) / 4, rel=1e-6)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    for tag in ("train/loss", "train/heatmap", "train/offset", "train/lr"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4], tag


def test_tensorboard_logs_the_learning_rate_each_step_was_taken_with(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "threads": 1, "log.tensorboard": True,
                         "log.every_steps": 1, "optim.warmup_epochs": 1.0})
    Trainer(cfg, tmp_path, SyntheticPoses(4, 64, repeat=2), None, CountingLoss(cfg), verbose=False).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    logged = [e.value for e in events.Scalars("train/lr")]
    assert logged == pytest.approx([cfg.optim.lr * lr_factor(s, cfg, 4) for s in range(4)])  # 1/4, 2/4, ...


def test_validation_runs_every_val_every_epochs_and_at_the_end(tmp_path):
    cfg = tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "threads": 1, "epochs": 5,
                         "val_every": 2})
    state = Trainer(cfg, tmp_path, SyntheticPoses(2, 64), val_data(2, 64), CountingLoss(cfg), verbose=False).fit()
    assert [h["epoch"] for h in state.history if "val_pck" in h] == [2, 4, 5]


def test_the_optimiser_decays_weights_only_and_is_the_one_named():
    model = create_model("mobilenetv2_050", input_size=64)
    for name, cls in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)):
        optimizer = build_optimizer(tiny_config(**{"optim.name": name, "optim.weight_decay": 1e-2}), model)
        assert type(optimizer) is cls
        for group in optimizer.param_groups:
            one_d = {p.ndim <= 1 for p in group["params"]}
            assert len(one_d) == 1 and group["weight_decay"] == (0.0 if one_d == {True} else 1e-2)
    assert lr_factor(0, tiny_config(**{"optim.warmup_epochs": 0.5}), 10) == pytest.approx(0.2)  # 5 warm-up steps


def test_batch_norms_count_as_folded_only_when_all_of_them_are():
    model = create_model("mobilenetv2_050", input_size=64)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
    assert batch_norms_folded(model, "run.pt") and not batch_norms_folded(model, "imagenet")
    norms[3].running_mean.fill_(1.0)  # one layer with statistics of its own: trained, not folded
    assert not batch_norms_folded(model, "run.pt")


class _NoisyLoss(CountingLoss):
    """A loss that draws from torch's generator in the main process (as dropout would)."""

    def __call__(self, outputs, batch, *teacher):
        total, parts = super().__call__(outputs, batch, *teacher)
        if torch.is_grad_enabled() and self.values:
            total = total + 1e-3 * torch.rand(())
            self.values[-1] = float(total.detach())
        return total, parts


def test_a_resume_restores_the_main_processs_random_state(tmp_path):
    cfg = resume_config()
    full = _NoisyLoss(cfg)
    resume_trainer(cfg, tmp_path / "full", full).fit()
    cut = _NoisyLoss(cfg, fail_at=7)
    with pytest.raises(KeyboardInterrupt):
        resume_trainer(cfg, tmp_path / "cut", cut).fit()
    rest = _NoisyLoss(cfg)
    resumed = resume_trainer(cfg, tmp_path / "cut", rest)
    resumed.resume(tmp_path / "cut" / LAST)
    resumed.fit()
    assert cut.values[:4] + rest.values == full.values


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, create_model("mobilenetv2_050", input_size=64, head_channels=32).eval())
    return path


def test_a_teacher_sees_its_own_input_size_and_mixes_into_the_labelled_targets(small_teacher):
    cfg = tiny_config(**{"distill.teacher": str(small_teacher), "distill.alpha": 0.5})
    teacher = Teacher.from_spec(str(small_teacher), 0.5, torch.device("cpu"), cfg.model_config())
    sizes = []
    teacher.model.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape[-2:])))
    data = SyntheticPoses(2, 96)
    batch = torch.utils.data.default_collate([data[0], data[1]])
    mixed, outputs = teacher(batch)
    assert sizes == [(64, 64)] and outputs[0].shape[-1] == 24  # the student's grid
    assert not torch.equal(mixed["heatmaps"], batch["heatmaps"])
    torch.testing.assert_close(mixed["heatmaps"], torch.where(
        batch["heatmap_weight"] > 0, 0.5 * outputs[0] + 0.5 * batch["heatmaps"], outputs[0]))


def test_the_trainer_trains_on_the_mixed_targets_and_gives_unlabelled_images_their_share(small_teacher, tmp_path):
    cfg = tiny_config(**{"distill.teacher": str(small_teacher), "distill.alpha": 1.0, "threads": 1,
                         "distill.unlabeled": [str(tmp_path / "photos")], "distill.unlabeled_fraction": 0.5})
    (tmp_path / "photos").mkdir()
    train_set = SyntheticPoses(6, 96)
    for i in range(2):
        write_image(tmp_path / "photos" / f"p{i}.png", train_set[i]["image"].permute(1, 2, 0).byte().numpy())
    teacher = Teacher.from_spec(str(small_teacher), 1.0, torch.device("cpu"), cfg.model_config())
    labelled_steps = []
    loss_fn = train.build_loss(cfg)

    def loss(outputs, batch, *t):
        if torch.is_grad_enabled():
            labels = batch["has_labels"].bool()
            if labels.any():  # alpha 1: the labelled samples' targets are the teacher's maps
                torch.testing.assert_close(batch["heatmaps"][labels], t[0][0][labels].to(batch["heatmaps"].dtype))
                labelled_steps.append(int(labels.sum()))
        return loss_fn(outputs, batch, *t)

    unlabeled = UnlabeledImages(cfg.distill.unlabeled, train_set, cfg.augment)
    trainer = Trainer(cfg, tmp_path / "run", train_set, None, loss, teacher=teacher, unlabeled=unlabeled,
                      verbose=False)
    weights = trainer.sampler.weights
    assert float(weights[len(train_set):].sum() / weights.sum()) == pytest.approx(0.5)  # (2 photos, 6 people)
    trainer.fit()
    assert labelled_steps


def test_resampled_regression_points_at_the_same_place_on_the_new_grid():
    g, grid = 6, 12
    target = torch.tensor([2.3, 4.1])  # a keypoint's (y, x) in cells of the teacher's grid
    cells = torch.stack(torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32),
                                       indexing="ij"))
    reg = (target.view(2, 1, 1) - cells)[None]  # every cell points at it
    zeros = torch.zeros(1, 1, g, g)
    _, _, reg_s, _ = resample_outputs((zeros, zeros, reg, torch.zeros_like(reg)), grid)
    dst = torch.stack(torch.meshgrid(torch.arange(grid, dtype=torch.float32),
                                     torch.arange(grid, dtype=torch.float32), indexing="ij"))
    at = (dst + reg_s[0] + 0.5) / grid  # in 0..1 of the input square, from every new cell
    expected = (target + 0.5) / g
    torch.testing.assert_close(at, expected.view(2, 1, 1).expand_as(at), atol=1e-5, rtol=0)


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    model = create_model("mobilenetv2_050", input_size=64)
    save_checkpoint(path, model, extra={"step": 1})
    real = torch.save

    def failing(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(MoveNetError, match="last.pt: cannot write"):
        save_checkpoint(path, model, extra={"step": 2})
    monkeypatch.setattr(torch, "save", real)
    assert read_checkpoint(path)["step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(MoveNetError, match=r"other.pt: not a movenet checkpoint \(no 'movenet"):
        read_checkpoint(tmp_path / "other.pt")


def test_a_teacher_runs_in_eval_mode_and_must_predict_the_students_keypoint_count(small_teacher):
    teacher = Teacher(create_model("mobilenetv2_050", input_size=64).train(), 0.5, 96)
    assert not teacher.model.training  # (batch statistics of the student's batches would move it)
    five = create_model("mobilenetv2_050", input_size=96, num_keypoints=5).config
    with pytest.raises(MoveNetError, match=r"teacher .*teacher.pt: 17 keypoints, the student 5"):
        Teacher.from_spec(str(small_teacher), 0.5, torch.device("cpu"), five)


def test_an_ema_turned_on_at_a_resume_starts_from_the_runs_weights(tmp_path):
    cfg = resume_config(epochs=1, **{"ema.enabled": False})
    resume_trainer(cfg, tmp_path, CountingLoss(cfg)).fit()
    on = resume_config(epochs=2)
    resumed = resume_trainer(on, tmp_path, CountingLoss(on))
    resumed.resume(tmp_path / LAST)
    trained = read_checkpoint(tmp_path / LAST)["state_dict"]
    assert _same(resumed.ema.module.state_dict(), trained) and _same(resumed.model.state_dict(), trained)


def test_a_validation_score_that_falls_under_half_the_best_is_said_once(tmp_path, monkeypatch, capsys):
    import math

    from movenet.train import build_loss
    from train_helpers import val_data

    scores = iter([0.8, 0.5, 0.3, 0.2])  # val_before, then epochs 1-3
    monkeypatch.setattr(train, "score_validation", lambda *a, **k: {"pck": next(scores), "ap": 0.1})
    cfg = resume_config(val_before=True, **{"optim.lr": 0.5})
    Trainer(cfg, tmp_path / "run", SyntheticPoses(4, 64, repeat=2), val_data(4, 64), build_loss(cfg)).fit()
    err = capsys.readouterr().err
    assert err.count("movenet: warning: val") == 1
    assert ("movenet: warning: val PCK@0.2 0.3000 at epoch 2 is under half the best, 0.8000 at epoch 0 (kept in "
            "best.pt): the run may be diverging; try a lower optim.lr (this run's: 0.5)") in err
    assert train.collapse(0.41, 0.8, 0, 1, "pck", 1e-3) is None and train.collapse(0.1, -math.inf, 0, 1, "ap", 1) is None
    assert train.collapse(0.39, 0.8, 0, 1, "ap", 1e-3).startswith("val AP 0.3900 at epoch 1")
