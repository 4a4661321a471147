"""DistributedDataParallel: two CPU processes (gloo) train together; their weights stay equal,
only rank 0 writes, and with fixed batch norms two processes of batch 2 take the same steps as
one process of batch 4 (with the same random draws per sample: image noise here)."""
from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp

from movenet.checkpoint import read_checkpoint
from movenet.train import LAST, Trainer, build_loss, init_distributed
from train_helpers import SyntheticPoses, free_port, tiny_config, untimed, val_data


def _config(batch_size: int):
    return tiny_config(**{"model.overrides.input_size": 64, "batch_size": batch_size, "threads": 1,
                          "optim.freeze_bn": True, "optim.lr": 1e-3, "device": "cpu"})


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    env = init_distributed("cpu")
    try:
        cfg = _config(batch_size=2)
        trainer = Trainer(cfg, out, SyntheticPoses(8, 64, noise=30.0), val_data(4, 64), build_loss(cfg), env=env,
                          verbose=False)
        state = trainer.fit()
        torch.save({"weights": trainer.model.state_dict(), "steps": state.step,
                    "history": state.history}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_training_matches_one_process(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 2  # 8 samples / 2 processes / batch 2
    for name, w in r0["weights"].items():
        assert torch.equal(w, r1["weights"][name]), name
    assert untimed(r0["history"]) == untimed(r1["history"])  # losses averaged over, and validation shared with, all processes
    assert "val_pck" in r0["history"][-1]
    ckpt = read_checkpoint(out / LAST)  # written once, by rank 0
    assert ckpt["step"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "last.pt", "rank0.pt", "rank1.pt"]

    cfg = _config(batch_size=4)
    single = Trainer(cfg, tmp_path / "one", SyntheticPoses(8, 64, noise=30.0), None, build_loss(cfg), verbose=False)
    single.fit()
    assert single.state.step == 2
    for name, w in single.model.state_dict().items():
        if w.is_floating_point():
            torch.testing.assert_close(r0["weights"][name], w, rtol=1e-4, atol=1e-5, msg=name)
