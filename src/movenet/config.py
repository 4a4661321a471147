"""Training configuration: dataclasses loaded from YAML with ``key=value`` overrides.

``load_config("configs/x.yaml", ["optim.lr=3e-4", "epochs=5"])`` reads the YAML, applies the
overrides (dotted keys, values parsed as YAML and checked against the dataclass field types)
and returns a ``TrainConfig``. Unknown keys and badly typed values raise ``MoveNetError`` with a
one-line message. ``save_config`` writes the resolved configuration (every field, defaults
included) so a run folder's ``config.yaml`` reproduces the run.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .augment import AugmentConfig
from .backbones import FEATURE_STRIDES
from .errors import MoveNetError, some_of
from .fileio import write_text_atomic
from .limits import FLOAT32_MAX, MAX_THREADS
from .losses import LossConfig
from .samples import DataConfig


@dataclass
class ModelSpec:
    """A registered variant (``model.list_models()``) plus ``ModelConfig`` field overrides,
    e.g. ``{width: 0.5, input_size: 128}``."""

    name: str = "lightning"
    overrides: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "adamw"  # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"  # cosine | step | constant (after the linear warm-up)
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine ends at lr * min_lr_ratio
    milestones: list[float] = field(default_factory=list)  # step schedule: epochs
    gamma: float = 0.1  # step schedule: lr factor at each milestone
    clip_grad_norm: float = 0.0  # 0: no clipping
    # The backbone's learning rate is lr * backbone_lr_scale: below 1 when the backbone is
    # pretrained and the neck and heads start from scratch (they need the larger steps).
    backbone_lr_scale: float = 1.0
    # Keep batch norms in eval mode (their statistics and affine fixed). Needed when starting
    # from Google's weights: their batch norms are folded, so batch statistics would change
    # what every layer computes. None (the default): frozen exactly when the initial weights'
    # batch norms are folded (train.batch_norms_folded).
    freeze_bn: bool | None = None
    # Freeze the backbone's layers up to its stride-N output (4, 8, 16 or 32; 0: none): no
    # gradients, batch norms in eval mode. The stride-2 and stride-4 layers hold 0.7% of a
    # MobileNetV2's weights but over a quarter of a training step's time (docs/training.md).
    freeze_backbone_to_stride: int = 0


@dataclass
class EMAConfig:
    """Exponential moving average of the weights, used for validation and the saved model.
    The effective decay ramps up as decay * (1 - exp(-updates / warmup_steps))."""

    enabled: bool = False
    decay: float = 0.999
    warmup_steps: int = 200


@dataclass
class DistillConfig:
    """Soft targets from a teacher (``lightning``, ``thunder`` or a checkpoint; empty: off).
    Heatmap and centre targets become ``alpha * teacher + (1 - alpha) * ground truth``;
    keypoint types without a label and ``unlabeled`` images learn from the teacher alone."""

    teacher: str = ""
    alpha: float = 0.5
    # Centre targets' share of the teacher (None: alpha). 1.0 keeps the teacher's notion of a
    # person's centre, which the regression head of a fine-tuned model is built around.
    center_alpha: float | None = None
    unlabeled: list[str] = field(default_factory=list)  # image folders, files or globs
    unlabeled_fraction: float = 0.0  # share of unlabelled samples in the training stream


@dataclass
class LogConfig:
    tensorboard: bool = True
    every_steps: int = 20  # training scalars
    images: int = 8  # validation images with predicted skeletons per epoch (0: none)
    curves: bool = True  # curves.png in the run folder, redrawn after each validation


def _first_unrepresentable(value, key: str = "") -> tuple[str, float] | None:
    """The first (key, number) of a config that float32 cannot hold (inf, nan, 1e300): the
    number would overflow in the first tensor it reaches."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        items = [(f"{key}.{k}" if key else str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    else:
        return (key, value) if isinstance(value, float) and not abs(value) <= FLOAT32_MAX else None
    return next((found for k, v in items if (found := _first_unrepresentable(v, k))), None)


@dataclass
class TrainConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    # scratch | imagenet | lightning | thunder | path to a .pt checkpoint (weights only)
    init: str = "scratch"
    # Keypoints of the schema that the init's weights lack, each started from the head channels
    # of one of the init's keypoints ({left_foot: left_ankle}): a fresh channel barely moves at a
    # fine-tuning learning rate. The others are taken by name.
    init_keypoints: dict = field(default_factory=dict)
    # The keypoints: "coco17" (the default) or a mapping (name, keypoints, flip_pairs, skeleton,
    # torso, sigmas; ``schema.schema_from_config``). The model's num_keypoints follows it.
    schema: Any = "coco17"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    log: LogConfig = field(default_factory=LogConfig)
    epochs: int = 10
    batch_size: int = 32  # per process
    val_batch_size: int = 64
    val_every: int = 1  # epochs
    best_metric: str = "pck"  # pck | ap: which validation metric picks best.pt
    amp: bool = True  # mixed precision, used on CUDA only
    # float16 (with loss scaling) or bfloat16 (no scaling needed; Ampere and later GPUs)
    amp_dtype: str = "float16"
    sync_bn: bool = False  # SyncBatchNorm across processes (DDP on CUDA)
    # Under torchrun: how long a process waits in a collective for the others before it stops
    # (a hung machine, a lost peer). 0: PyTorch's default (10 min with NCCL, 30 with gloo).
    # Keep it above the longest gap between steps (rank 0 writes checkpoints and plots); it also
    # bounds how long the processes wait for each other at start-up.
    dist_timeout_s: float = 0.0
    channels_last: bool = True  # NHWC memory layout: about 2x faster on CPU, faster with AMP
    val_before: bool = False  # also validate the initial model (logged as epoch 0)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0: torch's default)
    max_steps: int = 0  # stop after this many optimiser steps in all (0: no limit; smoke tests)
    # also write last.pt every N optimiser steps inside an epoch (0: at the end of epochs only;
    # an interrupted run writes it anyway)
    checkpoint_every_steps: int = 0
    # > 0: after the last epoch also write final.pt, the weights of last.pt mixed with the
    # weights the run started from, (1 - w) * trained + w * initial ("WiSE-FT"); needs an init
    # that sets every weight (lightning, thunder or a checkpoint)
    final_init_weight: float = 0.0
    # Candidate offsets of the keypoint decoding, heatmap / (distance to the regressed keypoint +
    # offset) (Google's 1.8): each validation decodes with every one, keeps the best on the
    # validation data (best_metric) and stores it with the weights. Empty: the model's own.
    calibrate_distance_offset: list[float] = field(default_factory=list)
    out_dir: str = "runs/train"

    def __post_init__(self) -> None:
        bad = _first_unrepresentable(self)
        if bad:
            raise ValueError(f"{bad[0]} must be a finite number within float32's range, got {bad[1]!r}")
        checks = {
            "optim.name": (self.optim.name, ("adam", "adamw")),
            "optim.schedule": (self.optim.schedule, ("cosine", "step", "constant")),
            "best_metric": (self.best_metric, ("pck", "ap")),
            "amp_dtype": (self.amp_dtype, ("float16", "bfloat16")),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{key} must be one of {list(allowed)}, got {value!r}")
        o = self.optim
        limits = [  # (key, value, valid, the rule)
            ("epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("optim.milestones", o.milestones, all(m > 0 for m in o.milestones) and list(o.milestones) == sorted(o.milestones),
             "epochs > 0, in order"),
            ("optim.lr", o.lr, o.lr > 0, "> 0"),
            ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, ">= 0"),
            ("optim.betas", o.betas, len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "two values in [0, 1)"),
            ("optim.warmup_epochs", o.warmup_epochs, o.warmup_epochs >= 0, ">= 0"),
            ("optim.min_lr_ratio", o.min_lr_ratio, 0 <= o.min_lr_ratio <= 1, "in [0, 1]"),
            ("optim.gamma", o.gamma, o.gamma > 0, "> 0"),
            ("optim.clip_grad_norm", o.clip_grad_norm, o.clip_grad_norm >= 0, ">= 0 (0: no clipping)"),
            ("ema.decay", self.ema.decay, 0 <= self.ema.decay < 1, "in [0, 1)"),
            ("ema.warmup_steps", self.ema.warmup_steps, self.ema.warmup_steps >= 0, ">= 0"),
            ("distill.unlabeled_fraction", self.distill.unlabeled_fraction,
             0 <= self.distill.unlabeled_fraction < 1, "in [0, 1)"),
            ("log.every_steps", self.log.every_steps, self.log.every_steps >= 1, ">= 1"),
            ("log.images", self.log.images, self.log.images >= 0, ">= 0"),
            ("val_batch_size", self.val_batch_size, self.val_batch_size >= 1, ">= 1"),
            ("val_every", self.val_every, self.val_every >= 1, ">= 1"),
            ("threads", self.threads, 0 <= self.threads <= MAX_THREADS, f"in [0, {MAX_THREADS}] (0: torch's default)"),
            ("seed", self.seed, 0 <= self.seed < 2 ** 32, "in [0, 2^32)"),
            ("data.split_seed", self.data.split_seed, 0 <= self.data.split_seed < 2 ** 32, "in [0, 2^32)"),
            ("augment.pose_cluster_seed", self.augment.pose_cluster_seed,
             0 <= self.augment.pose_cluster_seed < 2 ** 32, "in [0, 2^32)"),
            ("max_steps", self.max_steps, self.max_steps >= 0, ">= 0 (0: no limit)"),
            ("checkpoint_every_steps", self.checkpoint_every_steps, self.checkpoint_every_steps >= 0,
             ">= 0 (0: at the end of epochs)"),
            ("device", self.device, re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)) is not None,
             "auto, cpu, cuda or cuda:N"),
        ]
        for key, value, valid, rule in limits:
            if not valid:
                raise ValueError(f"{key} must be {rule}, got {value!r}")
        if self.dist_timeout_s < 0:
            raise ValueError(f"dist_timeout_s must be >= 0 (0: PyTorch's default), got {self.dist_timeout_s}")
        if self.optim.freeze_backbone_to_stride not in (0, *FEATURE_STRIDES):
            raise ValueError("optim.freeze_backbone_to_stride must be 0, 4, 8, 16 or 32, got "
                             f"{self.optim.freeze_backbone_to_stride!r}")
        if self.optim.backbone_lr_scale < 0:
            raise ValueError(f"optim.backbone_lr_scale must be >= 0, got {self.optim.backbone_lr_scale}")
        if not 0.0 <= self.final_init_weight < 1.0:
            raise ValueError(f"final_init_weight must be in [0, 1), got {self.final_init_weight}")
        if self.final_init_weight > 0 and self.init in ("scratch", "imagenet"):
            raise ValueError(f"final_init_weight mixes in the initial weights: it needs init lightning, "
                             f"thunder or a checkpoint, not {self.init}")
        if self.init_keypoints and self.init in ("scratch", "imagenet"):
            raise ValueError(f"init_keypoints starts keypoints from the init's keypoint heads: it needs init "
                             f"lightning, thunder or a checkpoint, not {self.init}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.init_keypoints.items()):
            glued = any(v is None and ":" in str(k) for k, v in self.init_keypoints.items())
            raise ValueError(f"init_keypoints maps keypoint names to keypoint names ({{left_foot: left_ankle}}), "
                             f"got {self.init_keypoints}" + (" (YAML needs a space after each colon)" if glued else ""))
        if any(not v > 0 for v in self.calibrate_distance_offset):
            raise ValueError(f"calibrate_distance_offset must hold offsets > 0, got {self.calibrate_distance_offset}")
        for key in ("alpha", "center_alpha"):
            value = getattr(self.distill, key)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"distill.{key} must be in 0..1, got {value}")
        idle = [key for key, value, default in (
            ("distill.alpha", self.distill.alpha, 0.5), ("distill.center_alpha", self.distill.center_alpha, None),
            ("loss.distill", self.loss.distill, 1.0)) if value != default] if not self.distill.teacher else []
        if idle:  # (settings that would do nothing are errors, not silently kept)
            raise ValueError(f"{', '.join(idle)} {'weighs' if len(idle) == 1 else 'weigh'} a teacher's targets: "
                             f"without distill.teacher {'it does' if len(idle) == 1 else 'they do'} nothing")
        weighted = [f"{s['path']} {s['weight']:g}" for s in self.data.sources if s["weight"] != 1.0]
        if weighted and not self.augment.source_balance:
            raise ValueError(f"data.sources weights ({', '.join(weighted)}) set each source's share with "
                             "augment.source_balance only, which is false: without it sources are drawn in "
                             "proportion to their size")
        weighted = [f"{s['path']} {s['weight']:g}" for s in self.data.val_sources if s["weight"] != 1.0]
        if weighted:
            raise ValueError(f"data.val_sources weights ({', '.join(weighted)}) do nothing: every validation image "
                             "is scored once")
        if self.augment.pose_cluster_power != 0.5 and not self.augment.pose_clusters:
            raise ValueError("augment.pose_cluster_power weighs pose clusters: it needs augment.pose_clusters > 0")
        if (self.distill.unlabeled or self.distill.unlabeled_fraction) and not self.distill.teacher:
            raise ValueError("distill.unlabeled and distill.unlabeled_fraction need distill.teacher "
                             "(unlabelled images learn from the teacher alone)")
        if self.distill.unlabeled_fraction and not self.distill.unlabeled:
            raise ValueError("distill.unlabeled_fraction is the share of distill.unlabeled images in the "
                             "training stream: it needs distill.unlabeled")
        if self.distill.unlabeled and self.distill.teacher and self.loss.distill == 0:
            raise ValueError("distill.unlabeled images learn from the loss' teacher term alone: loss.distill 0 "
                             "teaches them nothing")
        if self.loss.distill_only_unlabelled and not (self.distill.teacher and self.distill.unlabeled):
            raise ValueError("loss.distill_only_unlabelled applies the teacher to unlabelled images only: it "
                             "needs distill.unlabeled and a distill.teacher (without them it teaches nothing)")

    def keypoint_schema(self):
        """The resolved ``schema.KeypointSchema`` (resolved once while ``schema`` stays the same,
        so that its warnings are said once)."""
        from .schema import schema_from_config

        cached = self.__dict__.get("_resolved_schema")
        if cached is None or cached[0] != self.schema:
            cached = (copy.deepcopy(self.schema), schema_from_config(self.schema))
            self.__dict__["_resolved_schema"] = cached
        return cached[1]

    def model_config(self):
        """The resolved ``model.ModelConfig``."""
        from .model import model_config

        return model_config(self.model.name, **self.model.overrides)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


# ---------------------------------------------------------------- loading
def load_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """YAML file (None: all defaults) + ``key=value`` overrides -> ``TrainConfig``."""
    label = str(path) if path is not None else "config"
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MoveNetError(f"{p}: {'is a folder, not a config file' if p.is_dir() else 'file not found'}")
        try:
            raw = read_yaml(p.read_text(encoding="utf-8-sig")) or {}
        except yaml.YAMLError as e:
            raise MoveNetError(f"{p}: not valid YAML ({yaml_problem(e)})") from None
        except UnicodeDecodeError:
            raise MoveNetError(f"{p}: not UTF-8 text (a YAML config is expected)") from None
        except OSError as e:
            raise MoveNetError(f"{p}: cannot read ({e.strerror or e})") from None
        if not isinstance(raw, dict):
            raise MoveNetError(f"{p}: expected a mapping of config keys at the top level")
    return config_with_overrides(raw, overrides, label)


def config_with_overrides(raw: dict, overrides: list[str] | tuple[str, ...], label: str) -> TrainConfig:
    """``config_from_dict`` of ``raw`` with ``overrides``; a value refused because of an override
    names that override, not the file (``x.yaml (override epochs=-3): epochs must be >= 1``): the
    first after which the config is refused with the same words."""
    applied = with_overrides(copy.deepcopy(raw), overrides, label)  # (an unknown key names its override)
    try:
        return config_from_dict(applied, label)
    except MoveNetError as e:
        error = e
    for n in range(len(overrides) + 1):
        if _refusal(with_overrides(copy.deepcopy(raw), overrides[:n], label), label) == str(error):
            if n == 0:
                break  # the file's own
            raise MoveNetError(f"{label} (override {overrides[n - 1]}){str(error)[len(label):]}") from None
    raise error


def _refusal(raw: dict, label: str) -> str | None:
    """The error ``config_from_dict`` gives ``raw``, or None."""
    with warnings.catch_warnings():  # (a schema's warnings: said when the config is taken)
        warnings.simplefilter("ignore")
        try:
            config_from_dict(raw, label)
        except MoveNetError as e:
            return str(e)
    return None


def with_overrides(raw: dict, overrides: list[str] | tuple[str, ...], label: str = "config") -> dict:
    """``raw`` config keys with ``key=value`` overrides applied (in place)."""
    given: dict[str, str] = {}
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in given:  # (as a key given twice in a YAML mapping: which one was meant?)
            raise MoveNetError(f"{label}: the override {key} is given twice ({given[key]} and {item})")
        given[key] = item
        _apply_override(raw, item, label)
    return raw


def require_sources(cfg: TrainConfig, label: str | os.PathLike, paths: bool = True) -> TrainConfig:
    """A config that a command needs data from must name its training sources (and with
    ``paths``, they must be there: see ``check_source_paths``)."""
    if not cfg.data.sources:
        raise MoveNetError(f"{label}: no data.sources (the training data; docs/training-data.md)")
    return check_source_paths(cfg, label) if paths else cfg


def check_source_paths(cfg: TrainConfig, label: str | os.PathLike) -> TrainConfig:
    """Every data source and image folder a config names exists (a one-line error that names the
    config and, for a relative path, the working directory it was looked for from)."""
    for key in ("sources", "val_sources"):
        for source in getattr(cfg.data, key):
            for path in (source["path"], source["image_root"]):
                if path is not None and not Path(path).exists():
                    where = "" if Path(path).is_absolute() else \
                        f" (relative paths are taken from the working directory, {os.getcwd()})"
                    raise MoveNetError(f"{label}: data.{key} {path} not found{where}")
    return cfg


def config_from_dict(raw: dict, label: str = "config") -> TrainConfig:
    try:
        cfg = build(TrainConfig, raw, "")
        _expand_home(cfg)
        _sync_input_size(cfg, raw)
        _sync_num_keypoints(cfg)
    except ConfigError as e:
        raise MoveNetError(f"{label}: {e}") from None
    except (ValueError, TypeError) as e:  # a dataclass' own validation
        raise MoveNetError(f"{label}: {str(e).splitlines()[0]}") from None
    return cfg


def _expand_home(cfg: TrainConfig) -> None:
    """``~`` in the paths a config names, as a shell would expand it on the command line (the
    data sources' paths are expanded where they are read, ``samples._source_dict``)."""
    cfg.out_dir = os.path.expanduser(cfg.out_dir)
    cfg.init = os.path.expanduser(cfg.init)
    cfg.distill.teacher = os.path.expanduser(cfg.distill.teacher)
    cfg.distill.unlabeled = [os.path.expanduser(p) for p in cfg.distill.unlabeled]


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _sync_input_size(cfg: TrainConfig, raw: dict) -> None:
    """The samples' input size follows the model's; setting both differently is an error."""
    model_size = cfg.model_config().input_size
    given = isinstance(raw.get("data"), dict) and "input_size" in raw["data"]
    if given and cfg.data.input_size != model_size:
        raise ConfigError(f"data.input_size {cfg.data.input_size} differs from the model's input "
                          f"size {model_size} (set model.overrides.input_size)")
    cfg.data.input_size = model_size


def _sync_num_keypoints(cfg: TrainConfig) -> None:
    """The model's keypoint count follows the schema's; setting both differently is an error."""
    schema = cfg.keypoint_schema()
    k = schema.num_keypoints
    if cfg.loss.bone > 0 and not schema.skeleton:
        raise ConfigError(f"loss.bone needs the schema's skeleton (the bones), and schema {schema.name} has none")
    unknown = [name for name in cfg.init_keypoints if name not in schema.keypoints]
    if unknown:
        raise ConfigError(f"init_keypoints: {some_of(unknown)} not among the keypoints of schema {schema.name}")
    given = cfg.model.overrides.get("num_keypoints")
    if given is not None and given != k:
        raise ConfigError(f"model.overrides.num_keypoints {given} differs from the schema's {k} keypoints "
                          "(the model follows the schema: leave it out)")
    if cfg.model_config().num_keypoints != k:
        cfg.model.overrides["num_keypoints"] = k


class ConfigError(ValueError):
    pass


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers with an exponent as YAML 1.2 does: ``1e-4``, ``3e9``
    and ``1.0e9`` are floats (YAML 1.1 wants a dot and a signed exponent, ``1.0e+9``, and reads
    the others as strings). A key given twice in one mapping is an error, not the last one wins
    silently (a setting edited in one place and overridden further down)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key == "<<" or not isinstance(key, (str, int, float, bool, type(None))):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error in a few words and the line it found it on (its own text quotes the
    source as "<unicode string>" and draws a caret under it, over several lines)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if problem is None or mark is None:
        return " ".join(str(e).split())
    return f"{problem}, line {mark.line + 1}, column {mark.column + 1}"


def read_yaml(text: str):
    """A config's YAML text -> Python values (``yaml.safe_load`` with YAML 1.2's exponents)."""
    return yaml.load(text, Loader=_ConfigLoader)


def _apply_override(raw: dict, item: str, label: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise MoveNetError(f"{label}: override {item!r} is not key=value")
    try:
        value = read_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    _field_type(TrainConfig, key.split("."), f"{label} (override {item})")  # fail early on unknown keys
    node = raw
    parts = key.split(".")
    if parts[0] == "schema" and len(parts) > 1:  # a sub-key of a built-in schema: start from its mapping
        from .schema import SCHEMAS
        name = raw.get("schema", TrainConfig.schema)
        if isinstance(name, str) and name in SCHEMAS:
            raw["schema"] = SCHEMAS[name].to_dict()
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is not None and not isinstance(child, dict):  # e.g. schema: coco17, a name
            raise MoveNetError(f"{label}: {'.'.join(parts[:i + 1])} is {child!r}, not a mapping; set it "
                               f"whole ({'.'.join(parts[:i + 1])}={{...}}) instead of {key}")
        if child is None:
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _field_type(cls, parts: list[str], label: str):
    """The declared type at a dotted path (dict fields accept any sub-key)."""
    tp: Any = cls
    for i, part in enumerate(parts):
        if _origin(tp) is dict or tp is dict or tp is Any:  # free-form (model.overrides, a schema mapping)
            return Any
        tp = _unwrap_optional(tp)
        if not dataclasses.is_dataclass(tp):
            raise MoveNetError(f"{label}: {'.'.join(parts[:i])} has no sub-keys (got {'.'.join(parts)})")
        hints = typing.get_type_hints(tp)
        if part not in hints:
            where = ".".join(parts[:i]) or "the top level"
            raise MoveNetError(f"{label}: unknown key {'.'.join(parts)!r} (known at {where}: "
                               f"{', '.join(hints)})")
        tp = hints[part]
    return tp


# ---------------------------------------------------------------- typed construction
def build(cls, data: Any, where: str):
    """Construct dataclass ``cls`` from a dict, recursively, checking keys and types."""
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in hints]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"unknown key {key!r} (known at {where or 'the top level'}: {', '.join(hints)})")
    kwargs = {k: convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def convert(tp, value: Any, key: str):
    """Check/convert ``value`` to the annotated type ``tp`` (ints widen to floats)."""
    if tp is Any:
        return value
    origin, args = _origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (list, tuple):
        if origin is list and args == (str,) and isinstance(value, str):
            value = [value]  # `unlabeled: ../photos` for a list of one path
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # ("3e-4" in a mapping given from Python)
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {str(value).lower()} (YAML reads yes, no, on and off "
                              "as true or false: quote the word; null means none)")
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _origin(tp):
    return typing.get_origin(tp)


def _unwrap_optional(tp):
    if _origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _plain(obj):
    """Tuples -> lists, recursively (YAML-safe)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def config_changes(before: dict, after: dict, prefix: str = "") -> list[str]:
    """``key old -> new`` for every setting that differs between two config dicts (nested keys
    dotted); the run folder (out_dir) does not count."""
    changes = []
    for key in sorted(set(before) | set(after)):
        name, old, new = f"{prefix}{key}", before.get(key), after.get(key)
        if name == "out_dir" or old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{name}.")
        else:
            changes.append(f"{name} {old} -> {new}")
    return changes
