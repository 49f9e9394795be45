"""Tests for the model registry and the CIFAR ResNet / MLP architectures."""

import pytest
import torch

from elr.models import create_model, list_models, register_model

CONV_MODELS = ["resnet8", "resnet18", "resnet34", "preact_resnet18"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Independent counts from the architecture description (not from the modules).
def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout  # convs have no bias


def bn(c: int) -> int:
    return 2 * c  # weight + bias


def fc(cin: int, classes: int) -> int:
    return cin * classes + classes


def resnet_formula(blocks, widths, classes, cin=3):
    total = conv(3, cin, widths[0]) + bn(widths[0])  # stem conv + BN
    inp = widths[0]
    for stage, (n, w) in enumerate(zip(blocks, widths)):
        for j in range(n):
            stride = 2 if (stage > 0 and j == 0) else 1
            total += conv(3, inp, w) + bn(w) + conv(3, w, w) + bn(w)
            if stride != 1 or inp != w:
                total += conv(1, inp, w) + bn(w)  # projection shortcut with BN
            inp = w
    return total + fc(widths[-1], classes)


def preact_formula(blocks, widths, classes, cin=3):
    total = conv(3, cin, widths[0])  # stem conv only
    inp = widths[0]
    for stage, (n, w) in enumerate(zip(blocks, widths)):
        for j in range(n):
            stride = 2 if (stage > 0 and j == 0) else 1
            total += bn(inp) + conv(3, inp, w) + bn(w) + conv(3, w, w)
            if stride != 1 or inp != w:
                total += conv(1, inp, w)  # projection shortcut, no BN
            inp = w
    return total + bn(widths[-1]) + fc(widths[-1], classes)  # final BN + classifier


def mlp_formula(d, hidden, classes):
    total, width = 0, d
    for h in hidden:
        total += width * h + h
        width = h
    return total + fc(width, classes)


@pytest.mark.parametrize("name", CONV_MODELS)
@pytest.mark.parametrize("classes", [10, 100])
def test_conv_output_shapes(name, classes):
    torch.manual_seed(0)
    model = create_model(name, classes).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, classes)
    assert model.fc.out_features == classes
    assert model.fc.in_features == model.feature_dim


@pytest.mark.parametrize("classes", [10, 100])
def test_mlp_output_shapes(classes):
    model = create_model("mlp", classes, in_features=12, hidden=(8,))
    assert model(torch.randn(4, 12)).shape == (4, classes)
    assert model(torch.randn(4, 3, 2, 2)).shape == (4, classes)
    assert model.feature_dim == 8 and model.fc.in_features == 8


def test_every_registered_model_is_covered():
    # resnet50 and inception_resnet_v2 (ImageNet-size backbones) are covered in test_backbones.py
    assert set(list_models()) == set(CONV_MODELS) | {"mlp", "resnet50", "inception_resnet_v2"}
    assert list_models() == sorted(list_models())


def test_resnet34_param_count():
    expected = resnet_formula((3, 4, 6, 3), (64, 128, 256, 512), 10)
    assert 21_200_000 < expected < 21_400_000
    assert n_params(create_model("resnet34", 10)) == expected


def test_resnet18_param_count():
    expected = resnet_formula((2, 2, 2, 2), (64, 128, 256, 512), 10)
    assert n_params(create_model("resnet18", 10)) == expected


def test_preact_resnet18_param_count():
    expected = preact_formula((2, 2, 2, 2), (64, 128, 256, 512), 10)
    assert 11_100_000 < expected < 11_250_000
    assert n_params(create_model("preact_resnet18", 10)) == expected


def test_resnet8_param_count_and_widths():
    expected = resnet_formula((1, 1, 1), (16, 32, 64), 10)
    assert expected < 200_000
    assert n_params(create_model("resnet8", 10)) == expected
    wide = create_model("resnet8", 10, widths=(32, 64, 128), in_channels=1)
    assert n_params(wide) == resnet_formula((1, 1, 1), (32, 64, 128), 10, cin=1)
    assert wide.feature_dim == 128


def test_mlp_param_count():
    model = create_model("mlp", 10, in_features=20, hidden=(16, 8), dropout=0.1)
    assert n_params(model) == mlp_formula(20, (16, 8), 10)


@pytest.mark.parametrize("name", ["resnet8", "resnet18", "preact_resnet18"])
def test_small_single_channel_input(name):
    model = create_model(name, 10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
        assert model(torch.randn(2, 1, 20, 12)).shape == (2, 10)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown model") as info:
        create_model("resnet1000", 10)
    for name in list_models():
        assert name in str(info.value)


@pytest.mark.parametrize("bad", [1, 0, -3, 2.0, "10", True, None])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet8", bad)


def test_unknown_kwarg_names_model_and_options():
    with pytest.raises(ValueError, match="resnet34") as info:
        create_model("resnet34", 10, depth=50)
    assert "depth" in str(info.value) and "in_channels" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [({"in_channels": 0}, "in_channels"), ({"widths": (16, 32)}, "widths"),
     ({"widths": (16, 0, 64)}, "widths")],
)
def test_bad_resnet_options(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        create_model("resnet8", 10, **kwargs)


def test_mlp_requires_in_features():
    with pytest.raises(ValueError, match="in_features"):
        create_model("mlp", 10)
    with pytest.raises(ValueError, match="in_features"):
        create_model("mlp", 10, in_features=0)
    with pytest.raises(ValueError, match="dropout"):
        create_model("mlp", 10, in_features=4, dropout=1.0)
    with pytest.raises(ValueError, match="hidden"):
        create_model("mlp", 10, in_features=4, hidden=(4, -1))


def test_register_duplicate_name_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet8")


def test_resnet8_backward_finite_grads():
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("name", ["resnet8", "preact_resnet18"])
def test_same_seed_same_weights(name):
    torch.manual_seed(123)
    a = create_model(name, 10)
    torch.manual_seed(123)
    b = create_model(name, 10)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    torch.manual_seed(124)
    c = create_model(name, 10)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


@pytest.mark.parametrize("name", ["resnet8", "resnet34", "preact_resnet18"])
def test_init_scheme(name):
    """Every conv is Kaiming-normal fan_out: std sqrt(2 / (k*k*cout)); PyTorch's default (uniform, fan_in,
    a=sqrt(5): std 1/sqrt(3 k*k cin)) is 2.4x smaller for a 3x3 64->64 conv and fails this."""
    torch.manual_seed(0)
    model = create_model(name, 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) >= 7
    for conv in convs:
        cout, _, kh, kw = conv.weight.shape
        want = (2 / (kh * kw * cout)) ** 0.5
        tolerance = 4 * want / (2 * conv.weight.numel()) ** 0.5  # four standard errors of a sample std
        assert abs(conv.weight.std().item() - want) < tolerance, (conv, conv.weight.std().item(), want)
        assert abs(conv.weight.mean().item()) < 4 * want / conv.weight.numel() ** 0.5  # centred, not shifted
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_channels_last_and_autocast():
    torch.manual_seed(0)
    model = create_model("resnet8", 10).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        assert torch.allclose(ref, cl, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == (2, 10) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)  # the same network, at bf16 precision


def test_swap_head():
    model = create_model("preact_resnet18", 10).eval()
    model.fc = torch.nn.Linear(model.feature_dim, 3)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 8)).shape == (1, 3)
