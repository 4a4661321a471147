"""Initialisation: ImageNet MobileNetV2 (mapping checked against an independent computation
on torchvision's state dict and by classifying photos), Google's weights, checkpoints."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from movenet import pretrained
from movenet.backbones import MobileNetV2
from movenet.checkpoint import save_checkpoint
from movenet.errors import MoveNetError
from movenet.image import read_image
from movenet.model import create_model

ASTRONAUT = Path(pretrained.__file__).parent / "assets" / "astronaut.jpg"
CATS = {281, 282, 283, 284, 285}          # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {504, 967, 968}                   # coffee mug, espresso, cup
HEADGEAR = {518, 560}                      # crash helmet, football helmet


@pytest.fixture(scope="module")
def torchvision_state():
    try:
        return pretrained.load_torchvision_mobilenetv2(verbose=False)
    except MoveNetError as e:
        pytest.skip(f"ImageNet weights unavailable: {e}")


def reference_features(tv: dict, x: torch.Tensor) -> torch.Tensor:
    """torchvision's MobileNetV2 forward written directly on its state dict (its own names,
    symmetric padding), independent of our module layout."""
    def conv_bn(x, conv, bn, stride=1, groups=1, act=True):
        w = tv[f"{conv}.weight"]
        x = F.conv2d(x, w, None, stride, w.shape[-1] // 2, 1, groups)
        x = F.batch_norm(x, tv[f"{bn}.running_mean"], tv[f"{bn}.running_var"], tv[f"{bn}.weight"],
                         tv[f"{bn}.bias"], False, 0.0, 1e-5)
        return F.relu6(x) if act else x

    x = conv_bn(x, "features.0.0", "features.0.1", 2)
    x = conv_bn(x, "features.1.conv.0.0", "features.1.conv.0.1", 1, x.shape[1])
    x = conv_bn(x, "features.1.conv.1", "features.1.conv.2", act=False)
    i = 2
    for c, n, s in [(24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]:
        for j in range(n):
            p = f"features.{i}.conv"
            h = conv_bn(x, f"{p}.0.0", f"{p}.0.1")
            h = conv_bn(h, f"{p}.1.0", f"{p}.1.1", s if j == 0 else 1, h.shape[1])
            h = conv_bn(h, f"{p}.2", f"{p}.3", act=False)
            x = x + h if h.shape == x.shape else h
            i += 1
    return conv_bn(x, "features.18.0", "features.18.1")


def imagenet_input(img: np.ndarray) -> torch.Tensor:
    """RGB uint8 -> 224x224 float 0..255 NCHW (our models normalise inside)."""
    small = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    return torch.from_numpy(small.transpose(2, 0, 1)[None].copy())


def top5(model, tv, x) -> set[int]:
    with torch.no_grad():
        feats = model.backbone((x - model.norm_mean) * model.norm_scale - model.norm_shift)[-1]
        logits = F.linear(feats.mean((2, 3)), tv["classifier.1.weight"], tv["classifier.1.bias"])
    return set(logits.topk(5).indices[0].tolist())


def test_mapping_reproduces_torchvision_exactly(torchvision_state):
    backbone = MobileNetV2(padding="symmetric").eval()
    backbone.load_state_dict(pretrained.torchvision_to_backbone(torchvision_state))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ours, ref = backbone(x)[-1], reference_features(torchvision_state, x)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_imagenet_init_classifies_photos(torchvision_state):
    skdata = pytest.importorskip("skimage.data")
    model = create_model("lightning").eval()
    message = pretrained.init_model(model, "imagenet", verbose=False)
    assert "ImageNet" in message
    # Our TF-style padding shifts features by half a pixel; classes stay right.
    assert top5(model, torchvision_state, imagenet_input(read_image(ASTRONAUT))) & HEADGEAR
    assert top5(model, torchvision_state, imagenet_input(skdata.chelsea())) & CATS
    assert top5(model, torchvision_state, imagenet_input(skdata.coffee())) & COFFEE


def test_imagenet_init_sets_and_saves_the_normalisation(torchvision_state, tmp_path):
    from movenet.checkpoint import load_model

    model = create_model("lightning")
    pretrained.init_model(model, "imagenet", verbose=False)
    norm = pretrained.imagenet_normalisation()
    assert model.config.norm_shift == 0.0 and model.norm_shift == 0.0
    assert torch.allclose(model.norm_mean.flatten(), torch.tensor(norm["norm_mean"]))
    # A white pixel maps to ImageNet's normalised white.
    white = (torch.full((1, 3, 1, 1), 255.0) - model.norm_mean) * model.norm_scale
    expected = (1 - torch.tensor(pretrained.IMAGENET_MEAN)) / torch.tensor(pretrained.IMAGENET_STD)
    assert torch.allclose(white.flatten(), expected, atol=1e-5)
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.config.norm_mean == model.config.norm_mean and loaded.norm_shift == 0.0
    x = torch.rand(1, 3, 192, 192) * 255
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])


def test_imagenet_init_refuses_other_backbones():
    with pytest.raises(MoveNetError, match="mobilenetv2 width 1.0 only.*shufflenetv2"):
        pretrained.init_model(create_model("shufflenetv2_x0_5"), "imagenet")



def test_imagenet_init_refuses_a_backbone_its_kwargs_changed(torchvision_state):
    with pytest.raises(MoveNetError, match=r"imagenet: torchvision's MobileNetV2 does not fit this backbone "
                                           r"\(conv_last.0.weight: \[1280, 320, 1, 1\] vs \[640, 320, 1, 1\]; "
                                           r"backbone_kwargs \{'last_channels': 640\}\)"):
        pretrained.init_model(create_model("lightning", backbone_kwargs={"last_channels": 640}), "imagenet",
                              verbose=False)
    symmetric = create_model("lightning", backbone_kwargs={"padding": "symmetric"})  # (no layer changes)
    assert "ImageNet" in pretrained.init_model(symmetric, "imagenet", verbose=False)


def test_init_from_checkpoint_loads_matching_weights(tmp_path):
    torch.manual_seed(0)
    source = create_model("mobilenetv3_small", input_size=64)
    with torch.no_grad():
        source.regression.out.bias.fill_(0.25)
    save_checkpoint(tmp_path / "a.pt", source)
    target = create_model("mobilenetv3_small", input_size=96)  # other input size: same weights
    assert "a.pt" in pretrained.init_model(target, tmp_path / "a.pt")
    for name, p in source.named_parameters():
        assert torch.equal(p, dict(target.named_parameters())[name]), name
    assert target.center_prior.shape == (24, 24)  # decoding constants of its own size
    assert float(target.coord_scale) == pytest.approx(1 / 24)
    torch.testing.assert_close(target.center_prior, create_model("mobilenetv3_small", input_size=96).center_prior)


def test_init_from_checkpoint_of_another_architecture_is_one_line_error(tmp_path):
    save_checkpoint(tmp_path / "shuffle.pt", create_model("shufflenetv2_x0_5", input_size=64))
    with pytest.raises(MoveNetError) as err:
        pretrained.init_model(create_model("mobilenetv2_050", input_size=64), tmp_path / "shuffle.pt")
    msg = str(err.value)
    assert "shuffle.pt" in msg and "shufflenetv2 width 0.5 do not fit mobilenetv2 width 0.5" in msg
    assert "\n" not in msg
    with pytest.raises(MoveNetError, match="missing.pt: no such checkpoint, and not one of scratch, imagenet, "
                                           "lightning, thunder"):
        pretrained.init_model(create_model("mobilenetv2_050"), tmp_path / "missing.pt")


def test_init_from_google_weights(lightning):
    model = create_model("lightning", input_size=256)
    assert "lightning" in pretrained.init_model(model, "lightning", verbose=False)
    for name, p in lightning.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name])
    assert float(model.coord_scale) == pytest.approx(1 / 64) and model.center_prior.shape == (64, 64)
    assert float(model.distance_offset) == pytest.approx(float(lightning.distance_offset))
    # the same weights at 256 find the astronaut's pose where they find it at 192
    from movenet.cli import BUILTIN_IMAGE
    from movenet.image import read_image
    from movenet.predict import TorchPredictor

    img = read_image(BUILTIN_IMAGE)
    at_192, at_256 = TorchPredictor(lightning)(img), TorchPredictor(model.eval())(img)
    sure = (at_192[:, 2] > 0.3) & (at_256[:, 2] > 0.3)
    assert sure.sum() >= 8
    assert np.median(np.linalg.norm(at_256[sure, :2] - at_192[sure, :2], axis=1)) < 0.02 * max(img.shape[:2])
    with pytest.raises(MoveNetError, match="do not fit"):
        pretrained.init_model(create_model("thunder"), "lightning", verbose=False)


def test_scratch_changes_nothing():
    model = create_model("mobilenetv2_050", input_size=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pretrained.init_model(model, "scratch")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
