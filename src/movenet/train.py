"""Training engine: ``movenet train CONFIG.yaml [key=value ...] [--resume [RUN|CKPT]] [--out DIR]``.

One process or many (``torchrun``: DistributedDataParallel, one process per GPU or CPU
process with gloo). Per optimiser step: forward (AMP on CUDA), loss, NaN/inf check agreed by
all processes, backward, gradient clipping on the unscaled gradients, step, per-step learning
rate schedule, EMA update. Per epoch: validation (each process predicts its share of the crops,
the main process scores them: PCK@0.2 torso and COCO keypoint AP in original image pixels),
TensorBoard scalars and images, ``last.pt`` and ``best.pt`` written atomically with everything
needed to resume exactly. With
``final_init_weight`` > 0 a finished run also writes ``final.pt``: its last weights mixed with
the ones it started from, validated like an epoch.

The data of an epoch (order, and each sample's random augmentation) depends only on (seed,
epoch), not on the loader workers, and the random states are saved with the checkpoint, so a run
resumed from ``last.pt`` repeats the uninterrupted run.

Interruptions: Ctrl-C or SIGTERM (a scheduler's preemption) lets the current optimiser step
finish, writes ``last.pt`` at that point of the epoch and stops; ``--resume`` continues with the
next batch of the same epoch, exactly as the uninterrupted run. A second Ctrl-C stops at once.
``checkpoint_every_steps`` also writes ``last.pt`` regularly inside an epoch, against hard kills.
"""
from __future__ import annotations

import atexit
import copy
import datetime
import functools
import hashlib
import math
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

from .checkpoint import check_finite_weights, read_checkpoint, save_checkpoint, weighted_state, weights_misfit
from .config import TrainConfig, check_source_paths, config_changes, load_config, save_config
from .datasets import merge_coco
from .errors import (Interrupted, MoveNetError, SaidElsewhere, counted, first_line, one_line_data_warnings,
                     one_line_data_warnings_installed, some_of)
from .fileio import LOCK_FILE, atomic_path, check_writable, lock_folder, make_folder, write_text_atomic
from .pretrained import fresh_keypoints, take_keypoint_channels
from .schema import COCO17, KeypointSchema

LAST, BEST, FINAL, CURVES = "last.pt", "best.pt", "final.pt", "curves.png"
RUN_FILES = {LAST, BEST, FINAL, CURVES, "config.yaml", "tensorboard"}  # what a run folder holds
# fileio.atomic_path's temporary names for them: ".last.pt.<random>.tmp.pt"
UNFINISHED_WRITE = re.compile(r"\.(last\.pt|best\.pt|final\.pt|curves\.png|config(\.step\d+)?\.yaml)"
                              r"\.[^/]+\.tmp\.(pt|png|yaml)")
OTHER_PROCESS_FAILED = ("stopped with another process of this run, which could not start it (its message says "
                        "why; under torchrun every machine needs the data and a resumed checkpoint at the same path)")


# ---------------------------------------------------------------- processes and devices
@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: float = 0.0) -> DistEnv:
    """From torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); a single
    process without it. NCCL on CUDA, gloo on CPU. ``timeout_s`` > 0: how long a collective
    waits for the other processes (0: PyTorch's default)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise MoveNetError(f"device {device}: CUDA is not available")
    if use_cuda:
        index = local if device in ("auto", "cuda") else int(device.split(":")[1])
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if "TORCHELASTIC_RUN_ID" in os.environ:  # (one process under torchrun, too)
        stop_with_parent()
    if world > 1 and not dist.is_initialized():
        timeout = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s > 0 else {}
        dist.init_process_group("nccl" if use_cuda else "gloo", **timeout)
    return DistEnv(rank, world, local, dev)


def stop_with_parent() -> None:
    """SIGTERM for this process when its parent dies (Linux): torchrun starts its workers in
    sessions of their own, so a hard kill of torchrun (SIGKILL to its process group) would leave
    them training and holding the run folder. SIGTERM stops a worker as Ctrl-C does."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request
        os.kill(os.getpid(), signal.SIGTERM)


def any_process(flag: bool, env: DistEnv) -> bool:
    """``flag`` or-ed over all processes. A check whose answer may differ between machines (a
    file on one node's disk) must stop every process: one that went on alone would wait in its
    first collective until the process group's timeout."""
    if not env.distributed:
        return flag
    t = torch.tensor([float(flag)], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def stopped_from_outside(error: RuntimeError, env: DistEnv) -> MoveNetError | None:
    """The one-line error for what stops a run from outside this process: another process of
    the run lost (it died, its own output says why, or stopped answering), a data loader worker
    killed (by the system, short of memory). None for anything else."""
    text = str(error).strip()
    if env.distributed and (isinstance(error, dist.DistError) or "gloo" in text or "NCCL" in text):
        # "[.../gloo/transport/tcp/pair.cc:553] Connection closed by peer [host]:port. This is ..."
        first = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0] if text else type(error).__name__)
        return MoveNetError("stopped with another process of this run, which failed or stopped answering "
                            f"({first.split('. ')[0]}; its own output says why)")
    if text.startswith("DataLoader worker (pid"):
        return MoveNetError(f"{text.rstrip('.')}: short of memory? fewer data.num_workers or a smaller "
                            "batch_size need less")
    return None


def agreed(env: DistEnv, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, where a ``MoveNetError`` on any process raises on all of them
    (there with ``OTHER_PROCESS_FAILED``): for the steps before the first collective that can fail
    on one machine only (its data, weights or checkpoint files)."""
    error, result = None, None
    try:
        result = fn(*args, **kwargs)
    except MoveNetError as e:
        error = e
    if not any_process(error is not None, env):
        return result
    if env.distributed:  # one line per machine for what its processes all met (a bad config)
        said = [None] * env.world_size
        dist.all_gather_object(said, (os.environ.get("GROUP_RANK", "0"), None if error is None else str(error)))
        node = said[env.rank][0]
        here = [(rank, message) for rank, (machine, message) in enumerate(said) if machine == node and message]
        if (error is None and here) or (error is not None and any(r < env.rank and m == str(error) for r, m in here)):
            raise SaidElsewhere(str(error or OTHER_PROCESS_FAILED))
    raise error or MoveNetError(OTHER_PROCESS_FAILED)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- model
def build_model(cfg: TrainConfig, verbose: bool = True) -> nn.Module:
    """The configured model, initialised as ``cfg.init`` says (``pretrained.init_model``)."""
    from .model import MoveNet
    from .pretrained import init_model

    try:
        model = MoveNet(cfg.model_config())
    except (ValueError, TypeError) as e:
        raise MoveNetError(f"model {cfg.model.name}: {e}") from None
    message = init_model(model, cfg.init, verbose, cfg.keypoint_schema(), cfg.init_keypoints)
    if verbose:
        print(message, file=sys.stderr)
    return model


def check_model_and_weights(cfg: TrainConfig, label: str | os.PathLike, verbose: bool = False) -> None:
    """The model can be built, the weights the config names (``init``, ``distill.teacher``) are
    there and ``init``'s fit the model, before any data is read (``verbose``: say so when
    Google's or ImageNet weights are fetched)."""
    from .model import MoveNet
    from .pretrained import OFFICIAL_NAMES, init_model
    from .weights import split_input_size

    try:
        # built and run once: backbone_kwargs can build layers that cannot run
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # (torch's own words on such layers: ours follow)
            model = MoveNet(cfg.model_config()).eval()
            model(torch.zeros(1, 3, model.config.input_size, model.config.input_size))
    except (ValueError, TypeError, RuntimeError) as e:
        raise MoveNetError(f"{label}: model {cfg.model.name}: {first_line(e)}") from None
    for key, spec, builtin in (("init", cfg.init, ("scratch", "imagenet", *OFFICIAL_NAMES)),
                               ("distill.teacher", cfg.distill.teacher, OFFICIAL_NAMES)):
        if key == "distill.teacher" and not spec:
            continue
        name, _ = split_input_size(spec)
        if name not in builtin and not Path(name).is_file():
            where = "" if Path(name).is_absolute() else \
                f" (relative paths are taken from the working directory, {os.getcwd()})"
            raise MoveNetError(f"{label}: {key} {spec!r} is not one of {', '.join(builtin)} and no such checkpoint"
                               f"{where}")
    try:
        # (the trainer's model is built after the data)
        init_model(model, cfg.init, verbose, cfg.keypoint_schema(), cfg.init_keypoints)
    except MoveNetError as e:  # named as the setting it comes from, where it does not say so
        raise (e if str(e).startswith(("init", "imagenet")) else MoveNetError(f"init {e}")) from None


def batch_norms_folded(model: nn.Module, init: str) -> bool:
    """Whether the initial weights' batch norms are folded into their convolutions (identity
    statistics everywhere): Google's weights, and checkpoints trained from them with frozen
    batch norms. Training those in batch-statistics mode would change what every layer computes
    (``optim.freeze_bn`` unset freezes them)."""
    if init in ("scratch", "imagenet"):
        return False
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    # (the converted weights store a variance of 1 - eps, so that x / sqrt(var + eps) is x)
    return bool(norms) and all(bool((m.running_mean == 0).all() and ((m.running_var - 1).abs() <= 1e-3).all())
                               for m in norms)


def set_bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def freeze_backbone(model: nn.Module, stride: int) -> list[nn.Module]:
    """Stops gradients to the backbone's layers up to its stride-``stride`` output (0: none)
    and returns those layers, for the caller to keep in eval mode (their batch norms fixed)."""
    if not stride:
        return []
    layers = model.backbone.layers_to_stride(stride)
    for layer in layers:
        layer.requires_grad_(False)
    return layers


class ModelEMA:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float, warmup_steps: int):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup_steps, self.updates = decay, max(1, warmup_steps), 0

    def next_decay(self) -> float:
        """Counts an update and gives its decay, warmed up over the first updates."""
        self.updates += 1
        return self.decay * (1 - math.exp(-self.updates / self.warmup_steps))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.next_decay()
        own, new = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in new.items() if v.dtype.is_floating_point]
        others = [k for k, v in new.items() if not v.dtype.is_floating_point]
        # One fused call per list instead of two small kernels for each of the ~300 tensors of
        # a Lightning: far fewer kernel launches on a GPU (benchmarks/train_speed.py times both).
        torch._foreach_lerp_([own[k] for k in floats], [new[k] for k in floats], 1 - d)
        if others:
            torch._foreach_copy_([own[k] for k in others], [new[k] for k in others])

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


# ---------------------------------------------------------------- optimisation
def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam/AdamW; no weight decay on biases and normalisation weights (1-d tensors); the
    backbone's learning rate scaled by ``optim.backbone_lr_scale``."""
    o = cfg.optim
    split = o.backbone_lr_scale != 1.0  # unsplit: the two groups that earlier runs saved
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((split and name.startswith("backbone."), p.ndim <= 1), []).append(p)
    param_groups = [{"params": params, "weight_decay": 0.0 if no_decay else o.weight_decay,
                     "lr": o.lr * (o.backbone_lr_scale if backbone else 1.0)}
                    for (backbone, no_decay), params in sorted(groups.items())]
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(param_groups, lr=o.lr, betas=tuple(o.betas))


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warm-up, then cosine
    (down to ``min_lr_ratio``), step decay at epoch ``milestones`` or constant."""
    o = cfg.optim
    warmup = int(round(o.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if o.schedule == "constant":
        return 1.0
    if o.schedule == "step":
        epoch = step / steps_per_epoch
        return o.gamma ** sum(epoch >= m for m in o.milestones)
    total = max(cfg.epochs * steps_per_epoch - warmup, 1)
    progress = min((step - warmup) / total, 1.0)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- data
class EpochSampler(torch.utils.data.Sampler):
    """Indices of one epoch, fixed by (seed, epoch): a permutation, or a weighted draw with
    replacement; split between processes (rank::world) after padding to equal length.

    With ``with_seeds`` it yields ``(index, sample_seed)`` pairs for ``SeededSamples``: each
    position of the epoch's global order gets its own seed, also fixed by (seed, epoch)."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1,
                 weights: torch.Tensor | None = None, shuffle: bool = True, with_seeds: bool = False):
        self.size, self.seed, self.rank, self.world = size, seed, rank, world_size
        self.weights = weights if weights is not None and not torch.all(weights == weights[0]) else None
        self.shuffle, self.epoch, self.with_seeds = shuffle, 0, with_seeds
        self.per_rank = math.ceil(size / world_size)
        self.skip = 0  # indices of this epoch already used (a run resumed inside an epoch)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.per_rank - self.skip

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=g)
        elif self.shuffle:
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        total = self.per_rank * self.world
        order = torch.cat([order, order[: total - self.size]]) if total > self.size else order
        mine = order[self.rank::self.world][self.skip:].tolist()
        if not self.with_seeds:
            return iter(mine)
        seeds = torch.randint(0, 2**62, (total,), generator=g)[self.rank::self.world][self.skip:]
        return iter(zip(mine, seeds.tolist()))


class SeededSamples(torch.utils.data.Dataset):
    """``dataset[index]`` drawn with torch's, numpy's and Python's global generators seeded from
    ``sample_seed`` (and restored after), for keys ``(index, sample_seed)`` of ``EpochSampler``.
    The random augmentation of a position of an epoch then does not depend on which loader
    worker makes it: the same with 0 or 12 workers, persistent or not, on one process or
    split between several, and after a resume inside an epoch. A dataset must draw from those
    global generators (``PoseSampleDataset`` does): a generator object of its own is not reseeded."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, sample_seed = key
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed)
                np.random.seed(sample_seed % 2**32)
                random.seed(sample_seed)
                return self.dataset[index]
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def make_loader(dataset, batch_size: int, sampler: torch.utils.data.Sampler, workers: int,
                train: bool) -> torch.utils.data.DataLoader:
    """Training loaders keep their workers from epoch to epoch (their samples are seeded by
    ``SeededSamples``, not by the workers); validation loaders run once per epoch."""
    # The loader's own generator: its worker base seeds must not be drawn from (and move) the
    # global random state that checkpoints save.
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=train,
        pin_memory=torch.cuda.is_available(), generator=torch.Generator(),
        persistent_workers=train and workers > 0,
        worker_init_fn=functools.partial(_init_worker, one_line_data_warnings_installed()))
    if loader.persistent_workers:  # multiprocessing's exit handler ends them with a SIGTERM they ignore
        atexit.register(_stop_workers_at_exit, weakref.ref(loader))
    return loader


def _stop_workers_at_exit(loader_ref: weakref.ref) -> None:
    loader = loader_ref()
    if loader is not None:
        stop_workers(loader)


def _init_worker(one_line_warnings: bool, worker_id: int) -> None:
    # Workers started with `spawn` (macOS, Windows) do not inherit the CLI's warning format.
    if one_line_warnings:
        one_line_data_warnings()
    # SIGTERM to the whole process group (timeout, kill -- -PGID, a scheduler's preemption) must
    # not kill the workers under the main process, which saves last.pt at the step and then ends
    # them itself (stop_workers; at the latest when the interpreter exits: make_loader). Only the
    # first is ignored (they ignore SIGINT already).
    signal.signal(signal.SIGTERM, _ignore_first_sigterm)


def _ignore_first_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_workers(loader: torch.utils.data.DataLoader) -> None:
    """End a loader's persistent workers now, as the loader does: left to the interpreter's exit
    they are killed, and the loader reports a worker "killed by signal" in a traceback."""
    iterator = getattr(loader, "_iterator", None)  # (torch keeps persistent workers there)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def to_device(batch, device: torch.device):
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch


@dataclass
class ValData:
    """Validation samples plus the ground truth they are scored against: a COCO dict whose
    image and annotation ids are ``id * sources + source`` (``merge_coco``)."""

    samples: torch.utils.data.Dataset
    coco: dict
    sources: int = 1


def build_data(cfg: TrainConfig, schema: KeypointSchema = COCO17, verbose: bool = True, training: bool = True):
    """(train samples, ValData or None) from ``cfg.data`` (the split of ``samples``); train None
    without ``training`` (only the validation images are indexed)."""
    from . import samples

    train_parts, val_parts = samples.split_sources(cfg.data, schema)
    train, val = samples.datasets_from_parts(train_parts if training else None, val_parts, cfg.data, cfg.augment,
                                             schema, verbose)
    return train, (ValData(val, merge_coco([p.coco for p in val_parts]), len(val_parts)) if val is not None else None)


# ---------------------------------------------------------------- validation
@dataclass
class ValPredictions:
    """One process' share of a validation pass: keypoints in original image pixels per
    candidate distance offset ([n,K,3] each), the annotation ids they belong to, the summed loss."""

    ann_ids: np.ndarray
    keypoints: dict
    loss_sum: float = 0.0
    loss_n: int = 0
    skipped: int = 0  # crops of unreadable images (data.on_bad_image: skip), left out


@torch.no_grad()
def predict_validation(model: nn.Module, val: ValData, batch_size: int, device: torch.device,
                       workers: int = 0, loss_fn: Callable | None = None, amp: torch.dtype | None = None,
                       previews: int = 0, schema: KeypointSchema = COCO17,
                       memory_format: torch.memory_format = torch.contiguous_format,
                       offsets: Sequence[float] = (), indices: Sequence[int] | None = None
                       ) -> tuple[ValPredictions, list]:
    """Run ``model`` on the validation crops ``indices`` (default all) and decode them with each
    of ``offsets`` (default the model's own). Returns the predictions and up to ``previews``
    crops with the predicted skeleton drawn (first offset)."""
    from .decode import decode_batch_torch
    from .draw import draw_pose

    was_training = model.training
    model.eval()
    indices = list(range(len(val.samples))) if indices is None else list(indices)
    loader = make_loader(val.samples, batch_size, indices, workers, train=False)
    candidates = [float(v) for v in offsets] or [float(model.distance_offset)]
    out = ValPredictions(np.zeros(0, np.int64), {c: np.zeros((0, schema.num_keypoints, 3)) for c in candidates})
    ann_ids, keypoints, drawn = [], {c: [] for c in candidates}, []
    for batch in loader:
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None and device.type == "cuda"):
            outputs = model(batch["image"].contiguous(memory_format=memory_format))
        outputs = tuple(o.float() for o in outputs)
        if loss_fn is not None:
            loss, _ = loss_fn(outputs, batch)
            out.loss_sum += float(loss) * len(batch["image"])
            out.loss_n += len(batch["image"])
        skipped = batch["meta"].get("skipped")  # stand-ins for unreadable images (datasets of ours)
        keep = np.ones(len(batch["image"]), bool) if skipped is None else ~skipped.cpu().numpy()
        out.skipped += int((~keep).sum())
        box = batch["meta"]["box"].cpu().numpy()[keep]
        meta = batch["meta"]
        ann_ids.append((meta["ann_id"].cpu().numpy() * val.sources + meta["source"].cpu().numpy())[keep])
        for offset in candidates:
            kpts = decode_batch_torch(*outputs, model.center_prior, offset,
                                      float(model.coord_scale)).cpu().numpy()[keep]
            orig = kpts.copy()
            orig[..., 0] = box[:, None, 0] + kpts[..., 0] * box[:, None, 2]
            orig[..., 1] = box[:, None, 1] + kpts[..., 1] * box[:, None, 3]
            keypoints[offset].append(orig)
            if offset == candidates[0]:
                shown = kpts
        size = batch["image"].shape[-1]
        rows = np.flatnonzero(keep)
        for j in range(min(previews - len(drawn), len(shown))):
            img = batch["image"][int(rows[j])].permute(1, 2, 0).clamp(0, 255).byte().cpu().numpy()
            px = shown[j].copy()
            px[:, :2] *= size
            drawn.append(draw_pose(np.ascontiguousarray(img), px, schema))
    model.train(was_training)
    if ann_ids:
        out.ann_ids = np.concatenate(ann_ids)
        out.keypoints = {c: np.concatenate(k) for c, k in keypoints.items()}
    return out, drawn


def score_validation(parts: Sequence[ValPredictions], val: ValData, schema: KeypointSchema = COCO17,
                     select: str = "pck", calibrating: bool = False) -> dict:
    """PCK@0.2 torso and COCO keypoint AP of the predictions (the shares of all processes), and
    the mean loss. With several candidate offsets (``calibrating``) the one best in ``select``
    (pck | ap) is reported, as ``distance_offset``, with each candidate's scores."""
    from .metrics import coco_keypoint_ap, pck, torso_size
    from .runtime import pose_score

    ann_ids = np.concatenate([p.ann_ids for p in parts])
    if not len(ann_ids):
        return {}
    skipped = sum(p.skipped for p in parts)
    if len(np.unique(ann_ids)) != len(ann_ids) or len(ann_ids) + skipped != len(val.samples):
        raise RuntimeError(f"validation scored {len(np.unique(ann_ids))} distinct of {len(val.samples)} crops "
                           f"in {len(ann_ids)} predictions ({skipped} unreadable): the processes' shares "
                           "overlap or miss some")
    anns = {a["id"]: a for a in val.coco["annotations"]}
    gt = np.stack([np.asarray(anns[int(i)]["keypoints"], np.float64).reshape(-1, 3) for i in ann_ids])
    sigmas = np.asarray(schema.sigmas)

    def ap(kpts: np.ndarray) -> float:
        results = [{"image_id": anns[int(i)]["image_id"], "score": pose_score(k),
                    "keypoints": [round(float(v), 3) for v in k.reshape(-1)]} for i, k in zip(ann_ids, kpts)]
        return coco_keypoint_ap(val.coco, results, sigmas)["AP"]

    candidates = list(parts[0].keypoints)
    kpts = {c: np.concatenate([p.keypoints[c] for p in parts]) for c in candidates}
    scores = {}
    for offset in candidates:
        scores[offset] = {"pck": pck(kpts[offset][..., :2], gt, 0.2 * torso_size(gt, schema))[1]}
        if select == "ap" or len(candidates) == 1:
            scores[offset]["ap"] = ap(kpts[offset])
    chosen = max(candidates, key=lambda c: scores[c][select])  # the first of equals
    metrics = dict(scores[chosen])
    if "ap" not in metrics:
        metrics["ap"] = ap(kpts[chosen])
    if calibrating:
        metrics["distance_offset"] = chosen
        metrics.update({f"{k}_at_offset_{offset:g}": v for offset in candidates for k, v in scores[offset].items()})
    loss_n = sum(p.loss_n for p in parts)
    if loss_n:
        metrics["loss"] = sum(p.loss_sum for p in parts) / loss_n
    return metrics


def evaluate(model: nn.Module, val: ValData, batch_size: int, device: torch.device,
             workers: int = 0, loss_fn: Callable | None = None, amp: torch.dtype | None = None,
             previews: int = 0, schema: KeypointSchema = COCO17,
             memory_format: torch.memory_format = torch.contiguous_format,
             distance_offsets: Sequence[float] = (), select: str = "pck") -> tuple[dict, list]:
    """PCK@0.2 torso and COCO keypoint AP of ``model`` on the validation crops, in original
    image pixels (crop box of each sample's meta), plus the mean loss. ``amp``: the autocast
    dtype on CUDA (None: float32). ``distance_offsets``: decode with each of these instead of
    the model's own and report the one best in ``select`` (pck | ap), as ``distance_offset``.
    Returns (metrics, up to ``previews`` images with predicted skeletons drawn)."""
    part, drawn = predict_validation(model, val, batch_size, device, workers, loss_fn, amp, previews, schema,
                                     memory_format, distance_offsets)
    return score_validation([part], val, schema, select, bool(distance_offsets)), drawn


# Candidate offsets tried by `movenet calibrate` (and the recipes' calibrate_distance_offset):
# Google's 1.8 up to where the regressed keypoint barely counts.
CALIBRATION_OFFSETS = (1.8, 5.0, 10.0, 20.0, 50.0)


def calibrate_model(model: nn.Module, val: ValData, offsets: Sequence[float] = CALIBRATION_OFFSETS,
                    select: str = "pck", batch_size: int = 64, workers: int = 0,
                    schema: KeypointSchema = COCO17) -> dict:
    """Set ``model``'s keypoint-decoding distance offset to the one of ``offsets`` that scores
    best (``select``: pck | ap) on ``val``; returns ``evaluate``'s metrics, each offset's too."""
    device = next(model.parameters()).device
    metrics, _ = evaluate(model, val, batch_size, device, workers, distance_offsets=offsets, select=select,
                          schema=schema)
    if not metrics:
        raise MoveNetError("no validation person to calibrate on")
    model.distance_offset.fill_(metrics["distance_offset"])
    return metrics


# ---------------------------------------------------------------- the loop
class NonFiniteLoss(MoveNetError):
    pass


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps done
    best: float = -math.inf
    best_epoch: float = -1  # an epoch in part (0.75) where max_steps stopped inside one
    history: list = field(default_factory=list)
    batch_in_epoch: int = 0  # batches of the unfinished epoch already trained on
    epoch_sums: dict = field(default_factory=dict)  # their losses, summed over samples
    epoch_images: int = 0  # and the number of images (all processes)
    best_metric: str = "pck"  # what ``best`` measures (config.best_metric, or AP where PCK is undefined)


class Trainer:
    """Owns the model, optimiser, schedule, EMA, data loaders and writers of one run."""

    def __init__(self, cfg: TrainConfig, out_dir: str | os.PathLike, train_set, val: ValData | None,
                 loss_fn: Callable, model: nn.Module | None = None, teacher=None,
                 schema: KeypointSchema = COCO17, env: DistEnv | None = None, verbose: bool = True,
                 unlabeled=None):
        self.cfg, self.out_dir, self.val, self.loss_fn = cfg, Path(out_dir), val, loss_fn
        self.schema, self.teacher, self.verbose = schema, teacher, verbose
        self.env = env or DistEnv()
        dev = self.env.device
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed + self.env.rank)
        if model is None:
            model = agreed(self.env, build_model, cfg, verbose and self.env.is_main)
        self.model = model.to(dev)
        self.freeze_bn = cfg.optim.freeze_bn
        if self.freeze_bn is None:
            self.freeze_bn = batch_norms_folded(self.model, cfg.init)
            if self.freeze_bn and verbose and self.env.is_main:
                print(f"batch norms kept in eval mode: those of {cfg.init} are folded (optim.freeze_bn=false "
                      "trains them)", file=sys.stderr)
        self.frozen = freeze_backbone(self.model, cfg.optim.freeze_backbone_to_stride)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        # the weights the run starts from, for final.pt (taken before a resume loads others)
        self.init_state = ({k: v.detach().clone() for k, v in self.model.state_dict().items()}
                           if cfg.final_init_weight > 0 else None)
        # keypoints the initial weights lack start from random channels: final.pt keeps them trained
        self.fresh_keypoints = (fresh_keypoints(cfg.init, schema, cfg.init_keypoints)
                                if cfg.final_init_weight > 0 else [])
        if cfg.sync_bn and self.env.distributed and dev.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.net = self.model
        if self.env.distributed:  # DDP also copies rank 0's initial weights to every process
            ids = [dev.index] if dev.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                           find_unused_parameters=False)
        self.ema = (ModelEMA(self.model, cfg.ema.decay, cfg.ema.warmup_steps) if cfg.ema.enabled else None)
        self.optimizer = build_optimizer(cfg, self.model)
        self.train_set = train_set
        if unlabeled is not None:
            train_set = torch.utils.data.ConcatDataset([train_set, unlabeled])
        self.sampler = EpochSampler(len(train_set), cfg.seed, self.env.rank, self.env.world_size,
                                    self._sample_weights(unlabeled), with_seeds=True)
        self.loader = make_loader(SeededSamples(train_set), cfg.batch_size, self.sampler,
                                  cfg.data.num_workers, train=True)
        self.steps_per_epoch = len(self.loader)
        self.epoch_plan = self._epoch_plan()  # (saved with each checkpoint)
        if self.steps_per_epoch == 0:
            per = " per process" if self.env.distributed else ""
            raise MoveNetError(f"batch_size {cfg.batch_size} is more than the {self.sampler.per_rank} training "
                               f"samples{per}: lower batch_size")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg, self.steps_per_epoch))
        # autocast dtype on CUDA, None for float32; float16 needs loss scaling, bfloat16 does not
        self.amp = getattr(torch, cfg.amp_dtype) if cfg.amp and dev.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.best_metric = self._scored_metric(verbose)
        self._said_collapse = False  # (collapse: said once a run)
        self.state = TrainState(best_metric=self.best_metric)
        self.writer = None
        self.stop_requested = False
        self.stop_signal: int | None = None  # (SIGTERM: exit status 143, as other commands)
        self.resumed_settings = None  # (file name, the run's config, what changed, checkpoint) of a resume
        self.resumed_from: Path | None = None
        self.best_to_copy: Path | None = None  # the best.pt of the run resumed into another folder
        self.best_in_last = False  # the resumed last.pt is the run's best model, its best.pt never written
        self._clock = (time.perf_counter(), 0)  # (start, epochs done then) of this process's epochs

    def _scored_metric(self, verbose: bool) -> str:
        """``best_metric``, or AP where no validation person has both torso keypoints labelled
        (PCK@0.2 of the torso is then undefined: best.pt would never be written)."""
        from .metrics import torso_size

        index = getattr(self.val.samples, "index", None) if self.val is not None else None
        if self.cfg.best_metric != "pck" or index is None or not len(index.targets):
            return self.cfg.best_metric
        if np.isfinite(torso_size(index.keypoints[index.targets], self.schema)).any():
            return "pck"
        if verbose and self.env.is_main:
            pair = self.schema.torso_pair()
            unit = (f"both torso keypoints ({self.schema.keypoints[pair[0]]}, {self.schema.keypoints[pair[1]]})"
                    if pair else "two labelled keypoints")
            print(f"movenet: warning: none of the {len(index.targets)} validation people has {unit}: PCK@0.2 is "
                  "undefined there, so best.pt follows AP", file=sys.stderr)
        return "ap"

    def _sample_weights(self, unlabeled) -> torch.Tensor | None:
        from .samples import sample_weights

        base = (sample_weights(self.train_set, self.cfg.augment)
                if hasattr(self.train_set, "index") else torch.ones(len(self.train_set), dtype=torch.float64))
        if unlabeled is None:
            return base
        share = self.cfg.distill.unlabeled_fraction
        extra = torch.ones(len(unlabeled), dtype=torch.float64)
        if share > 0:
            extra *= share / (1 - share) * base.sum() / len(unlabeled)
        return torch.cat([base, extra])

    # ------------------------------------------------------------ checkpoints
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def save(self, path: Path, metrics: dict) -> None:
        self._check_finite_weights()
        rng = rng_state()
        sums = self.state.epoch_sums
        if self.env.distributed:  # every process' random state, for an exact resume
            states = [None] * self.env.world_size
            dist.all_gather_object(states, rng)
            keys = sorted(sums)  # and the unfinished epoch's loss sums of all of them
            totals = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
            dist.all_reduce(totals)
            sums = dict(zip(keys, totals.tolist()))
        else:
            states = [rng]
        if not self.env.is_main:
            return
        s = self.state
        save_checkpoint(path, self.eval_model(), self.schema, extra={
            "config": self.cfg.to_dict(),
            "epoch": s.epoch, "step": s.step, "metrics": metrics,
            "best": {"metric": self.best_metric, "value": s.best, "epoch": s.best_epoch},
            "train_state": {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": states,
                "history": s.history,
                "batch_in_epoch": s.batch_in_epoch,
                "epoch_sums": sums,
                "epoch_images": s.epoch_images,
                "epoch_plan": self.epoch_plan,
            },
        })

    def _epoch_plan(self) -> dict:
        """What fixes the order of an epoch's samples and where a batch starts in it: a run
        resumed inside an epoch skips its first batches, which only the same plan makes those it
        trained on."""
        weights = self.sampler.weights
        return {"samples": self.sampler.size, "seed": self.sampler.seed, "processes": self.sampler.world,
                "batch_size": self.cfg.batch_size,
                "weights": None if weights is None else hashlib.sha1(weights.double().numpy().tobytes()).hexdigest()}

    def resume(self, path: str | os.PathLike) -> None:
        ckpt = read_checkpoint(path)
        ts = ckpt.get("train_state")
        if ts is None:
            raise MoveNetError(f"{path}: no training state to resume from (weights only)")
        changed = config_changes(ckpt.get("model_config", {}), self.model.config.to_dict())
        if changed:
            raise MoveNetError(f"{path}: a run of another model than this config's ({'; '.join(changed)}); "
                               "resume with the settings it was started with (its config.yaml)")
        settings = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        misfit = weights_misfit(self.model.state_dict(), ts.get("model") or {})
        if misfit:
            raise MoveNetError(f"{path}: the run's weights do not fit this configuration's model ({misfit})")
        check_finite_weights(ts["model"], path)
        try:
            self.model.load_state_dict(ts["model"])
            self.optimizer.load_state_dict(ts["optimizer"])
            self.scheduler.load_state_dict(ts["scheduler"])
            # The schedule's place is in epochs: another batch size, data size or number of processes
            # makes epochs of other steps (the same place when nothing changed).
            self.scheduler.last_epoch = ckpt["epoch"] * self.steps_per_epoch + ts.get("batch_in_epoch", 0)
            self._apply_optim_settings(settings)
            self.scaler.load_state_dict(ts["scaler"])
            if self.ema is not None and ts["ema"] is not None:
                self.ema.load_state_dict(ts["ema"])
            elif self.ema is not None:  # EMA turned on for the rest of a run: it starts from the run's weights
                self.ema.module.load_state_dict(self.model.state_dict())
        except (RuntimeError, ValueError, KeyError) as e:
            # the optimiser's parameter groups follow these settings (which layers train, at which rate)
            groups = [c for c in config_changes(ckpt.get("config", {}), self.cfg.to_dict())
                      if c.startswith(("optim.freeze_backbone_to_stride ", "optim.backbone_lr_scale "))]
            why = f"changed: {'; '.join(groups)}; resume with the run's settings (its config.yaml)" if groups \
                else str(e).strip().splitlines()[0]
            raise MoveNetError(f"{path}: training state does not fit this configuration ({why})") from None
        best = ckpt["best"]
        # the saved sums are every process' (save adds them up): one process carries them on
        sums = dict(ts.get("epoch_sums", {}))
        self.state = TrainState(ckpt["epoch"], ckpt["step"], best["value"], best["epoch"], list(ts["history"]),
                                batch_in_epoch=ts.get("batch_in_epoch", 0),
                                epoch_sums=sums if self.env.rank == 0 else dict.fromkeys(sums, 0.0),
                                epoch_images=ts.get("epoch_images", 0), best_metric=self.best_metric)
        self.resumed_from = Path(path)
        self.best_in_last = self.env.is_main and _best_not_written(ckpt, Path(path))
        done = self.state.batch_in_epoch
        plan = ts.get("epoch_plan")
        own = self.epoch_plan
        if done and plan is not None and plan != own:
            named = {"weights": "the sampling weights (data.sources' weights, augment.source_balance, "
                                "augment.pose_cluster*)",
                     "samples": f"samples {plan['samples']} -> {own['samples']} (the images of data.sources or "
                                "distill.unlabeled, or the data settings)"}
            what = [named.get(k, f"{k} {plan.get(k)} -> {own[k]}") for k in own if plan.get(k) != own[k]]
            # (max_steps, not epochs: the schedule follows epochs)
            steps = -(-plan["samples"] // plan["processes"]) // plan["batch_size"]
            processes = f" on {plan['processes']} processes" if plan["processes"] != own["processes"] else ""
            images = ", with the images it had" if plan["samples"] != own["samples"] else ""
            raise MoveNetError(f"{path}: stopped inside epoch {ckpt['epoch'] + 1} (after batch {done}), which goes on "
                               f"only in the same order of samples; changed: {'; '.join(what)}. Resume with the run's "
                               f"settings (its config.yaml){images}{processes} and max_steps="
                               f"{ckpt['step'] + steps - done} to finish that epoch, then with yours")
        if done > self.steps_per_epoch:  # (more data or a smaller batch simply make the epoch longer)
            raise MoveNetError(f"{path}: stopped after batch {done} of epoch {ckpt['epoch'] + 1}, which has "
                               f"{self.steps_per_epoch} batches with this config's data and batch_size; resume with "
                               "the run's own (its config.yaml)")
        states = ts["rng"]
        set_rng_state(states[self.env.rank] if self.env.rank < len(states) else states[0])
        if not self.env.is_main:
            return
        if self.verbose:
            within = f", {done} batches of epoch {ckpt['epoch'] + 1}" if done else ""
            print(f"resumed from {path}: {ckpt['epoch']} epochs{within}, {ckpt['step']} steps done", file=sys.stderr)
            if self.scheduler.last_epoch != ckpt["step"]:
                print(f"the learning-rate schedule goes on after epoch {ckpt['epoch']}: an epoch is "
                      f"{self.steps_per_epoch} steps now (other settings or processes than the run's)", file=sys.stderr)
        changed = config_changes(ckpt.get("config", {}), self.cfg.to_dict())
        if changed:  # config.yaml becomes this config: fit keeps the run's own beside it
            self.resumed_settings = (f"config.step{ckpt['step']}.yaml", ckpt.get("config", {}), changed, path)

    def _apply_optim_settings(self, settings: list[dict]) -> None:
        """After loading a checkpoint's optimiser and schedule: this config's learning rates,
        weight decay and betas (the saved moments and step count stay), the schedule's rate at
        the saved step recomputed from them. Unchanged settings give the saved values exactly."""
        groups = self.optimizer.param_groups
        for group, own in zip(groups, settings):
            group.update(own)
        self.scheduler.base_lrs = [g["initial_lr"] for g in groups]
        factor = lr_factor(self.scheduler.last_epoch, self.cfg, self.steps_per_epoch)
        for group, base in zip(groups, self.scheduler.base_lrs):
            group["lr"] = base * factor
        self.scheduler._last_lr = [g["lr"] for g in groups]

    # ------------------------------------------------------------ loop
    def fit(self) -> TrainState:
        cfg, env, s = self.cfg, self.env, self.state
        idle = self.finished()  # a finished run resumed: nothing to train (its final.pt if missing)
        if env.is_main and self._resumed_here() and self.best_in_last:
            with atomic_path(self.out_dir / BEST) as tmp:
                shutil.copyfile(self.resumed_from, tmp)
            if self.verbose:
                print(f"wrote {self.out_dir / BEST} from {self.resumed_from.name}: the run had stopped between "
                      "the two", file=sys.stderr)
        if env.is_main and idle and self.verbose:
            print(f"{self.out_dir}: nothing to train: the run {self.done_text()}", file=sys.stderr)
        if env.is_main and not idle:
            make_folder(self.out_dir)
            self._prepare_run_folder()
            if self.resumed_settings is not None:
                name, before, changed, path = self.resumed_settings
                kept = self.out_dir / name
                write_text_atomic(kept, yaml.safe_dump(before, sort_keys=False))
                if self.verbose:
                    print(f"movenet: warning: {path}: resumed with other settings than the run's "
                          f"({'; '.join(changed)}); the run's are in {kept}: give it as the config to go on with "
                          "them", file=sys.stderr)
            save_config(cfg, self.out_dir / "config.yaml")
            self.writer = self._open_writer()
        restore = self._catch_interrupts()
        try:
            if cfg.val_before and self.val is not None and s.epoch == 0 and not s.history:
                metrics = {f"val_{k}": v for k, v in self._validate(0).items()}
                s.history.append({"epoch": 0, "step": 0, **metrics})
                value = metrics.get(f"val_{self.best_metric}", metrics.get("val_pck"))
                if value is not None and np.isfinite(value):  # the initial model competes for best.pt
                    s.best, s.best_epoch = float(value), 0
                    # last.pt first, as at each epoch's end: a folder with a best.pt but no last.pt could be
                    # neither resumed nor reused, and a resume writes a best.pt that a kill kept from it
                    self.save(self.out_dir / LAST, s.history[-1])
                    self.save(self.out_dir / BEST, s.history[-1])
                if env.is_main and self.verbose:
                    print(format_epoch(s.history[-1], cfg.epochs), file=sys.stderr)
            self._clock = (time.perf_counter(), s.epoch)  # for the time-to-go of the epoch lines
            while not self.finished():
                t0, before = time.perf_counter(), s.epoch_images
                train_metrics = self._train_epoch(s.epoch)
                seconds = time.perf_counter() - t0
                whole = s.batch_in_epoch == 0  # max_steps inside an epoch keeps the place, as an interruption
                s.epoch += whole
                metrics = {**train_metrics, "epoch": s.epoch, "step": s.step, "train_seconds": seconds}
                if before:  # resumed inside the epoch: those seconds trained only its rest
                    metrics["timed_images"] = train_metrics["train_images"] - before
                if not whole:
                    metrics |= {"epoch": round(s.epoch + s.batch_in_epoch / self.steps_per_epoch, 4),
                                "batch_in_epoch": s.batch_in_epoch}
                if self.val is not None and (not whole or s.epoch % cfg.val_every == 0 or self.finished()):
                    metrics.update({f"val_{k}": v for k, v in self._validate(s.epoch).items()})
                self._finish_epoch(metrics)
                # Asked for during the validation: stop at this epoch's end. One process only: under
                # torchrun the next step's check agrees on it (a collective here, the last before the
                # processes leave, made gloo abort at exit now and then).
                # At the run's end it is done, but for a final.pt still to write.
                if not env.distributed and self.stop_requested and not (self.finished() and self.init_state is None):
                    if env.is_main:
                        where = (f"at epoch {s.epoch + 1}, batch {s.batch_in_epoch}/{self.steps_per_epoch}"
                                 if s.batch_in_epoch else f"after epoch {s.epoch}")
                        todo = f"; {FINAL} is still to write" if self.finished() else ""
                        print(f"interrupted {where}: wrote {self.out_dir / LAST}{todo}; continue with --resume",
                              file=sys.stderr)
                    raise Interrupted(self.stop_signal == signal.SIGTERM)
            if self.init_state is not None and self.finished():
                self._write_final()
        finally:
            restore()
            stop_workers(self.loader)
            if self.writer is not None:
                self._close_writer()
        return s

    def _resumed_here(self) -> bool:
        return self.resumed_from is not None and not resumed_elsewhere(self.resumed_from, self.out_dir)

    def _prepare_run_folder(self) -> None:
        """Files in the run folder that the coming training makes stale: the logs of a run that
        stopped before its first checkpoint (a new run's would mix with them; a folder with a
        run's models is refused by ``check_run_folder``), or the final.pt of a finished run
        trained further. A run resumed into another folder takes its best.pt along with its first
        checkpoint there (before, the folder stays one a retry may use)."""
        if self._resumed_here():
            stale = [self.out_dir / FINAL]  # (the run is not finished: fit does not start an idle one)
        else:  # a new run, or one resumed into a folder of its own (check_run_folder: no run's models)
            stale = [self.out_dir / name for name in (CURVES, "tensorboard")]
            best = self.resumed_from.parent / BEST if self.resumed_from is not None else None
            if self.best_in_last:
                best = self.resumed_from
            self.best_to_copy = best if best is not None and best.exists() else None
        stale = [p for p in stale if p.exists()]
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if stale and self.verbose:
            print(f"removed what is stale in {self.out_dir}: {', '.join(p.name for p in stale)}", file=sys.stderr)

    def done_text(self) -> str:
        """What ended the run, and what goes on with it."""
        s = self.state
        if self.cfg.max_steps and s.step >= self.cfg.max_steps:
            return f"stopped at max_steps ({s.step} steps): raise max_steps= (0: no limit) to go on"
        return f"has done its {s.epoch} epochs ({s.step} steps): raise epochs= to go on"

    def _close_writer(self) -> None:
        """TensorBoard's last events: a full disk is one line, and when the run is already
        stopping on an error (the disk filled while a checkpoint was written) that one is said."""
        from .fileio import write_failure

        stopping = sys.exc_info()[0] is not None  # (called from fit's finally)
        try:
            self.writer.close()
        except OSError as e:
            reason = write_failure(e)
            if reason is None:
                raise
            if not stopping:
                raise MoveNetError(f"{self.out_dir / 'tensorboard'}: cannot write ({reason})") from None

    def _catch_interrupts(self) -> Callable[[], None]:
        """Ctrl-C / SIGTERM ask the loop to stop after the current step (see the module doc);
        returns the function that puts the previous handlers back."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def request_stop(signum, frame):
            self.stop_requested, self.stop_signal = True, signum
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

        for sig in previous:
            signal.signal(sig, request_stop)
        return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]

    def _stop_agreed(self) -> bool:
        """Whether to stop now: asked for in this process or, under DDP, in any."""
        if not self.env.distributed:
            return self.stop_requested
        # 2: a process got SIGTERM, 1: Ctrl-C; every process then exits as the signalled one would
        asked = 2.0 if self.stop_signal == signal.SIGTERM else float(self.stop_requested)
        flag = torch.tensor([asked], device=self.env.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() == 2:
            self.stop_signal = signal.SIGTERM
        return bool(flag.item() > 0)

    def _save_within_epoch(self) -> None:
        self.save(self.out_dir / LAST, {"epoch": self.state.epoch, "step": self.state.step,
                                         "batch_in_epoch": self.state.batch_in_epoch})
        self._copy_best()

    def _copy_best(self) -> None:
        if self.best_to_copy is not None and self.env.is_main:
            shutil.copy2(self.best_to_copy, self.out_dir / BEST)
        self.best_to_copy = None

    def finished(self) -> bool:
        """Whether the run has done its epochs (or its max_steps)."""
        return self.state.epoch >= self.cfg.epochs or self._step_limit_reached()

    def _step_limit_reached(self) -> bool:
        return bool(self.cfg.max_steps) and self.state.step >= self.cfg.max_steps

    def _train_epoch(self, epoch: int) -> dict:
        from tqdm import tqdm

        cfg, env, s = self.cfg, self.env, self.state
        self.net.train()
        if self.freeze_bn:
            set_bn_eval(self.net)
        for layer in self.frozen:
            layer.eval()
        done = s.batch_in_epoch  # > 0 when resuming inside this epoch
        self.sampler.set_epoch(epoch, skip=done * cfg.batch_size)
        sums = s.epoch_sums  # updated in place: a checkpoint inside the epoch carries them
        total = done + len(self.loader)
        if cfg.max_steps:
            total = min(total, done + cfg.max_steps - s.step)
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", initial=done,
                   total=total, disable=not (env.is_main and self.verbose),
                   file=sys.stderr, leave=False)
        for batch in bar:
            batch = to_device(batch, env.device)
            lr = self.optimizer.param_groups[0]["lr"]  # this step's (the schedule then moves on)
            loss, parts = self._step(batch)
            n = len(batch["image"])
            s.epoch_images += n * env.world_size
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            s.batch_in_epoch += 1
            if env.is_main and self.writer is not None and s.step % cfg.log.every_steps == 0:
                self.writer.add_scalar("train/loss", float(loss), s.step)
                for k, v in parts.items():
                    self.writer.add_scalar(f"train/{k}", float(v), s.step)
                self.writer.add_scalar("train/lr", lr, s.step)
            bar.set_postfix(loss=f"{float(loss):.4f}", lr=f"{lr:.2e}")
            if self._step_limit_reached():  # (before a stop: the run's end validates and writes its files)
                bar.close()
                break
            if self._stop_agreed():
                bar.close()
                self._save_within_epoch()
                if env.is_main:
                    print(f"interrupted at epoch {epoch + 1}, batch {s.batch_in_epoch}/{self.steps_per_epoch}: "
                          f"wrote {self.out_dir / LAST}; continue with --resume", file=sys.stderr)
                raise Interrupted(self.stop_signal == signal.SIGTERM)
            every = cfg.checkpoint_every_steps
            if every and s.step % every == 0 and s.batch_in_epoch < self.steps_per_epoch:
                self._save_within_epoch()
        images = s.epoch_images
        if s.batch_in_epoch >= self.steps_per_epoch:  # the epoch is done (not stopped by max_steps)
            s.batch_in_epoch, s.epoch_sums, s.epoch_images = 0, {}, 0
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        if env.distributed:  # the epoch's mean losses over every process' samples
            dist.all_reduce(totals)
        seen = max(images, 1)
        return {f"train_{k}": float(v) / seen for k, v in zip(keys, totals)} | {"train_images": images}

    def _step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        cfg, s = self.cfg, self.state
        teacher_out = None
        with torch.autocast(self.env.device.type, dtype=self.amp, enabled=self.amp is not None):
            if self.teacher is not None:
                batch, teacher_out = self.teacher(batch)
            outputs = self.net(batch["image"].contiguous(memory_format=self.memory_format))
        # The loss in float32: heatmaps near 0 and 1 lose too much in float16.
        outputs = tuple(o.float() for o in outputs)
        loss, parts = self.loss_fn(outputs, batch, teacher_out) if teacher_out is not None \
            else self.loss_fn(outputs, batch)
        self._check_finite(loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # float16: the scaler skips the optimiser step while it searches its scale (first steps);
        # the schedule still advances with every batch, as the resume expects, so no warning
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        s.step += 1
        return loss.detach(), parts

    def _check_finite(self, loss: torch.Tensor) -> None:
        # every process must stop at the same step
        if any_process(not bool(torch.isfinite(loss.detach()).all()), self.env):
            last = self.out_dir / LAST
            kept = f"last good checkpoint kept: {last}" if last.exists() else "no checkpoint written yet"
            raise NonFiniteLoss(f"{self.out_dir}: loss is {float(loss.detach())} at epoch {self.state.epoch + 1}, "
                                f"step {self.state.step + 1}; training stopped ({kept})")

    def _check_finite_weights(self) -> None:
        """A step can turn the weights to NaN while its loss was still finite: such weights are
        never written (every process holds the same weights, so all stop here together)."""
        try:
            check_finite_weights(self.eval_model().state_dict(), "the weights")
        except MoveNetError:
            last = self.out_dir / LAST
            kept = f"last good checkpoint kept: {last}" if last.exists() else "no checkpoint written yet"
            raise NonFiniteLoss(f"{self.out_dir}: the weights hold NaN or infinite values after step "
                                f"{self.state.step} (the training diverged: lower optim.lr); training stopped "
                                f"({kept})") from None

    def _write_final(self) -> None:
        """final.pt: (1 - w) x the trained (EMA) weights + w x the initial ones."""
        w = self.cfg.final_init_weight
        if any_process(self._final_is_current(), self.env):  # a finished run resumed again
            if self.env.is_main and self.verbose:
                print(f"{self.out_dir / FINAL} is already this run's final model", file=sys.stderr)
            if self.env.distributed:
                dist.barrier()
            return
        model = copy.deepcopy(self.eval_model())
        trained = model.state_dict()
        mixed = weighted_state([trained, self.init_state], [1 - w, w])
        take_keypoint_channels(mixed, trained, [(self.schema.index(n),) * 2 for n in self.fresh_keypoints])
        model.load_state_dict(mixed)
        metrics = self._validate(self.state.epoch, model, "final") if self.val is not None else {}
        if not self.env.distributed and self.stop_requested:  # Ctrl-C during that validation
            print(f"interrupted before {FINAL} was written; --resume writes it", file=sys.stderr)
            raise Interrupted(self.stop_signal == signal.SIGTERM)
        if self.env.is_main:
            s = self.state
            save_checkpoint(self.out_dir / FINAL, model, self.schema, extra={
                "config": self.cfg.to_dict(), "epoch": s.epoch, "step": s.step, "metrics": metrics,
                "averaged_from": [{"checkpoint": str(self.out_dir / LAST), "weight": 1 - w},
                                  {"checkpoint": str(self.cfg.init), "weight": w}]})
            if self.verbose:
                scores = (f": val PCK@0.2 {metrics['pck']:.4f} AP {metrics.get('ap', float('nan')):.4f}"
                          if "pck" in metrics else "")
                if "distance_offset" in metrics:
                    scores += f", decoding offset {metrics['distance_offset']:g}"
                kept = (f"; {some_of(self.fresh_keypoints)}, which {self.cfg.init} lacks, as trained"
                        if self.fresh_keypoints else "")
                print(f"wrote {self.out_dir / FINAL} ({1 - w:g} x trained + {w:g} x {self.cfg.init}{kept}){scores}",
                      file=sys.stderr)
        if self.env.distributed:
            dist.barrier()

    def _final_is_current(self) -> bool:
        """Whether final.pt was written at this step (main process only): a finished run resumed
        writes nothing (another mix of the same weights: ``movenet average``)."""
        path = self.out_dir / FINAL
        if not (self.env.is_main and path.exists()):
            return False
        try:
            ckpt = read_checkpoint(path)
        except MoveNetError:
            return False
        return ckpt.get("step") == self.state.step

    def _validate(self, epoch: int, model: nn.Module | None = None, tag: str = "val") -> dict:
        """Every process predicts its share of the validation crops (rank::world); the main
        process scores them all, and the metrics go to every process."""
        env, cfg = self.env, self.cfg
        offsets = cfg.calibrate_distance_offset
        part, drawn = predict_validation(
            model or self.eval_model(), self.val, cfg.val_batch_size, env.device, cfg.data.num_workers,
            self.loss_fn, self.amp, cfg.log.images if self.writer is not None else 0, self.schema,
            self.memory_format, offsets, range(env.rank, len(self.val.samples), env.world_size))
        parts = [part]
        if env.distributed:
            parts = [None] * env.world_size if env.is_main else None
            dist.gather_object(part, parts, dst=0)
        metrics: dict = {}
        if env.is_main:
            metrics = score_validation(parts, self.val, self.schema, self.best_metric, bool(offsets))
            if self.writer is not None:
                for k, v in metrics.items():
                    self.writer.add_scalar(f"{tag}/{k}", v, self.state.step)
                for i, img in enumerate(drawn):
                    self.writer.add_image(f"{tag}/sample_{i}", img, self.state.step, dataformats="HWC")
        if self.env.distributed:
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        if "distance_offset" in metrics:  # the decoding the scores were measured with goes with the weights
            for m in ([model] if model is not None else [self.model, self.eval_model()]):
                m.distance_offset.fill_(metrics["distance_offset"])
        return metrics

    def _finish_epoch(self, metrics: dict) -> None:
        cfg, s = self.cfg, self.state
        key = f"val_{self.best_metric}"
        value = metrics.get(key, metrics.get("val_pck"))
        improved = value is not None and np.isfinite(value) and value > s.best
        fall = collapse(value, s.best, s.best_epoch, metrics["epoch"], self.best_metric, cfg.optim.lr)
        if fall and not self._said_collapse and self.env.is_main and self.verbose:
            self._said_collapse = True  # (once a run: it seldom comes back)
            print(f"movenet: warning: {fall}", file=sys.stderr)
        if improved:  # (the epoch in part, 0.75, where max_steps stopped inside one)
            s.best, s.best_epoch = float(value), metrics["epoch"]
        elif value is None and self.val is None:  # no validation: the latest is the best
            improved, s.best_epoch = True, metrics["epoch"]
        s.history.append(metrics)
        self.save(self.out_dir / LAST, metrics)
        self._copy_best()
        if improved:
            self.save(self.out_dir / BEST, metrics)
        if self.env.is_main and cfg.log.curves and (
                "val_pck" in metrics or s.epoch == cfg.epochs or self._step_limit_reached()):
            from .curves import plot_training_curves
            plot_training_curves(s.history, self.out_dir / CURVES, title=str(self.out_dir))
        if self.env.is_main and self.verbose:
            start, first_epoch = self._clock
            timed = 0 if self.finished() else s.epoch - first_epoch  # (no time to go at the end)
            print(format_epoch(metrics, cfg.epochs, time.perf_counter() - start, timed),
                  file=sys.stderr)
        if self.env.distributed:
            dist.barrier()

    def _open_writer(self):
        if not self.cfg.log.tensorboard:
            return None
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run drops what an interrupted one logged after its checkpoint, not at it.
        step = self.state.step
        return SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=step + 1 if step else None)


def collapse(value: float | None, best: float, best_epoch: float, epoch: float, metric: str, lr: float) -> str | None:
    """The warning for a validation score that fell under half the run's best (a learning rate
    too high for fine-tuning drives a pretrained model to 0 in an epoch or two), else None."""
    if value is None or not np.isfinite(value) or not best >= 0.1 or not value < 0.5 * best:
        return None  # (a best under 0.1: a model that has learned little yet, whose scores jump)
    name = "PCK@0.2" if metric == "pck" else metric.upper()
    return (f"val {name} {value:.4f} at epoch {epoch:g} is under half the best, {best:.4f} at epoch {best_epoch:g} "
            f"(kept in best.pt): the run may be diverging; try a lower optim.lr (this run's: {lr:g})")


def format_epoch(m: dict, epochs: int, elapsed: float | None = None, epochs_timed: int = 0) -> str:
    """The line printed after an epoch; with ``elapsed`` seconds over ``epochs_timed`` epochs of
    this process (validations and checkpoints included), the time the rest will take at that pace."""
    parts = [f"epoch {m['epoch']}/{epochs}" if "batch_in_epoch" not in m
             else f"epoch {int(m['epoch']) + 1}/{epochs} to batch {m['batch_in_epoch']} (max_steps)"]
    parts.append(f"loss {m['train_loss']:.4f}" if "train_loss" in m else "before training")
    heads = [f"{k[6:]} {m[k]:.4f}" for k in ("train_heatmap", "train_center", "train_regression",
                                              "train_offset", "train_bone", "train_distill")
             if k in m and not (k == "train_bone" and m[k] == 0)]  # (0: loss.bone off)
    if heads:
        parts.append("(" + ", ".join(heads) + ")")
    if "val_pck" in m:
        parts.append(f"val PCK@0.2 {m['val_pck']:.4f} AP {m.get('val_ap', float('nan')):.4f}")
    if "val_distance_offset" in m:
        parts.append(f"decoding offset {m['val_distance_offset']:g}")
    timed = m.get("timed_images", m.get("train_images"))
    if m.get("train_seconds") and timed:
        parts.append(f"{timed / m['train_seconds']:.1f} img/s")
    if elapsed is not None and epochs_timed > 0 and m["epoch"] < epochs:
        parts.append(f"{_duration(elapsed)} so far, ~{_duration(elapsed / epochs_timed * (epochs - m['epoch']))} to go")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


# ---------------------------------------------------------------- entry points
def build_loss(cfg: TrainConfig, schema: KeypointSchema = COCO17) -> Callable:
    from .losses import MoveNetLoss

    return MoveNetLoss(cfg.loss, schema)


def center_mode_note(cfg: TrainConfig) -> str | None:
    """A note when a run fine-tunes Google's weights toward box centres: their centre heatmap
    peaks at the mean of a person's keypoints, about 0.06-0.08 crop sides above the centre of
    the keypoints' box on COCO people (benchmarks/center_offset.py), so box targets first move
    every centre, and with it the regression head's origin."""
    if cfg.init in ("lightning", "thunder") and cfg.data.center_mode == "box":
        return (f"note: init {cfg.init} with data.center_mode=box: Google's models put a person's "
                "centre at the mean of its keypoints; data.center_mode=mean keeps it there")
    return None


def run(cfg: TrainConfig | str | os.PathLike, out_dir: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None, verbose: bool = True, label: str = "config") -> TrainState:
    """Build data, model, loss (and teacher) from ``cfg`` (a ``TrainConfig`` or a YAML file)
    and train, in this process (or in each process started by torchrun). ``label`` names the
    config in messages."""
    if isinstance(cfg, (str, os.PathLike)):
        cfg, label = load_config(cfg), str(cfg)
    if not isinstance(cfg, TrainConfig):
        raise MoveNetError(f"run takes a TrainConfig or a config file, got a {type(cfg).__name__}")
    env = init_distributed(cfg.device, cfg.dist_timeout_s)
    out = Path(out_dir or cfg.out_dir)
    made = [p for p in (out, *out.parents) if not p.exists()]  # folders this run makes, deepest first
    lock = None
    try:
        # (before the lock: its file would stay in a folder of someone else's files)
        agreed(env, lambda: check_no_other_files(out, resume) if env.is_main else None)
        # one run at a time writes a folder: another started there now would mix its files in
        lock = agreed(env, lambda: lock_folder(out, "another movenet train") if env.is_main else None)
        # each step that reads this machine's files stops every process when it fails on one
        agreed(env, check_run_folder, out, resume, writes=env.is_main)
        if env.is_main:
            remove_unfinished_writes(out, verbose)
        agreed(env, check_source_paths, cfg, label)
        agreed(env, check_model_and_weights, cfg, label, verbose and env.is_main)
        schema = cfg.keypoint_schema()
        note = center_mode_note(cfg)
        if note and verbose and env.is_main:
            print(note, file=sys.stderr)
        teacher = agreed(env, load_teacher, cfg, env.device)  # (its errors before the data's index is built)
        train_set, val = agreed(env, build_data, cfg, schema, verbose and env.is_main)
        unlabeled = agreed(env, unlabelled_images, cfg, train_set)
        if unlabeled is not None and val is not None and env.is_main:
            warn_unlabelled_in_validation(unlabeled.paths, val)
        if unlabeled is not None and verbose and env.is_main:
            print(f"unlabelled images (distill.unlabeled): {len(unlabeled)}, taught by {cfg.distill.teacher}",
                  file=sys.stderr)
        trainer = Trainer(cfg, out, train_set, val, build_loss(cfg, schema), teacher=teacher,
                          schema=schema, env=env, verbose=verbose, unlabeled=unlabeled)
        if resume is not None:
            agreed(env, trainer.resume, resume)
            if trainer.finished() and resumed_elsewhere(resume, out):
                raise MoveNetError(f"{resume}: nothing to train into {out}: its run {trainer.done_text()}")
        return trainer.fit()
    except RuntimeError as e:  # torch.distributed's errors included
        error = stopped_from_outside(e, env)
        if error is None:
            raise
        raise error from None
    finally:
        if lock is not None:
            os.close(lock)
        if env.is_main:
            remove_unused_folders(made)
        if env.distributed and dist.is_initialized():
            dist.destroy_process_group()


def remove_unfinished_writes(folder: Path, verbose: bool = True) -> None:
    """The temporary files of checkpoints whose writing a killed process left unfinished (as
    large as a checkpoint each). Called by the process holding the run folder's lock: no run
    writes them now."""
    if not folder.is_dir():
        return
    left = [p for p in folder.iterdir() if UNFINISHED_WRITE.fullmatch(p.name) and p.is_file()]
    for path in left:
        path.unlink(missing_ok=True)
    if left and verbose:
        print(f"removed {counted(len(left), 'files')} that a stopped process left half written in {folder} "
              f"({some_of(sorted(p.name for p in left))})", file=sys.stderr)


def remove_unused_folders(folders: list[Path]) -> None:
    """Remove the ``folders`` (deepest first) a run made and stopped before writing anything into
    (its lock file aside)."""
    for folder in folders:
        try:
            if not folder.is_dir() or {p.name for p in folder.iterdir()} - {LOCK_FILE}:
                return
            (folder / LOCK_FILE).unlink(missing_ok=True)
            folder.rmdir()
        except OSError:
            return


def _best_not_written(ckpt: dict, path: Path) -> bool:
    """Whether ``ckpt`` (read from ``path``) ended an epoch that was the run's best while the
    best.pt beside it is missing or older: a process stopped between writing the two."""
    metrics, best = ckpt.get("metrics") or {}, ckpt.get("best") or {}
    inside = "batch_in_epoch" in metrics and "train_seconds" not in metrics  # (saved inside an epoch)
    if inside or best.get("epoch") != metrics.get("epoch"):
        return False
    try:
        return read_checkpoint(path.parent / BEST).get("step") != ckpt.get("step")
    except MoveNetError:  # missing or damaged
        return True


def resumed_elsewhere(resume: str | os.PathLike, out: str | os.PathLike) -> bool:
    """Whether the checkpoint ``resume`` lies in another folder than the run folder ``out``."""
    return Path(resume).resolve().parent != Path(out).resolve()


def check_no_other_files(out: Path, resume: str | os.PathLike | None) -> None:
    """A new run, or one resumed into another folder, is written into a folder of no other
    files than a run's (hidden ones aside)."""
    if not ((resume is None or resumed_elsewhere(resume, out)) and out.is_dir()):
        return
    try:
        names = [p.name for p in out.iterdir()]
    except OSError as e:
        raise MoveNetError(f"{out}: cannot read the folder ({e.strerror})") from None
    foreign = sorted(n for n in names if not n.startswith(".") and n not in RUN_FILES
                     and not re.fullmatch(r"config\.step\d+\.yaml", n))
    if foreign:
        raise MoveNetError(f"{out}: holds files a run does not write ({some_of(foreign)}); choose another --out")


def check_run_folder(out: Path, resume: str | os.PathLike | None, writes: bool = True) -> None:
    """A new run must not overwrite one; a resumed run needs its checkpoint; the process that
    writes (global rank 0) must be able to create the folder."""
    if writes:
        check_writable(out, folder=True)  # a file in the way, or no write access: before the data are read
    # a new run, or one resumed into another folder, writes into no one's files
    fresh = resume is None or resumed_elsewhere(resume, out)
    held = next((name for name in (LAST, BEST, FINAL) if (out / name).exists()), None) if fresh else None
    if held == LAST and resume is None:
        raise MoveNetError(f"{out}: already holds a run ({LAST}); resume it with --resume or choose another --out")
    if held is not None:
        also = f"resuming {resume} there" if resume is not None else "a new run"
        raise MoveNetError(f"{out}: already holds another run's {held}; {also} would write over it: choose another "
                           "--out")
    if writes:
        check_no_other_files(out, resume)
    if resume is not None and not Path(resume).is_file():
        raise MoveNetError(f"{resume}: no checkpoint to resume from")


def build_teacher(cfg: TrainConfig, device: torch.device, train_set) -> tuple:
    """(teacher, unlabelled images) of ``cfg.distill``; (None, None) without a teacher."""
    return load_teacher(cfg, device), unlabelled_images(cfg, train_set)


def load_teacher(cfg: TrainConfig, device: torch.device):
    """``cfg.distill``'s teacher (None without one): read and checked against the student's
    keypoints before any data is read."""
    if not cfg.distill.teacher:
        return None
    from .distill import Teacher

    try:
        teacher = Teacher.from_spec(cfg.distill.teacher, cfg.distill.alpha, device, cfg.model_config(),
                                    cfg.distill.center_alpha, cfg.keypoint_schema())
    except MoveNetError as e:  # (a teacher that does not fit already says "teacher")
        raise (e if "teacher" in str(e) else MoveNetError(f"distill.teacher: {e}")) from None
    teacher.model.to(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    return teacher


def unlabelled_images(cfg: TrainConfig, train_set):
    """``cfg.distill.unlabeled``'s images, augmented as ``train_set``'s samples (None without)."""
    if not (cfg.distill.teacher and cfg.distill.unlabeled):
        return None
    from .distill import UnlabeledImages

    return UnlabeledImages(cfg.distill.unlabeled, train_set, cfg.augment, on_bad_image=cfg.data.on_bad_image)


def warn_unlabelled_in_validation(paths: list[str], val: ValData) -> None:
    """Unlabelled images that are validation images too: the teacher then teaches them (as
    ``samples`` warns for labelled sources)."""
    from .samples import warn_shared_images

    warn_shared_images([os.fsdecode(p) for p in val.samples.index.image_paths], paths, "distill.unlabeled",
                       "unlabelled training images")


def resolve_resume(resume: str, out_dir: str | None) -> tuple[Path, Path]:
    """``--resume`` value -> (checkpoint, run folder). '' means the run folder's last.pt. Whether
    it exists is checked by ``run``, on every process."""
    target = Path(resume or out_dir or "")
    # (a run folder named like a file, exp_lr0.5, is still a folder when --resume names none)
    ckpt = target / LAST if not resume or target.is_dir() or not target.suffix else target
    return ckpt, Path(out_dir) if out_dir else ckpt.parent
