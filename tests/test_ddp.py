"""DistributedDataParallel: two CPU processes (gloo) train together; their weights stay equal,
only rank 0 writes, and with fixed batch norms two processes of batch 2 take the same steps as
one process of batch 4 (with the same random draws per sample: image noise here). Two "nodes"
through torchrun's command line: files present on one node only stop both."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from movenet.checkpoint import read_checkpoint
from movenet.train import LAST, Trainer, build_loss, evaluate, init_distributed
from train_helpers import SyntheticPoses, free_port, tiny_config, untimed, val_data, write_coco_folder

ROOT = Path(__file__).resolve().parents[1]


def _config(batch_size: int):
    return tiny_config(**{"model.overrides.input_size": 64, "batch_size": batch_size, "threads": 1,
                          "optim.freeze_bn": True, "optim.lr": 1e-3, "device": "cpu"})


def _leave() -> None:
    """End a spawned worker without the interpreter's teardown, as ``movenet.cli.entry`` ends a
    torchrun worker: gloo's threads now and then abort it (SIGABRT) after destroy_process_group."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    env = init_distributed("cpu")
    try:
        cfg = _config(batch_size=2)
        cfg.calibrate_distance_offset = [1.8, 1000.0]
        val = val_data(5, 64)  # shares of 3 and 2 crops
        trainer = Trainer(cfg, out, SyntheticPoses(8, 64, noise=30.0), val, build_loss(cfg), env=env,
                          verbose=False)
        state = trainer.fit()
        shared = trainer._validate(state.epoch)  # each process its share, scored together
        alone, _ = evaluate(trainer.eval_model(), val, 4, torch.device("cpu"), loss_fn=trainer.loss_fn,
                            distance_offsets=cfg.calibrate_distance_offset)  # this process, every crop
        torch.save({"weights": trainer.model.state_dict(), "steps": state.step, "history": state.history,
                    "shared": shared, "alone": alone}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()
    _leave()


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
    assert r0["shared"] == r1["shared"] and set(r0["shared"]) == set(r0["alone"]) > {"pck", "ap", "loss"}
    for key, value in r0["alone"].items():  # a validation split between processes scores every crop once
        assert r0["shared"][key] == pytest.approx(value, rel=1e-6), key
    ckpt = read_checkpoint(out / LAST)  # written once, by rank 0
    assert ckpt["step"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "curves.png", "last.pt", "rank0.pt",
                                                 "rank1.pt"]

    cfg = _config(batch_size=4)
    single = Trainer(cfg, tmp_path / "one", SyntheticPoses(8, 64, noise=30.0), None, build_loss(cfg), verbose=False)
    single.fit()
    assert single.state.step == 2
    ours, theirs = r0["history"][-1], single.state.history[-1]  # the epoch's mean loss over all 8 samples
    assert ours["train_images"] == theirs["train_images"] == 8
    assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-4)
    for name, w in single.model.state_dict().items():
        if w.is_floating_point():
            torch.testing.assert_close(r0["weights"][name], w, rtol=1e-4, atol=1e-5, msg=name)


def _resume_worker(rank: int, port: int, out: str) -> None:
    """One run to max_steps 3, and one stopped by max_steps 1 inside its first epoch, then resumed
    to 3 (three trainers, one after the other, in the same two processes)."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    env = init_distributed("cpu")
    try:
        def trainer(max_steps: int, folder: str) -> Trainer:
            cfg = _config(batch_size=1)
            cfg.epochs, cfg.max_steps = 2, max_steps
            return Trainer(cfg, os.path.join(out, folder), SyntheticPoses(8, 64, noise=30.0), None,
                           build_loss(cfg), env=env, verbose=False)
        full = trainer(6, "full").fit()
        trainer(1, "cut").fit()
        resumed = trainer(6, "cut")
        resumed.resume(os.path.join(out, "cut", LAST))
        resumed.fit()
        torch.save({"full": full.history, "resumed": resumed.state.history}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()
    _leave()


def test_two_processes_resume_inside_an_epoch_with_the_epochs_losses(tmp_path):
    """The unfinished epoch's loss sums of every process travel in the checkpoint (before, rank 0's
    were saved, and counted once per process on resuming)."""
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_resume_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    r0 = torch.load(out / "rank0.pt")
    assert [h["epoch"] for h in r0["full"]] == [1, 1.5] and [h["epoch"] for h in r0["resumed"]] == [0.25, 1, 1.5]
    assert untimed(r0["resumed"][1:]) == untimed(r0["full"])


def _two_nodes(tmp_path, *args: str) -> list[tuple[int, str]]:
    """`torchrun --nnodes 2 --node_rank N --nproc_per_node 1 -m movenet.cli train ARGS` for N = 0
    and 1 on this machine, each "node" in its own working directory (its own disk, as far as relative
    paths go): (exit status, stderr) per node."""
    port, procs, logs = free_port(), [], []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "PYTHONFAULTHANDLER": "1", "TMPDIR": str(tmp_path)}  # (torchrun's log folders: not left in /tmp)
    for node in (0, 1):
        cwd = tmp_path / f"node{node}"
        cwd.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
               "-m", "movenet.cli", "train", *args]
        # stderr to files: a pipe read one process after the other could fill and stall the other
        logs.append(open(tmp_path / f"node{node}.stderr", "w+"))
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=logs[-1], text=True,
                                      start_new_session=True))
    deadline = time.monotonic() + 120
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGABRT, signal.SIGKILL):  # SIGABRT: every thread's stack into the log
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
            time.sleep(3)
        for p in procs:
            p.wait()
        tails = [(f.seek(0), f.read()[-6000:])[1] for f in logs]
        pytest.fail("the two nodes did not finish in 120 s:\n" + "\n".join(
            f"--- node {n} stderr:\n{t}" for n, t in enumerate(tails)))
    errors = []
    for f in logs:
        f.seek(0)
        errors.append(f.read())
        f.close()
    return [(p.returncode, err) for p, err in zip(procs, errors)]


def test_two_nodes_through_torchrun_cli(tmp_path):
    """Two nodes of one process each: data, a run folder or a resumed checkpoint present on one
    node only stops both nodes with a message (not one node waiting for the other until the
    timeout); with copies on each node both train, and only global rank 0 writes (both have
    LOCAL_RANK 0); resumed from copies, the run goes on."""
    data = tmp_path / "node0" / "data"  # relative paths: each node reads its own copy
    write_coco_folder(data, 8, 64)
    config = tmp_path / "two_nodes.yaml"
    config.write_text(
        "model: {name: mobilenetv2_050, overrides: {input_size: 64, head_channels: 32}}\n"
        "data: {sources: [{path: data}], val_fraction: 0.25, num_workers: 0}\n"
        "optim: {lr: 1.0e-3, warmup_epochs: 0.0, freeze_bn: true}\n"
        "log: {tensorboard: false, images: 0}\n"
        "epochs: 2\nbatch_size: 1\nval_batch_size: 4\nthreads: 1\ndevice: cpu\n")
    (rc0, err0), (rc1, err1) = _two_nodes(tmp_path, str(config), "--out", "run")
    assert rc0 != 0 and "stopped with another process of this run" in err0
    assert rc1 != 0 and "movenet: error: " in err1 and "two_nodes.yaml: data.sources data not found" in err1
    assert not (tmp_path / "node0" / "run").exists()

    shutil.copytree(data, tmp_path / "node1" / "data")
    for rc, err in _two_nodes(tmp_path, str(config), "--out", "run"):
        assert rc == 0, err[-3000:]
    assert not (tmp_path / "node1" / "run").exists()
    run = tmp_path / "node0" / "run"
    assert {"config.yaml", "last.pt", "best.pt"} <= {p.name for p in run.iterdir()}
    ckpt = read_checkpoint(run / LAST)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 6  # 6 training images / 2 processes / batch 1, twice
    assert "val_pck" in ckpt["metrics"]

    (rc0, err0), (rc1, err1) = _two_nodes(tmp_path, str(config), "--out", "run")
    assert rc0 != 0 and "run: already holds a run (last.pt)" in err0
    assert rc1 != 0 and "stopped with another process of this run" in err1

    (rc0, err0), (rc1, err1) = _two_nodes(tmp_path, str(config), "epochs=3", "--resume", "run")
    assert rc0 != 0 and "stopped with another process of this run" in err0
    assert rc1 != 0 and "run/last.pt: no checkpoint to resume from" in err1

    shutil.copytree(run, tmp_path / "node1" / "run")
    for rc, err in _two_nodes(tmp_path, str(config), "epochs=3", "--resume", "run"):
        assert rc == 0, err[-3000:]
    assert read_checkpoint(run / LAST)["step"] == 9
    assert read_checkpoint(tmp_path / "node1" / "run" / LAST)["step"] == 6  # the copy was only read


def test_a_node_failing_inside_training_stops_the_other_with_one_line(tmp_path):
    """Node 1's copy of the images is corrupt: it fails at its first batch, after the start-up
    checks agreed; node 0, inside DDP's collectives by then, loses its peer and says so in one
    line instead of a traceback."""
    data = tmp_path / "node0" / "data"
    write_coco_folder(data, 8, 64)
    shutil.copytree(data, tmp_path / "node1" / "data")
    for image in (tmp_path / "node1" / "data" / "images").iterdir():
        image.write_bytes(b"not an image")
    config = tmp_path / "two_nodes.yaml"
    config.write_text(
        "model: {name: mobilenetv2_050, overrides: {input_size: 64, head_channels: 32}}\n"
        "data: {sources: [{path: data}], val_fraction: 0.25, num_workers: 0}\n"
        "log: {tensorboard: false, images: 0}\n"
        "epochs: 2\nbatch_size: 1\nval_batch_size: 4\nthreads: 1\ndevice: cpu\n")
    (rc0, err0), (rc1, err1) = _two_nodes(tmp_path, str(config), "--out", "run")
    assert rc1 != 0 and re.search(r"movenet: error: data/images/\d\.png: not a readable image", err1)
    assert rc0 != 0 and "movenet: error: stopped with another process of this run, which failed" in err0
    assert "[rank0]: Traceback" not in err0 and "[rank1]: Traceback" not in err1
    assert not (tmp_path / "node0" / "run" / "last.pt").exists()


def _waiting_worker(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    from movenet.train import any_process, stopped_from_outside

    env = init_distributed("cpu", timeout_s=3.0)  # it also bounds the start-up rendezvous
    if rank == 1:  # a machine that stopped answering: it never joins the collective in time
        time.sleep(10)
        return
    start = time.monotonic()
    try:
        any_process(False, env)
        message = "no error"
    except RuntimeError as e:  # what train.run turns into its one-line error
        message = str(stopped_from_outside(e, env))
    finally:
        torch.distributed.destroy_process_group()  # as train.run does (without: SIGABRT at exit)
    Path(out, "rank0.txt").write_text(f"{time.monotonic() - start:.1f}\n{message}")


def test_process_group_timeout_stops_a_process_waiting_for_a_lost_peer(tmp_path):
    """``dist_timeout_s``: a process whose peer stopped answering stops after that long with the
    one-line error, instead of PyTorch's default 10-30 minutes."""
    # forked, not spawned: both processes start with everything imported, so the rendezvous
    # (bounded by the same 3 s) does not wait on one process' slower imports on a busy machine
    mp.start_processes(_waiting_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    seconds, message = (tmp_path / "rank0.txt").read_text().split("\n", 1)
    assert 2.5 <= float(seconds) < 8, seconds  # without the timeout: when the peer exits, at 10 s
    assert message.startswith("stopped with another process of this run, which failed or stopped answering")


def test_a_torchrun_worker_leaves_with_its_status_and_all_its_output(tmp_path):
    """Under torchrun (WORLD_SIZE > 1) the command ends without the interpreter's teardown (see
    ``movenet.cli.entry``); what it wrote to piped (buffered) streams still arrives, and its exit
    status is the command's."""
    env = {**os.environ, "WORLD_SIZE": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONUNBUFFERED", None)  # buffered, as a pipe is by default
    done = subprocess.run([sys.executable, "-m", "movenet", "weights", "where"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    missing = tmp_path / "missing.jpg"
    done = subprocess.run([sys.executable, "-m", "movenet", "predict", str(missing)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stderr == f"movenet: error: {missing}: file not found\n"


def _agreeing_worker(rank: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    from movenet.errors import MoveNetError, SaidElsewhere
    from movenet.train import agreed

    env = init_distributed("cpu")
    outcomes = []
    try:
        for case, failing in (("both", (0, 1)), ("rank 1", (1,)), ("both, other machines", (0, 1))):
            os.environ["GROUP_RANK"] = str(rank) if case.endswith("machines") else "0"

            def check():
                if rank in failing:
                    raise MoveNetError("config.yaml: data.sources data not found")

            try:
                agreed(env, check)
                outcomes.append((case, "went on"))
            except SaidElsewhere:
                outcomes.append((case, "quiet"))
            except MoveNetError as e:
                outcomes.append((case, str(e)))
        torch.save(outcomes, os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()
    _leave()


def test_processes_of_one_machine_say_a_shared_failure_once(tmp_path):
    """Under torchrun every process meets the same bad config: one line per machine, not one per
    process (and rank 0, still well, says nothing where a process beside it said why)."""
    mp.spawn(_agreeing_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    said = [dict(torch.load(tmp_path / f"rank{rank}.pt")) for rank in (0, 1)]
    message = "config.yaml: data.sources data not found"
    assert said[0] == {"both": message, "rank 1": "quiet", "both, other machines": message}
    assert said[1] == {"both": "quiet", "rank 1": message, "both, other machines": message}


def _processes_naming(text: str) -> list[int]:
    """PIDs of the processes whose command line holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_hard_kill_of_torchrun_stops_its_workers_as_ctrl_c_does(tmp_path):
    """torchrun starts its workers in sessions of their own: SIGKILL to torchrun's process group
    left them training, holding the run folder. Now they stop, writing last.pt."""
    write_coco_folder(tmp_path / "data", 8, 64)
    config = tmp_path / "long.yaml"
    config.write_text(
        "model: {name: mobilenetv2_050, overrides: {input_size: 64, head_channels: 32}}\n"
        "data: {sources: [{path: data}], val_fraction: 0.25, num_workers: 0}\n"
        "optim: {freeze_bn: true}\nlog: {tensorboard: false, images: 0}\n"
        "epochs: 100000\nbatch_size: 1\nval_every: 1000\nthreads: 1\ndevice: cpu\n")
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "TMPDIR": str(tmp_path)}  # (torchrun's log folders: not left in /tmp)
    with open(tmp_path / "stderr", "w+") as log:
        torchrun = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
             "movenet.cli", "train", str(config), "--out", str(run)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while not (run / LAST).exists() and time.monotonic() < deadline and torchrun.poll() is None:
                time.sleep(0.2)
            assert (run / LAST).exists(), (log.seek(0), log.read()[-3000:])[1]
            os.killpg(torchrun.pid, signal.SIGKILL)
            torchrun.wait()
            deadline = time.monotonic() + 30
            while _processes_naming(str(run)) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = _processes_naming(str(run))
        finally:
            for pid in _processes_naming(str(run)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        log.seek(0)
        err = log.read()
    assert not left, err[-3000:]
    assert "wrote" in err and "continue with --resume" in err and read_checkpoint(run / LAST)["step"] > 0
