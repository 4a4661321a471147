"""create_predictor: which backend a spec runs in, and the threads it is given (no model loaded)."""
from __future__ import annotations

import pytest
import torch

import movenet.checkpoint
import movenet.predict
from movenet.errors import MoveNetError
from movenet.predict import create_predictor


def test_an_exported_file_runs_in_its_runtime_whatever_the_case_of_its_suffix(monkeypatch):
    opened = []
    monkeypatch.setattr(movenet.predict, "file_predictor", lambda spec, threads=None: opened.append(spec) or spec)
    assert create_predictor("M.ONNX") == "M.ONNX"
    assert create_predictor("m.TFLite", backend="onnx") == "m.TFLite"
    assert opened == ["M.ONNX", "m.TFLite"]


@pytest.mark.parametrize("backend", ["tf", "TORCH", ""])
def test_only_torch_and_onnx_backends(backend):
    with pytest.raises(MoveNetError, match=f"backend {backend!r}: torch or onnx"):
        create_predictor("lightning", backend=backend)


def test_threads_set_torchs_threads(monkeypatch):
    monkeypatch.setattr(movenet.checkpoint, "load_model", lambda spec: ("model", "schema"))
    monkeypatch.setattr(movenet.predict, "TorchPredictor", lambda model, schema: (model, schema))
    before = torch.get_num_threads()
    try:
        assert create_predictor("run.pt", threads=2) == ("model", "schema")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
