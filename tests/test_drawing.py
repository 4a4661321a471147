"""Skeleton drawings (colours by side, the threshold, hidden ends, the caller's image) and the
training-curves figure (legend, best epoch, AP, no validation)."""
from __future__ import annotations

import numpy as np
import pytest

from movenet.draw import CENTER, LEFT, RIGHT, draw_pose, write_image
from movenet.schema import COCO17

NAMES = list(COCO17.keypoints)


def hidden_pose() -> np.ndarray:
    kpts = np.zeros((17, 3), np.float32)
    kpts[:, :2] = 5  # in a corner, all scoring 0
    return kpts


def show(kpts, name, x, y, score=1.0):
    kpts[NAMES.index(name)] = (x, y, score)


def test_left_is_orange_right_blue_and_the_middle_green():
    # (literal colours: the drawings' key, which swapping the names would change unseen)
    assert (LEFT, RIGHT, CENTER) == ((255, 140, 0), (0, 160, 255), (60, 220, 60))


def test_keypoints_take_the_colour_of_their_side():
    img = np.zeros((100, 100, 3), np.uint8)
    kpts = hidden_pose()
    show(kpts, "left_wrist", 20, 50)
    show(kpts, "right_wrist", 80, 50)
    show(kpts, "nose", 50, 20)
    drawn = draw_pose(img, kpts)
    assert tuple(drawn[50, 20]) == LEFT
    assert tuple(drawn[50, 80]) == RIGHT
    assert tuple(drawn[20, 50]) == CENTER


def test_a_keypoint_scoring_exactly_the_threshold_is_drawn():
    kpts = hidden_pose()
    show(kpts, "left_wrist", 50, 50, score=0.3)
    assert tuple(draw_pose(np.zeros((100, 100, 3), np.uint8), kpts, threshold=0.3)[50, 50]) == LEFT
    show(kpts, "left_wrist", 50, 50, score=0.29)
    assert not draw_pose(np.zeros((100, 100, 3), np.uint8), kpts, threshold=0.3).any()


def test_a_bone_with_one_hidden_end_is_not_drawn():
    kpts = hidden_pose()
    show(kpts, "left_shoulder", 20, 50)
    show(kpts, "left_elbow", 80, 50, score=0.1)
    drawn = draw_pose(np.zeros((100, 100, 3), np.uint8), kpts)
    assert drawn[50, 20].any()  # the visible end
    assert not drawn[50, 35:95].any()


def nearest_colour(pixel):
    return min((LEFT, RIGHT, CENTER), key=lambda c: np.abs(np.subtract(c, pixel, dtype=float)).sum())


@pytest.mark.parametrize("a, b, colour", [
    ("nose", "left_eye", LEFT), ("left_eye", "left_ear", LEFT), ("right_hip", "right_knee", RIGHT),
    ("left_shoulder", "right_shoulder", CENTER), ("left_hip", "right_hip", CENTER)])
def test_a_bone_has_its_sides_colour_and_one_across_the_body_the_centres(a, b, colour):
    assert (NAMES.index(a), NAMES.index(b)) in COCO17.skeleton
    kpts = hidden_pose()
    show(kpts, a, 10, 50)
    show(kpts, b, 90, 50)
    drawn = draw_pose(np.zeros((100, 100, 3), np.uint8), kpts)
    assert nearest_colour(drawn[50, 50]) == colour  # (anti-aliased)


def test_draw_pose_leaves_the_callers_image_alone():
    img = np.zeros((100, 100, 3), np.uint8)
    kpts = hidden_pose()
    show(kpts, "left_wrist", 50, 50)
    drawn = draw_pose(img, kpts)
    assert drawn.any() and not img.any()


def test_write_image_encodes_as_its_extension_says(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    write_image(tmp_path / "a.png", img)
    write_image(tmp_path / "a.jpg", img)
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "a.jpg").read_bytes()[:2] == b"\xff\xd8"


# ---------------------------------------------------------------- training curves
@pytest.fixture
def figures(monkeypatch):
    """The figures plot_training_curves draws (not rendered: the test reads their artists)."""
    from matplotlib.figure import Figure

    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: drawn.append(self))
    return drawn


def epoch(i, **values):
    return {"epoch": i, "train_loss": 1.0 / i, "train_heatmap": 0.5 / i, "train_bone": 0.0, **values}


def plot(history, tmp_path, figures):
    from movenet.curves import plot_training_curves

    plot_training_curves(history, tmp_path / "curves.png")
    (fig,) = figures
    return fig.axes


def test_loss_terms_a_run_does_not_use_are_left_out(tmp_path, figures):
    ax_loss, _ = plot([epoch(1), epoch(2)], tmp_path, figures)
    labels = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert "heatmap" in labels and "bone" not in labels


def test_the_best_epoch_is_the_one_of_the_highest_pck(tmp_path, figures):
    history = [epoch(1, val_pck=0.5), epoch(2, val_pck=0.7), epoch(3, val_pck=0.6)]
    _, ax_val = plot(history, tmp_path, figures)
    assert [t.get_text() for t in ax_val.texts] == ["best PCK 0.7000, epoch 2"]
    assert [line.get_label() for line in ax_val.lines if not line.get_label().startswith("_")] == ["PCK@0.2"]


def test_ap_is_drawn_when_validation_has_it(tmp_path, figures):
    history = [epoch(1, val_pck=0.5, val_ap=0.4), epoch(2, val_pck=0.6, val_ap=0.45)]
    _, ax_val = plot(history, tmp_path, figures)
    (ap,) = [line for line in ax_val.lines if line.get_label() == "AP"]
    assert list(ap.get_ydata()) == [0.4, 0.45]


def test_a_run_without_validation_says_so(tmp_path, figures):
    _, ax_val = plot([epoch(1)], tmp_path, figures)
    assert [t.get_text() for t in ax_val.texts] == ["no validation"]
