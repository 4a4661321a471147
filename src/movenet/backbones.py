"""Feature extractors that return four feature maps at strides 4, 8, 16 and 32.

Every backbone exposes ``out_channels`` (four ints, stride 4 first) and ``forward(x) -> list``.
New backbones are registered with ``@register_backbone`` and become usable by name in model
configs at once.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _BACKBONES[fn.__name__] = fn
    return fn


def create_backbone(name: str, width: float = 1.0, **kwargs) -> nn.Module:
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(_BACKBONES)}")
    return _BACKBONES[name](width=width, **kwargs)


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Channel rounding of Keras/TF MobileNet (keeps at least 90% of ``v``)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + optional activation, with TensorFlow 'SAME' padding.

    For stride 2 TF pads only at the bottom/right of an even-sized input; torch's symmetric
    padding would shift every feature by half a pixel, so the pad is explicit here.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6):
        self.tf_same_stride2 = stride == 2 and kernel > 1
        padding = 0 if self.tf_same_stride2 else kernel // 2
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_same_stride2:
            # Inputs are even-sized here (input sizes are multiples of 32): TF pads k-2 in total.
            k = self[0].kernel_size[0]
            before, after = (k - 2) // 2, k - 2 - (k - 2) // 2
            x = F.pad(x, (before, after, before, after))
        return super().forward(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBNAct(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBNAct(hidden, cout, 1, act=None)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.use_residual else y


# (expansion, channels, repeats, stride) of MobileNetV2.
_MBV2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    """Keras-layout MobileNetV2 (blocks numbered as Keras' ``block_N``; block 0 is
    ``expanded_conv``). Features: block_2 (s4), block_5 (s8), block_9 (s16), Conv_1 (s32),
    the taps of MoveNet's ``center_net_mobile_net_v2fpn_feature_extractor``."""

    taps = (2, 5, 9)

    def __init__(self, width: float = 1.0, last_channels: int = 1280):
        super().__init__()
        first = make_divisible(32 * width)
        self.conv1 = ConvBNAct(3, first, 3, 2)
        blocks: list[nn.Module] = []
        cin = first
        channels = []
        for t, c, n, s in _MBV2_SETTINGS:
            cout = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                channels.append(cout)
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.conv_last = ConvBNAct(cin, last_channels, 1)
        self.out_channels = [channels[i] for i in self.taps] + [last_channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = self.conv1(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        feats.append(self.conv_last(x))
        return feats


@register_backbone
def mobilenetv2(width: float = 1.0, **kwargs) -> nn.Module:
    return MobileNetV2(width=width, **kwargs)
