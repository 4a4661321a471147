"""MoveNet: backbone + FPN neck fused to stride 4 + four CenterNet-style heads.

Layer layout mirrors Google's graph one to one (see ``weights.py`` for the name mapping):
neck ``center_net_mobile_net_v2fpn_feature_extractor`` and heads ``kpt_heatmap_0``,
``center_0``, ``kpt_regress_0``, ``kpt_offset_0``. Batch norms stay separate here so the
model trains normally; Google's folded weights load with identity batch norms.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_backbone, list_backbones
from .limits import MAX_INPUT_SIZE

# Offset added to the distance in the keypoint weighting of the decoder; Google's graph
# stores 1.7998047 (1.8 in float16), and the converted weights carry that exact value.
DEFAULT_DISTANCE_OFFSET = 1.8


@dataclass
class ModelConfig:
    backbone: str = "mobilenetv2"
    width: float = 1.0
    input_size: int = 192
    num_keypoints: int = 17
    neck_channels: tuple[int, int, int, int] = (24, 32, 64, 64)  # output width at s4, s8, s16, s32
    head_channels: int = 96
    approx_sigmoid: bool = False
    # Input normalisation inside the network: x_norm = (x - mean) * scale, x is RGB 0..255.
    norm_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    norm_scale: tuple[float, float, float] = (1 / 127.5, 1 / 127.5, 1 / 127.5)
    norm_shift: float = 1.0  # subtracted after scaling (Google: x / 127.5 - 1)
    backbone_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("input_size", "num_keypoints", "head_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model {name} must be a whole number >= 1, got {value!r}")
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)) or not self.width > 0:
            raise ValueError(f"model width must be a number > 0, got {self.width!r}")
        if self.input_size % 32:
            raise ValueError(f"model input_size must be a multiple of 32, got {self.input_size}")
        if self.input_size > MAX_INPUT_SIZE:
            raise ValueError(f"model input_size must be at most {MAX_INPUT_SIZE}, got {self.input_size}")
        if self.backbone not in list_backbones():
            raise ValueError(f"model backbone must be one of {list_backbones()}, got {self.backbone!r}")
        if self.approx_sigmoid in (0, 1) and not isinstance(self.approx_sigmoid, float):
            self.approx_sigmoid = bool(self.approx_sigmoid)  # (1 and 0, as earlier checkpoints may hold)
        if not isinstance(self.approx_sigmoid, bool):
            raise ValueError(f"model approx_sigmoid must be true or false, got {self.approx_sigmoid!r}")
        if not isinstance(self.backbone_kwargs, dict):
            raise ValueError(f"model backbone_kwargs must be a mapping, got {self.backbone_kwargs!r}")
        self.neck_channels = _numbers("neck_channels", self.neck_channels, 4, whole=True)
        self.norm_mean = _numbers("norm_mean", self.norm_mean, 3)
        self.norm_scale = _numbers("norm_scale", self.norm_scale, 3)
        if self.neck_channels[2] != self.neck_channels[3]:
            raise ValueError("model neck_channels: the stride-16 and stride-32 widths must be equal (the stride-16 "
                             f"lateral adds to the upsampled stride-32 map), got {list(self.neck_channels)}")
        if 0 in self.norm_scale:
            raise ValueError(f"model norm_scale must not hold 0 (the model would see no input), got "
                             f"{list(self.norm_scale)}")
        if isinstance(self.norm_shift, bool) or not isinstance(self.norm_shift, (int, float)) \
                or not math.isfinite(self.norm_shift):
            raise ValueError(f"model norm_shift must be a finite number, got {self.norm_shift!r}")

    @property
    def output_size(self) -> int:
        return self.input_size // 4

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("neck_channels", "norm_mean", "norm_scale"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


def _numbers(name: str, values, count: int, whole: bool = False) -> tuple:
    """``values`` as a tuple of ``count`` finite numbers (whole numbers >= 1 with ``whole``)."""
    def ok(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return not whole or (isinstance(v, int) and v >= 1)

    if not isinstance(values, (list, tuple)) or len(values) != count or not all(map(ok, values)):
        what = "whole numbers >= 1" if whole else "finite numbers"
        raise ValueError(f"model {name} must be {count} {what}, got {values!r}")
    return tuple(values)


class SeparableConv(nn.Module):
    """Depthwise 3x3 (no bias) + pointwise 1x1, as Keras' SeparableConv2D."""

    def __init__(self, cin: int, cout: int, batch_norm: bool):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(cout) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.pointwise(self.depthwise(x))))


class FPNNeck(nn.Module):
    """Top-down FPN: 1x1 laterals, bilinear x2 upsampling, add, separable conv; ends at s4."""

    def __init__(self, in_channels: list[int], channels: tuple[int, int, int, int]):
        super().__init__()
        c4, c8, c16, c32 = channels
        self.lateral32 = nn.Conv2d(in_channels[3], c32, 1)
        self.lateral16 = nn.Conv2d(in_channels[2], c32, 1)
        self.fuse16 = SeparableConv(c32, c8, batch_norm=True)
        self.lateral8 = nn.Conv2d(in_channels[1], c8, 1)
        self.fuse8 = SeparableConv(c8, c4, batch_norm=True)
        self.lateral4 = nn.Conv2d(in_channels[0], c4, 1)
        self.fuse4 = SeparableConv(c4, c4, batch_norm=True)
        self.out_channels = c4  # (c16 == c32: ModelConfig checks it)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        # half_pixel_centers=True, align_corners=False in TF == torch's align_corners=False.
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        f4, f8, f16, f32 = feats
        x = self.fuse16(self._up(self.lateral32(f32)) + self.lateral16(f16))
        x = self.fuse8(self._up(x) + self.lateral8(f8))
        return self.fuse4(self._up(x) + self.lateral4(f4))


class Head(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, bias_init: float = 0.0):
        super().__init__()
        self.conv = SeparableConv(cin, hidden, batch_norm=False)
        self.out = nn.Conv2d(hidden, cout, 1)
        nn.init.constant_(self.out.bias, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x))


def approx_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Cheap sigmoid (no exp), for targets without a fast exp."""
    return 0.5 * x / (1 + x.abs()) + 0.5


class MoveNet(nn.Module):
    """Input: float RGB 0..255, NCHW, square of ``input_size``.

    Output: ``(heatmaps [N,K,H,W], centers [N,1,H,W], regression [N,2K,H,W],
    offsets [N,2K,H,W])``; heatmaps and centres activated (0..1) unless ``activate=False``;
    regression and offsets in grid cells, channel ``2k`` = y, ``2k+1`` = x (Google's layout).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        k = config.num_keypoints
        self.backbone = create_backbone(config.backbone, config.width, **config.backbone_kwargs)
        self.neck = FPNNeck(self.backbone.out_channels, config.neck_channels)
        c, h = self.neck.out_channels, config.head_channels
        prior_bias = -math.log((1 - 0.1) / 0.1)  # start heatmaps near 0.1, as CenterNet
        self.heatmap = Head(c, h, k, prior_bias)
        self.center = Head(c, h, 1, prior_bias)
        self.regression = Head(c, h, 2 * k)
        self.offset = Head(c, h, 2 * k)
        self.register_buffer("norm_mean", torch.tensor(config.norm_mean).view(1, 3, 1, 1))
        self.register_buffer("norm_scale", torch.tensor(config.norm_scale).view(1, 3, 1, 1))
        self.norm_shift = config.norm_shift
        # Decoding constants travel with the weights (Google's are read from its graph).
        g = config.output_size
        self.register_buffer("center_prior", default_center_prior(g))
        self.register_buffer("distance_offset", torch.tensor(DEFAULT_DISTANCE_OFFSET))
        self.register_buffer("coord_scale", torch.tensor(1.0 / g))  # grid cells -> 0..1
        self._activation: Callable[[torch.Tensor], torch.Tensor] = (
            approx_sigmoid if config.approx_sigmoid else torch.sigmoid)

    def forward(self, x: torch.Tensor, activate: bool = True):
        """[N,3,S,S] RGB 0..255 -> (heatmaps, centers, regression, offsets), as the class says."""
        x = (x - self.norm_mean) * self.norm_scale - self.norm_shift
        y = self.neck(self.backbone(x))
        heat, center = self.heatmap(y), self.center(y)
        if activate:
            heat, center = self._activation(heat), self._activation(center)
        return heat, center, self.regression(y), self.offset(y)


def default_center_prior(grid: int) -> torch.Tensor:
    """Centre weighting 1 / (distance to the grid centre + 1.8): the formula behind the
    constant Google stores in its graph (``truediv_2_recip``); a test checks it against it."""
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32),
                            torch.arange(grid, dtype=torch.float32), indexing="ij")
    c = grid / 2
    return 1.0 / (torch.sqrt((ys - c) ** 2 + (xs - c) ** 2) + DEFAULT_DISTANCE_OFFSET)


# ---------------------------------------------------------------- registry
_MODELS: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a variant: a function returning its default ``ModelConfig``."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """The registered architectures, for ``create_model`` (untrained weights; Google's trained
    Lightning and Thunder come from ``movenet.load_model("lightning")``)."""
    return sorted(_MODELS)


def model_config(name: str, **overrides) -> ModelConfig:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known: {list_models()}")
    cfg = _MODELS[name]()
    return ModelConfig.from_dict({**cfg.to_dict(), **overrides})


def create_model(name_or_config: str | ModelConfig | dict, **overrides) -> MoveNet:
    """Build an untrained model from a registered name, a ModelConfig or its dict (``overrides``:
    config fields, e.g. ``input_size=224``). For Google's trained weights use
    ``movenet.load_model("lightning")``, which returns ``(model, keypoint schema)``."""
    if isinstance(name_or_config, str):
        cfg = model_config(name_or_config, **overrides)
    elif isinstance(name_or_config, dict):
        cfg = ModelConfig.from_dict({**name_or_config, **overrides})
    else:
        cfg = ModelConfig.from_dict({**name_or_config.to_dict(), **overrides})
    return MoveNet(cfg)


@register_model
def lightning() -> ModelConfig:
    return ModelConfig(backbone="mobilenetv2", width=1.0, input_size=192)


@register_model
def thunder() -> ModelConfig:
    return ModelConfig(backbone="mobilenetv2", width=1.75, input_size=256)


@register_model
def mobilenetv2_050() -> ModelConfig:
    return ModelConfig(backbone="mobilenetv2", width=0.5, input_size=192)


@register_model
def shufflenetv2_x0_5() -> ModelConfig:
    return ModelConfig(backbone="shufflenetv2", width=0.5, input_size=192)


@register_model
def shufflenetv2_x1_0() -> ModelConfig:
    return ModelConfig(backbone="shufflenetv2", width=1.0, input_size=192)


@register_model
def mobilenetv3_small() -> ModelConfig:
    return ModelConfig(backbone="mobilenetv3_small", width=1.0, input_size=192)


@register_model
def mobilenetv3_large() -> ModelConfig:
    return ModelConfig(backbone="mobilenetv3_large", width=1.0, input_size=192)
