"""Decoding on constructed head outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from movenet.decode import center_prior, decode_batch_torch, decode_single

K, G = 17, 48


def _heads(center_cell, keypoint_cells, offsets_yx, rng=None):
    heat = np.full((K, G, G), 0.01, np.float32)
    cen = np.full((1, G, G), 0.01, np.float32)
    reg = np.zeros((2 * K, G, G), np.float32)
    off = np.zeros((2 * K, G, G), np.float32)
    cy, cx = center_cell
    cen[0, cy, cx] = 0.9
    for k, ((ky, kx), (oy, ox)) in enumerate(zip(keypoint_cells, offsets_yx)):
        heat[k, ky, kx] = 0.8
        reg[2 * k, cy, cx] = ky - cy + 0.3  # rough, not exact: the heatmap refines it
        reg[2 * k + 1, cy, cx] = kx - cx - 0.4
        off[2 * k, ky, kx] = oy
        off[2 * k + 1, ky, kx] = ox
    return heat, cen, reg, off


def test_known_peak_gives_known_keypoint():
    rng = np.random.default_rng(0)
    cells = rng.integers(5, 43, size=(K, 2))
    offs = rng.uniform(-0.5, 0.5, size=(K, 2)).astype(np.float32)
    out = decode_single(*_heads((24, 22), cells, offs))
    np.testing.assert_allclose(out[:, 0], (cells[:, 1] + offs[:, 1]) / G, atol=1e-6)
    np.testing.assert_allclose(out[:, 1], (cells[:, 0] + offs[:, 0]) / G, atol=1e-6)
    np.testing.assert_allclose(out[:, 2], 0.8)


def test_regression_picks_the_peak_near_the_person():
    """Two equal peaks: the one near the regressed keypoint wins (distance weighting)."""
    heat, cen, reg, off = _heads((24, 24), [(30, 30)] * K, np.zeros((K, 2)))
    heat[:, 5, 5] = 0.8  # a second, distant person
    out = decode_single(heat, cen, reg, off)
    np.testing.assert_allclose(out[:, :2], 30 / G)


def test_center_prior_prefers_image_centre():
    heat, cen, reg, off = _heads((24, 24), [(20, 20)] * K, np.zeros((K, 2)))
    cen[0, 2, 2] = 0.95  # slightly stronger centre at the border loses to the prior
    for k in range(K):
        reg[2 * k, 2, 2] = 40
        reg[2 * k + 1, 2, 2] = 40
    out = decode_single(heat, cen, reg, off)
    np.testing.assert_allclose(out[:, :2], 20 / G)


def test_negative_regression_is_not_truncated():
    """A keypoint up-left of the centre (negative regression) is found exactly."""
    heat, cen, reg, off = _heads((30, 30), [(10, 12)] * K, np.full((K, 2), -0.25))
    out = decode_single(heat, cen, reg, off)
    np.testing.assert_allclose(out[:, 0], (12 - 0.25) / G, atol=1e-6)
    np.testing.assert_allclose(out[:, 1], (10 - 0.25) / G, atol=1e-6)


def test_torch_batch_decoder_equals_numpy():
    rng = np.random.default_rng(1)
    batch = [tuple(a.astype(np.float32) for a in (
        rng.uniform(0, 1, (K, G, G)), rng.uniform(0, 1, (1, G, G)),
        rng.normal(0, 8, (2 * K, G, G)), rng.uniform(-0.5, 0.5, (2 * K, G, G)))) for _ in range(4)]
    prior = center_prior(G, 1.7998)
    expected = np.stack([decode_single(*b, prior, 1.7998) for b in batch])
    tensors = [torch.from_numpy(np.stack([b[i] for b in batch])) for i in range(4)]
    got = decode_batch_torch(*tensors, torch.from_numpy(prior), 1.7998).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_center_prior_shape_and_peak():
    p = center_prior(48)
    assert p.shape == (48, 48)
    assert np.unravel_index(p.argmax(), p.shape) == (24, 24)
    assert p.max() == pytest.approx(1 / 1.8, rel=1e-6)
