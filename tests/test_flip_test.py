"""The flip test (``FlipTestPredictor``, ``--flip``): head outputs of a mirrored input mapped back
are exactly the targets of the unmirrored person, the merged outputs are mirror-equivariant,
and every command that predicts takes the option."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from movenet.checkpoint import save_checkpoint
from movenet.cli import main
from movenet.decode import center_prior
from movenet.export import BUILTIN_IMAGE
from movenet.model import create_model
from movenet.predict import TorchPredictor
from movenet.runtime import FlipTestPredictor, Predictor, mirror_outputs
from movenet.schema import COCO17
from movenet.targets import encode

S = 192
HEADS = ("heatmaps", "center", "regression", "offsets")
FLIP = COCO17.flip_index()


def _mirror_people(kpts: np.ndarray) -> np.ndarray:
    out = kpts.copy()
    out[..., 0] = S - out[..., 0]
    return out[..., FLIP, :]


def _random_person(rng, lo: float = 20, hi: float = 170) -> np.ndarray:
    kpts = np.zeros((17, 3), np.float32)
    kpts[:, :2] = rng.uniform(lo, hi, (17, 2))
    kpts[:, 2] = 2
    kpts[rng.random(17) < 0.2, 2] = 0
    return kpts


def _heads(targets: dict) -> tuple[np.ndarray, ...]:
    return tuple(targets[name][None] for name in HEADS)


@pytest.mark.parametrize("seed", range(5))
def test_mirrored_targets_brought_back_are_the_targets(seed):
    rng = np.random.default_rng(seed)
    target, others = _random_person(rng), _random_person(rng, 5, 185)[None]
    plain = encode(target, others, S)
    mirrored = encode(_mirror_people(target), _mirror_people(others), S)
    back = mirror_outputs(_heads(mirrored), FLIP)
    np.testing.assert_array_equal(back[0], plain["heatmaps"][None])
    np.testing.assert_array_equal(back[1], plain["center"][None])
    for got, name in ((back[2], "regression"), (back[3], "offsets")):
        mask_name = "regression_mask" if name == "regression" else "offset_mask"
        mask = plain[mask_name][None]
        # the mirrored person's masks, moved like the values, are the person's masks
        moved = mirrored[mask_name][None].reshape(1, 17, 2, 48, 48)[:, FLIP, :, :, ::-1]
        np.testing.assert_array_equal(moved.reshape(mask.shape), mask)
        np.testing.assert_allclose(got * mask, plain[name][None] * mask, atol=1e-5)  # S - x rounds
    assert plain["regression_mask"].any() and plain["offset_mask"].any()


def test_mirror_outputs_is_its_own_inverse():
    rng = np.random.default_rng(0)
    outs = (rng.random((2, 17, 48, 48)), rng.random((2, 1, 48, 48)), rng.normal(size=(2, 34, 48, 48)),
            rng.random((2, 34, 48, 48)))
    twice = mirror_outputs(mirror_outputs(outs, FLIP), FLIP)
    for a, b in zip(twice, outs):
        np.testing.assert_allclose(a, b, atol=1e-12)
    once = mirror_outputs(outs, FLIP)
    assert not np.allclose(once[0], outs[0]) and not np.allclose(once[3], outs[3])


class _Oracle(Predictor):
    """A backend that outputs the exact targets of a known person, mirrored when its input is
    the mirror image of the one it was shown: right on both views."""

    def __init__(self, image: np.ndarray, person: np.ndarray):
        self.input_size, self.distance_offset = S, 1.8
        self.prior = center_prior(S // 4)
        self.batch, self.person, self.calls = self._to_batch(image), person, 0

    def run(self, batch):
        self.calls += 1
        if np.array_equal(batch, self.batch):
            return _heads(encode(self.person, self.person[None], S))
        assert np.array_equal(batch, self.batch[..., ::-1]), "not the image nor its mirror"
        return _heads(encode(_mirror_people(self.person), _mirror_people(self.person)[None], S))


def test_flip_test_of_a_model_right_on_both_views_decodes_the_person():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (S, S, 3), dtype=np.uint8)  # already the input size: no resize
    person = _random_person(rng, 60, 130)
    person[:, 2] = 2
    oracle = _Oracle(image, person)
    plain = oracle(image)
    flipped = FlipTestPredictor(oracle)(image)
    assert oracle.calls == 3
    # one cell is 4 px: both decode the labels to within the offset quantisation
    np.testing.assert_allclose(plain[:, :2], person[:, :2], atol=1e-3)
    np.testing.assert_allclose(flipped[:, :2], person[:, :2], atol=1e-3)
    np.testing.assert_allclose(flipped[:, 2], 1.0)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("mobilenetv2_050", input_size=96)
    with torch.no_grad():  # a model that is not mirror-symmetric by chance
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("flip") / "small.pt"
    save_checkpoint(path, model)
    return path


def test_merged_outputs_are_mirror_equivariant(small_checkpoint):
    from movenet.predict import create_predictor

    plain = create_predictor(str(small_checkpoint))
    flip = FlipTestPredictor(plain)
    batch = np.random.default_rng(0).uniform(0, 255, (1, 3, 96, 96)).astype(np.float32)
    mirrored = np.ascontiguousarray(batch[..., ::-1])
    a, b = flip.run(batch), flip.run(mirrored)
    for x, y in zip(mirror_outputs(b, FLIP), a):
        np.testing.assert_allclose(x, y, atol=1e-5)
    # while the model alone is not: the flip test changes its outputs
    assert not np.allclose(plain.run(batch)[0], a[0], atol=1e-3)
    assert flip.input_size == 96 and flip.schema is plain.schema and flip.model is plain.model


def test_predict_with_flip_averages_the_two_views(small_checkpoint, tmp_path):
    from movenet.image import read_image
    from movenet.predict import create_predictor
    from movenet.tracking import predict_person

    out = tmp_path / "flip.json"
    assert main(["predict", str(BUILTIN_IMAGE), "--model", str(small_checkpoint), "--flip",
                 "--json", str(out), "--threads", "1"]) == 0
    got = np.array(json.loads(out.read_text())[0]["people"][0]["keypoints"])
    expected = predict_person(FlipTestPredictor(create_predictor(str(small_checkpoint))), read_image(BUILTIN_IMAGE))
    np.testing.assert_allclose(got, expected, atol=0.01)
    plain = predict_person(create_predictor(str(small_checkpoint)), read_image(BUILTIN_IMAGE))
    assert not np.allclose(got[:, :2], plain[:, :2], atol=0.5)
    # the exported model takes it too
    onnx = tmp_path / "small.onnx"
    assert main(["export", str(small_checkpoint), "--out", str(onnx)]) == 0
    assert main(["predict", str(BUILTIN_IMAGE), "--model", str(onnx), "--flip", "--json", str(out)]) == 0
    np.testing.assert_allclose(np.array(json.loads(out.read_text())[0]["people"][0]["keypoints"]), got,
                               atol=0.05)


def test_eval_with_flip_scores_what_predict_flip_outputs(lsp_dir, lightning, tmp_path, capsys):
    from movenet.datasets import load_keypoint_dataset
    from movenet.evaluate import evaluate
    from movenet.image import read_image
    from movenet.tracking import predict_person

    dataset = load_keypoint_dataset(lsp_dir)
    dataset = dataset.subset([e.id for e in dataset.images[:3]])
    run = evaluate(dataset, ["lightning"], threads=1, progress=False, flip=True)
    predictor = FlipTestPredictor(TorchPredictor(lightning))
    expected = [predict_person(predictor, read_image(e.path), refine=False) for e in dataset.images]
    np.testing.assert_allclose(run.models[0].predictions, np.stack(expected), atol=1e-3)
    assert run.settings["flip"] is True
    out = tmp_path / "report"
    assert main(["eval", str(lsp_dir), "--limit", "2", "--flip", "--out", str(out), "--threads", "1"]) == 0
    assert "and the flip test" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["settings"]["flip"] is True
    assert "(whole protocol, flip test)" in (out / "report.md").read_text()


def test_flip_of_a_keypoints_only_model_is_one_line_error(lsp_dir, reference_dir, capsys, tmp_path):
    google = reference_dir / "movenet_lightning.onnx"
    if not google.exists():
        pytest.skip("reference model not available")
    out = tmp_path / "report"
    assert main(["eval", str(lsp_dir), "--model", str(google), "--flip", "--limit", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "keypoints only" in err and str(google) in err
    assert not out.exists()


def test_video_with_flip(small_checkpoint, shared_dir, tmp_path):
    yoga = shared_dir / "data" / "media" / "yoga.mp4"
    out = tmp_path / "yoga.jsonl"
    assert main(["video", str(yoga), "--model", str(small_checkpoint), "--flip", "--max-frames", "3",
                 "--json", str(out), "--threads", "1"]) == 0
    assert len(out.read_text().splitlines()) == 3
