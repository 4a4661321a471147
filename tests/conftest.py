"""Shared fixtures. Tests that need ../shared (real data, reference models) or Google's
weights skip cleanly where those are absent."""
from __future__ import annotations

from pathlib import Path

import pytest

try:
    import torch
except ImportError:  # the torch-free runtime is tested without it
    torch = None

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.exists():  # a checkout elsewhere: look beside the repository root
    SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "README.md").exists():
        pytest.skip("../shared is not available")
    return SHARED


@pytest.fixture(scope="session")
def lsp_dir(shared_dir) -> Path:
    d = shared_dir / "data" / "lsp"
    if not (d / "joints.mat").exists():
        pytest.skip("LSP data not available")
    return d


@pytest.fixture(scope="session")
def coco_mini(shared_dir) -> Path:
    d = shared_dir / "data" / "coco-mini"
    if not (d / "person_keypoints.json").exists():
        pytest.skip("coco-mini not available")
    return d


@pytest.fixture(scope="session")
def reference_dir(shared_dir) -> Path:
    return shared_dir / "reference"


def _official(name: str):
    """Skipped only where Google's files cannot be had; weights that no longer fit our model,
    or a conversion that fails, fail the tests that use them."""
    from movenet import weights
    from movenet.checkpoint import load_model
    from movenet.errors import MoveNetError

    if not weights.checkpoint_path(name).exists():
        try:
            weights.fetch_tfjs([name])
        except MoveNetError as e:
            pytest.skip(f"Google's {name} weights unavailable: {e}")
    return load_model(name, verbose=False)[0]


@pytest.fixture(scope="session")
def lightning():
    """Google's Lightning converted to our model (eval mode)."""
    return _official("lightning")


@pytest.fixture(scope="session")
def thunder():
    return _official("thunder")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tests run small tensors: one intra-op thread is as fast, and on a busy CPU much
    faster than several busy-waiting ones. Results do not depend on it."""
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
