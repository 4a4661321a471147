"""The training engine on CUDA GPUs (skipped without one): mixed precision (float16 with loss
scaling, bfloat16) learns like float32, a resumed mixed-precision run continues the interrupted
one, a checkpoint trained on a GPU predicts on a machine without one, and DDP over NCCL with
SyncBatchNorm on two GPUs (skipped with fewer) takes the steps of one process of the two
processes' batches together."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from movenet.checkpoint import load_model, read_checkpoint
from movenet.train import LAST, DistEnv, Trainer, build_loss, init_distributed
from train_helpers import (CountingLoss, SyntheticPoses, draw, free_port, person, resume_config, resume_trainer,
                           tiny_config, val_data)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**overrides):
    return tiny_config(**{"model.overrides.input_size": 64, "batch_size": 2, "threads": 1,
                          "device": "cuda", **overrides})


def _cuda() -> DistEnv:
    return DistEnv(device=torch.device("cuda", 0))


@pytest.fixture
def exact_cuda():
    """Deterministic cuDNN kernels and no TF32, so that GPU runs compare to each other and to
    the CPU closely."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) = saved


@pytest.mark.parametrize("amp, dtype", [(False, "float16"), (True, "float16"), (True, "bfloat16")])
def test_overfits_one_batch_on_cuda(tmp_path, amp, dtype):
    cfg = _cfg(**{"optim.lr": 1e-2, "amp": amp, "amp_dtype": dtype})
    loss = CountingLoss(cfg)
    trainer = Trainer(cfg, tmp_path, SyntheticPoses(2, 64, repeat=80), val_data(2, 64), loss,
                      env=_cuda(), verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = trainer.fit()
    # float16's first steps are skipped by the scaler, the schedule goes on without a warning
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]
    assert next(trainer.model.parameters()).is_cuda
    assert trainer.amp == (getattr(torch, dtype) if amp else None)
    assert trainer.scaler.is_enabled() == (amp and dtype == "float16")
    assert len(loss.values) == 80
    assert loss.values[-1] < 0.1 * loss.values[0], loss.values[::10]
    assert 0.0 <= state.history[-1]["val_pck"] <= 1.0
    weights = read_checkpoint(tmp_path / LAST)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert all(w.device.type == "cpu" for w in weights.values())


def test_resumed_amp_run_continues_the_interrupted_one(tmp_path, exact_cuda):
    cfg = resume_config(**{"device": "cuda", "amp": True, "amp_dtype": "float16"})
    full_loss = CountingLoss(cfg)
    full = resume_trainer(cfg, tmp_path / "full", full_loss, _cuda())
    full.fit()
    assert len(full_loss.values) == 12

    broken_loss = CountingLoss(cfg, fail_at=7)
    with pytest.raises(KeyboardInterrupt):
        resume_trainer(cfg, tmp_path / "cut", broken_loss, _cuda()).fit()
    saved = read_checkpoint(tmp_path / "cut" / LAST)
    assert saved["epoch"] == 1 and "scale" in saved["train_state"]["scaler"]

    resumed_loss = CountingLoss(cfg)
    resumed = resume_trainer(cfg, tmp_path / "cut", resumed_loss, _cuda())
    resumed.resume(tmp_path / "cut" / LAST)
    resumed.fit()
    assert resumed.scaler.get_scale() == full.scaler.get_scale()
    torch.testing.assert_close(broken_loss.values[:4] + resumed_loss.values, full_loss.values,
                               rtol=1e-3, atol=1e-5)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


def test_cuda_checkpoint_predicts_without_a_gpu(tmp_path, exact_cuda):
    cfg = _cfg(**{"amp": True})
    trainer = Trainer(cfg, tmp_path, SyntheticPoses(4, 64), None, build_loss(cfg), env=_cuda(), verbose=False)
    trainer.fit()
    model, _ = load_model(tmp_path / LAST)
    assert all(p.device.type == "cpu" for p in model.parameters())
    image = SyntheticPoses(1, 64)[0]["image"][None]
    with torch.no_grad():
        on_gpu = trainer.eval_model().eval()(image.cuda())
        on_cpu = model.eval()(image)
    for a, b in zip(on_gpu, on_cpu):
        torch.testing.assert_close(a.float().cpu(), b, rtol=1e-3, atol=1e-4)

    # `movenet predict` in a process that sees no GPU
    import cv2

    cv2.imwrite(str(tmp_path / "person.png"), draw(person(0, 64), 64))
    proc = subprocess.run(
        [sys.executable, "-m", "movenet.cli", "predict", str(tmp_path / "person.png"), "--model",
         str(tmp_path / LAST), "--json", str(tmp_path / "pose.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "pose.json").read_text())


# ---------------------------------------------------------------- two GPUs
def _ddp_config(batch_size: int):
    return _cfg(**{"batch_size": batch_size, "sync_bn": True, "amp": False, "optim.lr": 1e-3})


def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32 = True, False
    env = init_distributed("cuda")
    try:
        cfg = _ddp_config(batch_size=2)
        trainer = Trainer(cfg, out, SyntheticPoses(8, 64), val_data(4, 64), build_loss(cfg), env=env,
                          verbose=False)
        sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in trainer.model.modules())
        trainer.fit()
        torch.save({"weights": {k: v.cpu() for k, v in trainer.model.state_dict().items()},
                    "sync_bn_layers": sync, "device": str(env.device)}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_nccl_ddp_with_sync_bn_matches_one_process(tmp_path, exact_cuda):
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert (r0["device"], r1["device"]) == ("cuda:0", "cuda:1")
    assert r0["sync_bn_layers"] > 0
    for name, w in r0["weights"].items():
        assert torch.equal(w, r1["weights"][name]), name
    model, _ = load_model(out / LAST)  # a plain model again: SyncBatchNorm keeps BatchNorm's keys
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())

    # batch statistics over both processes' samples: the steps of one process with both batches
    cfg = _ddp_config(batch_size=4)
    single = Trainer(cfg, tmp_path / "one", SyntheticPoses(8, 64), None, build_loss(cfg), env=_cuda(),
                     verbose=False)
    single.fit()
    for name, w in single.model.state_dict().items():
        if w.is_floating_point():
            torch.testing.assert_close(r0["weights"][name], w.cpu(), rtol=1e-3, atol=1e-4, msg=name)
