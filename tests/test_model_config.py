"""ModelConfig validation and round trips, head initialisation, the centre prior, create_model
overrides and the registry of variants."""
import json
import math

import pytest
import torch

from movenet import decode, weights
from movenet.checkpoint import read_checkpoint
from movenet.config import config_changes
from movenet.model import ModelConfig, create_model, default_center_prior, list_models


@pytest.mark.parametrize("fields, message", [
    ({"input_size": 208}, "input_size must be a multiple of 32, got 208"),
    ({"width": 0}, "width must be a number > 0, got 0"),
    ({"width": -0.5}, "width must be a number > 0, got -0.5"),
    ({"norm_shift": math.nan}, "norm_shift must be a finite number, got nan"),
    ({"norm_shift": math.inf}, "norm_shift must be a finite number, got inf"),
    ({"norm_mean": (0.0, 0.0, 0.0, 0.0)}, r"norm_mean must be 3 finite numbers, got \(0.0, 0.0, 0.0, 0.0\)"),
    ({"norm_scale": (1.0, 1.0)}, "norm_scale must be 3 finite numbers"),
    ({"neck_channels": (0, 32, 64, 64)}, r"neck_channels must be 4 whole numbers >= 1, got \(0, 32, 64, 64\)"),
    ({"neck_channels": (24, 32, 64, 64, 64)}, "neck_channels must be 4 whole numbers >= 1"),
])
def test_a_bad_config_field_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**fields)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown model config keys: \['bogus'\]"):
        ModelConfig.from_dict({"bogus": 1})


def test_approx_sigmoid_0_and_1_become_bools():
    """Earlier checkpoints may hold 1/0 for the flag."""
    assert ModelConfig(approx_sigmoid=1).approx_sigmoid is True
    assert ModelConfig(approx_sigmoid=0).approx_sigmoid is False
    with pytest.raises(ValueError, match="approx_sigmoid must be true or false"):
        ModelConfig(approx_sigmoid=1.0)


def test_to_dict_writes_lists_as_a_checkpoint_or_json_holds_them():
    cfg = ModelConfig()
    d = cfg.to_dict()
    for key in ("neck_channels", "norm_mean", "norm_scale"):
        assert isinstance(d[key], list), key
    stored = json.loads(json.dumps(d))  # lists, as a JSON/YAML round trip gives
    assert config_changes(stored, cfg.to_dict()) == []
    assert ModelConfig.from_dict(stored) == cfg


def test_heads_start_from_the_centernet_prior():
    model = create_model("mobilenetv2_050", input_size=64)
    for head in (model.heatmap, model.center):
        torch.testing.assert_close(torch.sigmoid(head.out.bias), torch.full_like(head.out.bias, 0.1))
    for head in (model.regression, model.offset):
        assert torch.equal(head.out.bias, torch.zeros_like(head.out.bias))


def test_separable_convs_are_biased_only_without_a_batch_norm():
    """As Keras' SeparableConv2D in Google's graph: the neck's feed a batch norm, the heads' do not."""
    model = create_model("mobilenetv2_050", input_size=64)
    for fuse in (model.neck.fuse16, model.neck.fuse8, model.neck.fuse4):
        assert fuse.pointwise.bias is None and isinstance(fuse.bn, torch.nn.BatchNorm2d)
    for head in (model.heatmap, model.center, model.regression, model.offset):
        assert head.conv.pointwise.bias is not None and isinstance(head.conv.bn, torch.nn.Identity)


@pytest.mark.parametrize("grid", [48, 56, 64])
def test_default_center_prior_is_the_decoders(grid):
    ours = default_center_prior(grid)
    torch.testing.assert_close(ours, torch.from_numpy(decode.center_prior(grid)), rtol=1e-6, atol=0)
    # the peak lies at the cell (grid/2, grid/2), 1 / 1.8
    assert ours.argmax().item() == (grid // 2) * grid + grid // 2
    assert ours.max().item() == pytest.approx(1 / 1.8)


def test_default_center_prior_is_googles(lightning, thunder):
    """Google's graph stores the prior in float16."""
    for name, google in (("lightning", lightning), ("thunder", thunder)):
        ours = create_model(name).center_prior
        torch.testing.assert_close(ours, google.center_prior, rtol=2e-3, atol=0, msg=name)


def test_create_model_applies_overrides_to_a_config_and_a_dict():
    cfg = ModelConfig(backbone="mobilenetv2", width=0.5, input_size=192)
    for given in (cfg, cfg.to_dict()):
        model = create_model(given, input_size=256)
        assert model.config.input_size == 256 and model.config.width == 0.5
        assert model.center_prior.shape == (64, 64)
    assert cfg.input_size == 192  # the given config is not changed
    assert create_model("mobilenetv2_050", input_size=256).config.input_size == 256


REGISTRY = {  # name -> (backbone, width, input size)
    "lightning": ("mobilenetv2", 1.0, 192),
    "thunder": ("mobilenetv2", 1.75, 256),
    "mobilenetv2_050": ("mobilenetv2", 0.5, 192),
    "shufflenetv2_x0_5": ("shufflenetv2", 0.5, 192),
    "shufflenetv2_x1_0": ("shufflenetv2", 1.0, 192),
    "mobilenetv3_small": ("mobilenetv3_small", 1.0, 192),
    "mobilenetv3_large": ("mobilenetv3_large", 1.0, 192),
}


def test_registered_variants():
    assert sorted(REGISTRY) == list_models()
    for name in list_models():
        cfg = create_model(name).config
        assert (cfg.backbone, cfg.width, cfg.input_size) == REGISTRY[name], name


@pytest.mark.parametrize("name", ["lightning", "thunder"])
def test_lightning_and_thunder_have_the_layout_of_googles_weights(name):
    """Names and shapes against the cached converted checkpoint, without loading it into a model."""
    path = weights.checkpoint_path(name)
    if not path.exists():
        pytest.skip(f"{path} not cached")
    theirs = read_checkpoint(path)["state_dict"]
    ours = create_model(name).state_dict()
    assert sorted(ours) == sorted(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
