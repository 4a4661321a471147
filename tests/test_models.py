"""Contract of every registered model variant: shapes, finite outputs, backward, state-dict
round trip, deterministic eval. A new variant is tested the moment it is registered."""
import pytest
import torch

from movenet.backbones import create_backbone, list_backbones
from movenet.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from movenet.model import create_model, list_models


SMALL = 64  # training-path checks run at a small input to stay fast on CPU


@pytest.fixture(scope="module", params=list_models())
def model(request):
    torch.manual_seed(0)
    return create_model(request.param, input_size=SMALL)


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_and_ranges_at_the_registered_size(name):
    model = create_model(name).eval()
    s = model.config.input_size
    k = model.config.num_keypoints
    with torch.no_grad():
        heat, center, reg, off = model(torch.rand(2, 3, s, s) * 255)
    g = s // 4
    assert heat.shape == (2, k, g, g) and center.shape == (2, 1, g, g)
    assert reg.shape == (2, 2 * k, g, g) and off.shape == (2, 2 * k, g, g)
    for t in (heat, center, reg, off):
        assert torch.isfinite(t).all()
    assert 0 <= heat.min() and heat.max() <= 1 and 0 <= center.min() and center.max() <= 1


def test_backward_reaches_every_parameter(model):
    s = model.config.input_size
    model.train()
    model.zero_grad()
    out = model(torch.rand(2, 3, s, s) * 255)
    sum(o.float().square().mean() for o in out).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad()


def test_state_dict_round_trip_and_eval_determinism(model, tmp_path):
    s = model.config.input_size
    model.eval()
    x = torch.rand(1, 3, s, s) * 255
    with torch.no_grad():
        first = model(x)
        second = model(x)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model)
    loaded, _ = model_from_checkpoint(read_checkpoint(path), path)
    with torch.no_grad():
        again = loaded(x)
    for a, b in zip(first, again):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_backbones_return_four_strides(name, width):
    net = create_backbone(name, width).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    assert [f.shape[1] for f in feats] == list(net.out_channels)


def shifted_output(net, x, params):
    """The net's outputs with ``params`` shifted by 0.5 (restored afterwards)."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.add_(0.5)
        out = net(x)
        for p, v in zip(params, saved):
            p.copy_(v)
    return out


@pytest.mark.parametrize("name", list_backbones())
def test_layers_to_stride_are_what_computes_the_output_at_that_stride(name):
    torch.manual_seed(0)
    net = create_backbone(name, 0.5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
    params = list(net.parameters())
    for i, stride in enumerate((4, 8, 16, 32)):
        layers = net.layers_to_stride(stride)
        inside = {id(p) for layer in layers for p in layer.parameters()}
        outside = [p for p in params if id(p) not in inside]
        last_inside = list(layers[-1].parameters())
        moved_outside, moved_inside = (shifted_output(net, x, ps) for ps in (outside, last_inside))
        # the layers not listed do not touch this output (they do touch the later ones) ...
        assert torch.equal(moved_outside[i], before[i])
        assert all(not torch.allclose(moved_outside[j], before[j]) for j in range(i + 1, 4))
        # ... and the last listed layer does
        assert not torch.allclose(moved_inside[i], before[i])
    assert not outside  # stride 32: the whole backbone
    with pytest.raises(ValueError, match="one of"):
        net.layers_to_stride(2)


def test_approx_sigmoid_is_used_and_bounded():
    torch.manual_seed(0)
    exact = create_model("mobilenetv3_small", input_size=64).eval()
    approx = create_model("mobilenetv3_small", input_size=64, approx_sigmoid=True).eval()
    approx.load_state_dict(exact.state_dict())
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        raw = exact(x, activate=False)
        h_exact, h_approx = exact(x)[0], approx(x)[0]
    assert torch.allclose(h_approx, 0.5 * raw[0] / (1 + raw[0].abs()) + 0.5)
    assert not torch.allclose(h_exact, h_approx)
    assert 0 < h_approx.min() and h_approx.max() < 1
    # Same ranking, so argmax decoding is unchanged.
    assert torch.equal(h_exact.flatten(2).argmax(-1), h_approx.flatten(2).argmax(-1))


def test_mobilenetv2_padding_option():
    tf = create_backbone("mobilenetv2", 1.0)
    sym = create_backbone("mobilenetv2", 1.0, padding="symmetric")
    sym.load_state_dict(tf.state_dict())
    x = torch.randn(1, 3, 64, 64)
    tf.eval(), sym.eval()
    with torch.no_grad():
        a, b = tf(x), sym(x)
    assert [t.shape for t in a] == [t.shape for t in b]
    assert not torch.allclose(a[0], b[0])
    with pytest.raises(ValueError, match="padding"):
        create_backbone("mobilenetv2", 1.0, padding="same")


@pytest.mark.parametrize("overrides, message", [
    ({"input_size": "224"}, "input_size must be a whole number >= 1, got '224'"),
    ({"num_keypoints": 0}, "num_keypoints must be a whole number >= 1, got 0"),
    ({"head_channels": 1.5}, "head_channels must be a whole number >= 1, got 1.5"),
    ({"width": "wide"}, "width must be a number > 0, got 'wide'"),
    ({"input_size": 200}, "input_size must be a multiple of 32, got 200"),
])
def test_a_bad_model_setting_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_model("mobilenetv2_050", **overrides)
