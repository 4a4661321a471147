"""Parity of our PyTorch port with Google's MoveNet (reference ONNX graphs in ../shared)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from movenet.datasets import read_lsp_joints
from movenet.decode import decode_single
from movenet.image import letterbox, read_image
from movenet.predict import TorchPredictor

ort = pytest.importorskip("onnxruntime")

HEAD_OUTPUTS = {
    "heatmaps": "StatefulPartitionedCall/kpt_heatmap_0/conv2d_5/BiasAdd:0",
    "centers": "StatefulPartitionedCall/center_0/conv2d_4/BiasAdd:0",
    "regression": "StatefulPartitionedCall/kpt_regress_0/conv2d_6/BiasAdd:0",
    "offsets": "StatefulPartitionedCall/kpt_offset_0/conv2d_7/BiasAdd:0",
}


def _session(path):
    if not path.exists():
        pytest.skip(f"{path.name} not available")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _photos(shared_dir, lsp_dir, n_lsp):
    media = sorted((shared_dir / "data" / "media").glob("*.jpg"))
    paths, _ = read_lsp_joints(lsp_dir)
    return media + paths[:n_lsp]


def _reference_keypoints(session, square, side):
    out = session.run(["Identity:0"], {"input:0": square[None].astype(np.int32)})[0][0, 0]
    return np.stack([out[:, 1] * side, out[:, 0] * side, out[:, 2]], axis=1)


def test_raw_heads_match_reference(lightning, shared_dir, lsp_dir, reference_dir):
    sess = _session(reference_dir / "movenet_lightning_heads.onnx")
    for path in _photos(shared_dir, lsp_dir, 10):
        square, _ = letterbox(read_image(path), 192)
        ref = dict(zip(HEAD_OUTPUTS, sess.run(list(HEAD_OUTPUTS.values()),
                                               {"input:0": square[None].astype(np.int32)})))
        x = torch.from_numpy(square).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            ours = dict(zip(HEAD_OUTPUTS, lightning(x, activate=False)))
        for name in HEAD_OUTPUTS:
            diff = np.abs(ours[name][0].permute(1, 2, 0).numpy() - ref[name][0]).max()
            assert diff <= 1e-3, f"{path.name} {name}: max abs diff {diff}"


def test_decoder_matches_reference_graph_on_all_lsp(lightning, lsp_dir, reference_dir):
    """Our numpy decoder on the reference graph's own head tensors gives the graph's output."""
    sess = _session(reference_dir / "movenet_lightning_heads.onnx")
    prior = lightning.center_prior.numpy()
    dist, scale = float(lightning.distance_offset), float(lightning.coord_scale)
    paths, _ = read_lsp_joints(lsp_dir)
    names = ["Identity:0"] + list(HEAD_OUTPUTS.values())
    worst = 0.0
    for path in paths:
        square, _ = letterbox(read_image(path), 192)
        final, heat, center, reg, off = sess.run(names, {"input:0": square[None].astype(np.int32)})
        sig = lambda a: 1 / (1 + np.exp(-a[0].transpose(2, 0, 1)))  # noqa: E731
        ours = decode_single(sig(heat), sig(center), reg[0].transpose(2, 0, 1),
                             off[0].transpose(2, 0, 1), prior, dist, scale)
        ref = final[0, 0]
        worst = max(worst, np.abs(ours[:, 0] - ref[:, 1]).max(), np.abs(ours[:, 1] - ref[:, 0]).max(),
                    np.abs(ours[:, 2] - ref[:, 2]).max())
    assert worst < 1e-4, f"decoded keypoints differ from the graph's by {worst} (normalised units)"


@pytest.mark.parametrize("variant,n_lsp", [("lightning", 40), ("thunder", 15)])
def test_end_to_end_matches_reference(variant, n_lsp, request, shared_dir, lsp_dir, reference_dir):
    model = request.getfixturevalue(variant)
    sess = _session(reference_dir / f"movenet_{variant}.onnx")
    predictor = TorchPredictor(model)
    for path in _photos(shared_dir, lsp_dir, n_lsp):
        img = read_image(path)
        square, side = letterbox(img, predictor.input_size)
        ref = _reference_keypoints(sess, square, side)
        ours = predictor(img)
        # 0.05 px in the original image; the score to 1e-3.
        np.testing.assert_allclose(ours[:, :2], ref[:, :2], atol=max(0.05, side * 2e-5), err_msg=path.name)
        np.testing.assert_allclose(ours[:, 2], ref[:, 2], atol=1e-3, err_msg=path.name)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lightning", "thunder"])
def test_end_to_end_matches_reference_all_lsp(variant, request, lsp_dir, reference_dir):
    model = request.getfixturevalue(variant)
    sess = _session(reference_dir / f"movenet_{variant}.onnx")
    predictor = TorchPredictor(model)
    paths, _ = read_lsp_joints(lsp_dir)
    for path in paths:
        img = read_image(path)
        square, side = letterbox(img, predictor.input_size)
        np.testing.assert_allclose(predictor(img), _reference_keypoints(sess, square, side),
                                   atol=max(0.05, side * 2e-5), err_msg=path.name)


def test_graph_constants_follow_formula(lightning, thunder):
    """The centre prior Google stores is 1/(distance to the grid centre + 1.8) (float16)."""
    from movenet.decode import center_prior

    for model in (lightning, thunder):
        g = model.config.output_size
        np.testing.assert_allclose(model.center_prior.numpy(), center_prior(g), rtol=2e-3)
        assert abs(float(model.distance_offset) - 1.8) < 1e-3
        assert abs(float(model.coord_scale) - 1 / g) < 1e-4
