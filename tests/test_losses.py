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
