"""Feature extractors that return four feature maps at strides 4, 8, 16 and 32.

Every backbone exposes ``out_channels`` (four ints, stride 4 first), ``forward(x) -> list`` and
``layers_to_stride(s)``: the modules that compute its output at stride ``s`` from the image (so
training can freeze them). New backbones are registered with ``@register_backbone`` and become
usable by name in model configs at once.
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


FEATURE_STRIDES = (4, 8, 16, 32)


def blocks_to_stride(stem: nn.Module, blocks: nn.ModuleList, taps: tuple[int, ...], last: nn.Module,
                     stride: int) -> list[nn.Module]:
    """The modules from the image to the output at ``stride``: ``stem``, the blocks up to the
    one tapped for that stride (``taps``: the blocks giving strides 4, 8, 16; -1 for the stem)
    and, at 32, all blocks and ``last``."""
    if stride not in FEATURE_STRIDES:
        raise ValueError(f"a backbone stride must be one of {list(FEATURE_STRIDES)}, got {stride!r}")
    if stride == 32:
        return [stem, *blocks, last]
    return [stem, *blocks[:taps[FEATURE_STRIDES.index(stride)] + 1]]


def tapped_forward(x: torch.Tensor, blocks: nn.ModuleList, taps: tuple[int, ...],
                   last: nn.Module) -> list[torch.Tensor]:
    """Run ``blocks``, keeping the outputs of the tapped ones, then ``last`` on the end."""
    feats = []
    for i, block in enumerate(blocks):
        x = block(x)
        if i in taps:
            feats.append(x)
    feats.append(last(x))
    return feats


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + optional activation, with TensorFlow 'SAME' padding.

    For stride 2 TF pads only at the bottom/right of an even-sized input; torch's symmetric
    padding would shift every feature by half a pixel, so the pad is explicit here.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6, tf_padding: bool = True):
        self.tf_same_stride2 = tf_padding and stride == 2 and kernel > 1
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
    def __init__(self, cin: int, cout: int, stride: int, expansion: int, tf_padding: bool = True):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBNAct(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, tf_padding=tf_padding)
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
    the taps of MoveNet's ``center_net_mobile_net_v2fpn_feature_extractor``.
    ``padding="symmetric"`` pads stride-2 convolutions on all sides as torchvision does."""

    taps = (2, 5, 9)

    def __init__(self, width: float = 1.0, last_channels: int = 1280, padding: str = "tf"):
        super().__init__()
        if padding not in ("tf", "symmetric"):
            raise ValueError(f"padding must be 'tf' or 'symmetric', got {padding!r}")
        tf_padding = padding == "tf"
        first = make_divisible(32 * width)
        self.conv1 = ConvBNAct(3, first, 3, 2, tf_padding=tf_padding)
        blocks: list[nn.Module] = []
        cin = first
        channels = []
        for t, c, n, s in _MBV2_SETTINGS:
            cout = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, tf_padding))
                channels.append(cout)
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.conv_last = ConvBNAct(cin, last_channels, 1)
        self.out_channels = [channels[i] for i in self.taps] + [last_channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return tapped_forward(self.conv1(x), self.blocks, self.taps, self.conv_last)

    def layers_to_stride(self, stride: int) -> list[nn.Module]:
        return blocks_to_stride(self.conv1, self.blocks, self.taps, self.conv_last, stride)


@register_backbone
def mobilenetv2(width: float = 1.0, **kwargs) -> nn.Module:
    return MobileNetV2(width=width, **kwargs)


# ---------------------------------------------------------------- ShuffleNetV2
def _channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits the channels in half and transforms one half;
    stride 2 transforms both copies (one through a depthwise shortcut) and doubles the width."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 2:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))
            branch_in = cin
        else:
            self.shortcut = None
            branch_in = half
        self.branch = nn.Sequential(
            nn.Conv2d(branch_in, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.branch(b)], dim=1)
        else:
            out = torch.cat([self.shortcut(x), self.branch(x)], dim=1)
        return _channel_shuffle(out)


# Stage widths (s8, s16, s32) and last conv of the published ShuffleNetV2 widths.
_SHUFFLE_WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024),
                   1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048)}


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 (Ma et al. 2018). Features: stem after max-pool (s4), stages 2-3 (s8,
    s16), last 1x1 conv (s32). Widths other than the published ones scale the 1.0 widths
    (rounded to multiples of 16 so the channel split stays even)."""

    def __init__(self, width: float = 1.0, repeats: tuple[int, int, int] = (4, 8, 4)):
        super().__init__()
        if width in _SHUFFLE_WIDTHS:
            *stages, last = _SHUFFLE_WIDTHS[width]
        else:
            stages, last = [make_divisible(c * width, 16) for c in (116, 232, 464)], 1024
        stem = 24
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        cin = stem
        self.stages = nn.ModuleList()
        for cout, n in zip(stages, repeats):
            units = [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*units))
            cin = cout
        self.conv_last = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last),
                                       nn.ReLU(inplace=True))
        self.out_channels = [stem, stages[0], stages[1], last]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f4 = self.stem(x)
        f8 = self.stages[0](f4)
        f16 = self.stages[1](f8)
        return [f4, f8, f16, self.conv_last(self.stages[2](f16))]

    def layers_to_stride(self, stride: int) -> list[nn.Module]:
        return blocks_to_stride(self.stem, self.stages, (-1, 0, 1), self.conv_last, stride)


@register_backbone
def shufflenetv2(width: float = 1.0, **kwargs) -> nn.Module:
    return ShuffleNetV2(width=width, **kwargs)


# ---------------------------------------------------------------- MobileNetV3
class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = make_divisible(channels // 4)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class MobileNetV3Block(nn.Module):
    def __init__(self, cin: int, kernel: int, hidden: int, cout: int, se: bool, act: type[nn.Module], stride: int):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), act()]
        if se:
            layers.append(SqueezeExcite(hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.use_residual else y


_HS, _RE = nn.Hardswish, nn.ReLU
# (kernel, expanded, out, SE, activation, stride) per block, from the MobileNetV3 paper.
_MBV3_LARGE = [(3, 16, 16, False, _RE, 1), (3, 64, 24, False, _RE, 2), (3, 72, 24, False, _RE, 1),
               (5, 72, 40, True, _RE, 2), (5, 120, 40, True, _RE, 1), (5, 120, 40, True, _RE, 1),
               (3, 240, 80, False, _HS, 2), (3, 200, 80, False, _HS, 1), (3, 184, 80, False, _HS, 1),
               (3, 184, 80, False, _HS, 1), (3, 480, 112, True, _HS, 1), (3, 672, 112, True, _HS, 1),
               (5, 672, 160, True, _HS, 2), (5, 960, 160, True, _HS, 1), (5, 960, 160, True, _HS, 1)]
_MBV3_SMALL = [(3, 16, 16, True, _RE, 2), (3, 72, 24, False, _RE, 2), (3, 88, 24, False, _RE, 1),
               (5, 96, 40, True, _HS, 2), (5, 240, 40, True, _HS, 1), (5, 240, 40, True, _HS, 1),
               (5, 120, 48, True, _HS, 1), (5, 144, 48, True, _HS, 1), (5, 288, 96, True, _HS, 2),
               (5, 576, 96, True, _HS, 1), (5, 576, 96, True, _HS, 1)]


class MobileNetV3(nn.Module):
    """MobileNetV3 (Howard et al. 2019), large or small. Features: the last block at each of
    strides 4, 8, 16, and the last 1x1 conv (960 / 576 x width) at stride 32."""

    def __init__(self, settings: list[tuple], width: float = 1.0):
        super().__init__()
        first = make_divisible(16 * width)
        self.stem = nn.Sequential(nn.Conv2d(3, first, 3, 2, 1, bias=False), nn.BatchNorm2d(first), nn.Hardswish())
        blocks: list[nn.Module] = []
        strides, channels = [], []
        cin, stride = first, 2
        for kernel, hidden, cout, se, act, s in settings:
            cout, hidden = make_divisible(cout * width), make_divisible(hidden * width)
            blocks.append(MobileNetV3Block(cin, kernel, hidden, cout, se, act, s))
            stride *= s
            strides.append(stride)
            channels.append(cout)
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        last = 6 * cin
        self.conv_last = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.Hardswish())
        # Tap the last block of each stride 4, 8, 16.
        self.taps = tuple(max(i for i, s in enumerate(strides) if s == target) for target in (4, 8, 16))
        self.out_channels = [channels[i] for i in self.taps] + [last]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return tapped_forward(self.stem(x), self.blocks, self.taps, self.conv_last)

    def layers_to_stride(self, stride: int) -> list[nn.Module]:
        return blocks_to_stride(self.stem, self.blocks, self.taps, self.conv_last, stride)


@register_backbone
def mobilenetv3_large(width: float = 1.0, **kwargs) -> nn.Module:
    return MobileNetV3(_MBV3_LARGE, width=width, **kwargs)


@register_backbone
def mobilenetv3_small(width: float = 1.0, **kwargs) -> nn.Module:
    return MobileNetV3(_MBV3_SMALL, width=width, **kwargs)
