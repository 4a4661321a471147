"""The loss: zero for a perfect prediction, exactly zero for masked keypoints (value and
gradient), the documented weighting, bone and distillation terms."""
import numpy as np
import pytest
import torch

from movenet import losses, targets
from movenet.losses import LossConfig, MoveNetLoss

S = 64
G = S // 4
KEYS = ("heatmaps", "heatmap_weight", "center", "center_weight", "regression", "regression_mask",
        "offsets", "offset_mask", "center_cell")

def make_batch(n=3, seed=0, unlabelled=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    encs, kpts = [], []
    for _ in range(n):
        person = np.zeros((17, 3))
        person[:, :2] = 32 + rng.uniform(-20, 20, (17, 2))
        person[:, 2] = 2
        person[list(unlabelled), 2] = 0
        encs.append(targets.encode(person, np.zeros((0, 17, 3)), S))
        kpts.append(person)
    batch = {k: torch.from_numpy(np.stack([e[k] for e in encs])) for k in KEYS}
    batch["has_labels"] = torch.ones(n, dtype=torch.bool)
    batch["keypoints"] = torch.from_numpy(np.stack(kpts)).float()
    return batch


def perfect(batch):
    return tuple(batch[k].clone() for k in ("heatmaps", "center", "regression", "offsets"))


def noisy(batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    heat, center, reg, off = perfect(batch)
    return (torch.rand(heat.shape, generator=g), torch.rand(center.shape, generator=g),
            reg + torch.randn(reg.shape, generator=g), off + torch.randn(off.shape, generator=g))


def test_perfect_prediction_gives_zero_loss():
    batch = make_batch()
    total, parts = MoveNetLoss(LossConfig(bone=1.0))(perfect(batch), batch)
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    assert set(parts) == {"heatmap", "center", "regression", "offset", "bone"}
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in parts.values())


def test_masked_keypoints_contribute_zero_loss_and_zero_gradient():
    batch = make_batch(unlabelled=(0, 1, 2))
    outputs = [o.requires_grad_(True) for o in noisy(batch)]
    loss_fn = MoveNetLoss(LossConfig(bone=1.0))
    total, _ = loss_fn(outputs, batch)
    total.backward()
    heat_grad, _, reg_grad, off_grad = (o.grad for o in outputs)
    for j in (0, 1, 2):
        assert heat_grad[:, j].abs().max() == 0
        assert reg_grad[:, 2 * j:2 * j + 2].abs().max() == 0
        assert off_grad[:, 2 * j:2 * j + 2].abs().max() == 0
    assert heat_grad[:, 5].abs().max() > 0

    # Changing the prediction of a masked keypoint does not change the loss.
    changed = [o.detach().clone() for o in outputs]
    changed[0][:, 1] = 0.9
    changed[2][:, 2:4] += 7
    changed[3][:, 0:2] -= 3
    assert loss_fn(changed, batch)[0].item() == pytest.approx(total.item(), rel=1e-6)


def test_heatmap_weighting_is_target_times_k_plus_one():
    batch = make_batch(n=1)
    k = 5.0
    loss_fn = MoveNetLoss(LossConfig(heatmap_weight_k=k, center=0, regression=0, offset=0))
    heat, center, reg, off = perfect(batch)
    j = 5
    cy, cx = np.unravel_index(int(batch["heatmaps"][0, j].argmax()), (G, G))
    at_peak = heat.clone()
    at_peak[0, j, cy, cx] -= 0.1  # peak target 1: weight k + 1
    background = heat.clone()
    y0, x0 = np.argwhere(batch["heatmaps"][0, j].numpy() == 0)[0]
    background[0, j, y0, x0] += 0.1  # background target 0: weight 1
    labelled = int(batch["heatmap_weight"].sum())
    peak_loss = loss_fn((at_peak, center, reg, off), batch)[0].item()
    bg_loss = loss_fn((background, center, reg, off), batch)[0].item()
    assert peak_loss == pytest.approx((k + 1) * 0.01 / labelled, rel=1e-4)
    assert bg_loss == pytest.approx(0.01 / labelled, rel=1e-4)


def test_head_weights_scale_their_terms():
    batch = make_batch()
    outputs = noisy(batch)
    _, parts = MoveNetLoss()(outputs, batch)
    cfg = LossConfig(heatmap=2.0, center=0.0, regression=0.5, offset=1.0)
    total, _ = MoveNetLoss(cfg)(outputs, batch)
    expected = 2 * parts["heatmap"] + 0.5 * parts["regression"] + parts["offset"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bone_loss_ignores_translation_and_sees_wrong_lengths():
    batch = make_batch()
    heat, center, reg, off = perfect(batch)
    fn = MoveNetLoss(LossConfig(bone=1.0))
    shifted = reg.clone()
    shifted[:, 0::2] += 2.0  # every keypoint 2 cells lower: same bone lengths
    shifted[:, 1::2] -= 1.0
    _, parts = fn((heat, center, shifted, off), batch)
    assert parts["bone"].item() == pytest.approx(0.0, abs=1e-4)
    assert parts["regression"].item() > 1.0
    scaled = reg * 1.5  # every limb 1.5 times longer
    _, parts = fn((heat, center, scaled, off), batch)
    assert parts["bone"].item() > 0.5


def test_unlabelled_samples_only_learn_from_the_teacher():
    batch = make_batch()
    batch["has_labels"] = torch.tensor([True, False, True])
    outputs = [o.requires_grad_(True) for o in noisy(batch)]
    total, parts = MoveNetLoss(LossConfig(distill_only_unlabelled=True))(outputs, batch)
    total.backward()
    # Sample 1 has no labels: its gradient comes from the teacher term only -> none without one.
    no_teacher = [o.detach().clone().requires_grad_(True) for o in outputs]
    MoveNetLoss()(no_teacher, batch)[0].backward()
    assert all(o.grad[1].abs().max() == 0 for o in no_teacher)
    assert "distill" not in parts

    teacher = perfect(batch)
    with_teacher = [o.detach().clone().requires_grad_(True) for o in outputs]
    total, parts = MoveNetLoss(LossConfig(distill_only_unlabelled=True))(with_teacher, batch, teacher=teacher)
    total.backward()
    assert parts["distill"].item() > 0
    assert with_teacher[0].grad[1].abs().max() > 0
    # The teacher's own outputs distil to zero.
    _, parts = MoveNetLoss()(teacher, batch, teacher=teacher)
    assert parts["distill"].item() == pytest.approx(0.0, abs=1e-6)


def test_loss_on_model_outputs_backpropagates():
    from movenet.model import create_model

    model = create_model("mobilenetv2_050", input_size=S)
    batch = make_batch(n=2)
    out = model(torch.rand(2, 3, S, S) * 255)
    total, parts = MoveNetLoss(LossConfig(bone=0.1))(out, batch)
    total.backward()
    assert torch.isfinite(total)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_center_cells_from_map_matches_argmax():
    center = torch.zeros(2, 1, G, G)
    center[0, 0, 3, 5] = 1
    center[1, 0, 10, 2] = 1
    assert losses.center_cells_from_map(center).tolist() == [[3, 5], [10, 2]]


def test_regression_and_offsets_are_l1():
    batch = make_batch()
    heat, center, reg, off = perfect(batch)
    _, parts = MoveNetLoss()((heat, center, reg + 0.5, off - 0.5), batch)
    assert parts["regression"].item() == pytest.approx(0.5) and parts["offset"].item() == pytest.approx(0.5)


def test_the_centre_map_is_weighted_as_the_heatmaps():
    batch = make_batch(n=1)
    k = 5.0
    heat, center, reg, off = perfect(batch)
    cy, cx = batch["center_cell"][0].tolist()
    center[0, 0, cy, cx] -= 0.1  # target 1 there: weight k + 1
    _, parts = MoveNetLoss(LossConfig(heatmap_weight_k=k))((heat, center, reg, off), batch)
    assert parts["center"].item() == pytest.approx((k + 1) * 0.01, rel=1e-4)


def test_the_bone_term_counts_in_the_total_and_is_read_at_the_centre_cell():
    person = np.zeros((17, 3))
    person[:, :2] = (50.0, 18.0) + np.random.default_rng(3).uniform(-6, 6, (17, 2))
    person[:, 2] = 2
    enc = targets.encode(person, np.zeros((0, 17, 3)), S)
    cy, cx = enc["center_cell"]
    assert abs(int(cy) - int(cx)) >= 6  # off the diagonal: (y, x) read as (x, y) would miss it
    batch = {k: torch.from_numpy(enc[k][None]) for k in KEYS}
    batch["has_labels"] = torch.ones(1, dtype=torch.bool)
    heat, center, reg, off = perfect(batch)
    cfg = LossConfig(bone=1.0)
    total, parts = MoveNetLoss(cfg)((heat, center, reg * 1.5, off), batch)
    assert parts["bone"].item() > 0.1
    expected = sum(getattr(cfg, name) * parts[name] for name in ("heatmap", "center", "regression", "offset", "bone"))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_positions_at_the_centre_are_the_centre_plus_the_regression_in_y_x():
    reg = torch.zeros(1, 4, 8, 8)
    reg[0, :, 2, 5] = torch.tensor([1.0, -1.0, 0.5, 3.0])  # keypoint 0: (y +1, x -1); keypoint 1: (y +0.5, x +3)
    pos = losses.positions_at_center(reg, torch.tensor([[2, 5]]))
    assert pos.tolist() == [[[3.0, 4.0], [2.5, 8.0]]]


def _distill(student, teacher, batch, **cfg):
    return MoveNetLoss(LossConfig(**cfg))(student, batch, teacher=teacher)[1]["distill"].item()


def test_the_teacher_term_reads_regression_at_the_teachers_centre_and_offsets_at_its_peaks():
    batch = make_batch(n=1)
    teacher = perfect(batch)
    heat, center, reg, off = (t.clone() for t in teacher)
    center = torch.roll(center, shifts=(5, 5), dims=(2, 3))  # the student's centre elsewhere
    heat = torch.roll(heat, shifts=(3, -2), dims=(2, 3))  # and its peaks
    base = _distill((heat, center, reg, off), teacher, batch)
    cy, cx = losses.center_cells_from_map(teacher[1])[0].tolist()
    wrong_reg = reg.clone()
    wrong_reg[0, :, cy, cx] += 1.0  # off only where the teacher's centre is
    assert _distill((heat, center, wrong_reg, off), teacher, batch) == pytest.approx(base + 1.0, rel=1e-5)
    peaks = teacher[0][0].reshape(17, -1).argmax(-1)
    wrong_off = off.clone().reshape(1, 17, 2, -1)
    wrong_off[0, torch.arange(17), :, peaks] += 1.0  # off only at the teacher's keypoint peaks
    assert _distill((heat, center, reg, wrong_off.reshape(off.shape)), teacher, batch) == pytest.approx(
        base + 1.0, rel=1e-5)


def test_with_distill_only_unlabelled_labelled_samples_get_nothing_from_the_teacher():
    batch = make_batch()
    batch["has_labels"] = torch.tensor([True, False, True])
    outputs = noisy(batch)
    teacher = noisy(batch, seed=7)
    grads = []
    for with_teacher in (False, True):
        out = [o.detach().clone().requires_grad_(True) for o in outputs]
        MoveNetLoss(LossConfig(distill_only_unlabelled=True))(out, batch, teacher=teacher if with_teacher else None
                                                              )[0].backward()
        grads.append([o.grad.clone() for o in out])
    for without, with_ in zip(*grads):
        assert torch.equal(without[[0, 2]], with_[[0, 2]])  # the labelled samples: the same gradient
        assert with_[1].abs().max() > 0 and without[1].abs().max() == 0
