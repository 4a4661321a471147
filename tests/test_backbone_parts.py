"""The backbones' building blocks against the published architectures: channel rounding,
widths, parameter counts, ShuffleNetV2 units, MobileNetV3 squeeze-excite and residuals."""
import pytest
import torch
from torch import nn

from movenet.backbones import (MobileNetV3Block, ShuffleUnit, SqueezeExcite, _channel_shuffle, create_backbone,
                               make_divisible)


def reference_make_divisible(v, divisor=8):
    """torchvision.models._utils._make_divisible (from TF's MobileNet code)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def test_make_divisible_rounds_as_keras_and_torchvision():
    for v, expected in [(2, 8), (18, 24), (60, 64), (28, 32), (42, 40), (16 * 0.5, 8), (32 * 1.75, 56)]:
        assert make_divisible(v) == expected == reference_make_divisible(v), v
    for v in [c * w for c in (16, 24, 32, 64, 96, 160, 320) for w in (0.35, 0.5, 0.75, 1.0, 1.3, 1.75)]:
        assert make_divisible(v) == reference_make_divisible(v), v


@pytest.mark.parametrize("name, width, out_channels, params", [
    # params: the published models' feature extractors (torchvision's counts less the classifier)
    ("mobilenetv2", 1.0, [24, 32, 64, 1280], 2_223_872),
    ("mobilenetv2", 1.75, [40, 56, 112, 1280], 6_139_552),
    ("mobilenetv2", 0.5, [16, 16, 32, 1280], 687_680),
    ("shufflenetv2", 0.5, [24, 48, 96, 1024], 341_792),
    ("shufflenetv2", 1.0, [24, 116, 232, 1024], 1_253_604),
    ("shufflenetv2", 0.75, [24, 80, 176, 1024], 812_544),  # unpublished: 1.0 scaled, multiples of 16
    ("mobilenetv3_large", 1.0, [24, 40, 112, 960], 2_971_952),
    ("mobilenetv3_small", 1.0, [16, 24, 48, 576], 927_008),
])
def test_backbone_widths_and_sizes(name, width, out_channels, params):
    net = create_backbone(name, width)
    assert net.out_channels == out_channels
    assert sum(p.numel() for p in net.parameters()) == params


def test_unknown_backbone_is_a_value_error_naming_the_known():
    with pytest.raises(ValueError, match=r"unknown backbone 'nope'; known: \['mobilenetv2', 'mobilenetv3_large', "
                                         r"'mobilenetv3_small', 'shufflenetv2'\]"):
        create_backbone("nope")


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert _channel_shuffle(x).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_stride1_shuffle_unit_passes_the_first_half_through():
    torch.manual_seed(0)
    unit = ShuffleUnit(16, 16, 1).eval()
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        y = unit(x)
    assert torch.equal(y[:, 0::2], x[:, :8])  # untouched half, interleaved by the shuffle
    branch = y[:, 1::2]
    assert (branch >= 0).all() and (branch > 0).any()  # the branch ends in a ReLU


def test_squeeze_excite_scales_by_hardsigmoid():
    se = SqueezeExcite(16)
    bias = torch.linspace(-4, 4, 16)
    with torch.no_grad():
        for p in se.parameters():
            p.zero_()
        se.expand.bias.copy_(bias)
    x = torch.randn(2, 16, 3, 3)
    with torch.no_grad():
        y = se(x)
    gate = (bias / 6 + 0.5).clamp(0, 1).view(1, 16, 1, 1)
    torch.testing.assert_close(y, x * gate)


def test_mobilenetv3_block_with_equal_widths_is_residual():
    block = MobileNetV3Block(16, 3, 64, 16, True, nn.Hardswish, 1).eval()
    assert block.use_residual
    with torch.no_grad():
        block.body[-1].weight.zero_()  # the last batch norm: the body adds nothing
        block.body[-1].bias.zero_()
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    assert not MobileNetV3Block(16, 3, 64, 24, False, nn.ReLU, 1).use_residual
    assert not MobileNetV3Block(16, 3, 64, 16, False, nn.ReLU, 2).use_residual


@pytest.mark.parametrize("name", ["mobilenetv3_large", "mobilenetv3_small"])
def test_mobilenetv3_stem_activation_is_hardswish(name):
    assert isinstance(create_backbone(name).stem[-1], nn.Hardswish)
