"""ImageNet ResNet-50 with torchvision's names, the timm InceptionResNetV2 adapter, and pretrained=PATH loading."""

import logging
import os
import sys
from collections import OrderedDict

import pytest
import torch

from elr.config import Config, ConfigError
from elr.models import create_model, list_models, load_pretrained, model_params


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def imagenet_weights(tmp_path_factory):
    """A 1000-class ResNet-50 state dict saved as torchvision ships it (a plain OrderedDict of tensors)."""
    torch.manual_seed(123)
    model = create_model("resnet50", 1000)
    with torch.no_grad():  # make BN statistics and num_batches_tracked differ from a fresh model's
        for name, buf in model.named_buffers():
            buf.add_(torch.rand_like(buf, dtype=torch.float32).to(buf.dtype) + 1)
    state = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    path = tmp_path_factory.mktemp("weights") / "resnet50-imagenet.pth"
    torch.save(state, path)
    return path, state


def test_resnet50_matches_torchvision_counts_and_names():
    model = create_model("resnet50", 1000)
    assert n_params(model) == 25_557_032  # torchvision.models.resnet50()
    state = model.state_dict()
    assert len(state) == 320 and len(list(model.parameters())) == 161
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                "layer1.0.downsample.1.num_batches_tracked", "layer2.0.conv2.weight", "layer3.5.bn3.bias",
                "layer4.2.conv3.weight", "fc.weight", "fc.bias"):
        assert key in state, key
    assert "layer1.1.downsample.0.weight" not in state
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # v1.5: the stride sits on the 3x3 conv
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    assert model.fc.in_features == model.feature_dim == 2048


def test_forward_pass_on_small_images():
    torch.manual_seed(0)
    model = create_model("resnet50", 14).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 14) and torch.isfinite(out).all()
    assert create_model("resnet50", 5, in_channels=1)(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def test_imagenet_weights_load_into_a_14_class_model(imagenet_weights, caplog):
    path, saved = imagenet_weights
    torch.manual_seed(7)
    fresh = create_model("resnet50", 14)
    torch.manual_seed(7)
    with caplog.at_level(logging.WARNING, logger="elr.models.pretrained"):
        model = create_model("resnet50", 14, pretrained=path)
    loaded = model.state_dict()
    backbone = [k for k in saved if not k.startswith("fc.")]
    assert len(backbone) == 318
    for key in backbone:
        assert torch.equal(loaded[key], saved[key]), key
    assert model.fc.weight.shape == (14, 2048)
    assert torch.equal(model.fc.weight, fresh.fc.weight) and torch.equal(model.fc.bias, fresh.fc.bias)
    assert "classifier head fc.weight, fc.bias re-initialised for (14, 2048) (the file's is (1000, 2048))" in caplog.text


def test_same_shape_head_is_loaded_and_reported_nothing(imagenet_weights):
    path, saved = imagenet_weights
    model = create_model("resnet50", 10)
    report = load_pretrained(create_model("resnet50", 1000), path)
    assert report.reinitialised == [] and report.loaded == 320
    report = load_pretrained(model, path)
    assert report.reinitialised == ["fc.weight", "fc.bias"] and report.loaded == 318


def test_wrong_keys_are_named(tmp_path, imagenet_weights):
    _, saved = imagenet_weights
    state = dict(saved)
    del state["layer3.1.conv2.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys: layer3.1.conv2.weight; unexpected keys: layer5.0.conv1.weight"):
        create_model("resnet50", 14, pretrained=path)
    state = dict(saved)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"shapes differ \(file vs model\): conv1.weight \(64, 3, 3, 3\) vs \(64, 3, 7, 7\)"):
        create_model("resnet50", 14, pretrained=path)
    torch.save(create_model("resnet18", 10).state_dict(), path)  # another architecture
    with pytest.raises(ValueError, match=r"does not fit model ImageNetResNet: missing keys: .* and \d+ more"):
        create_model("resnet50", 10, pretrained=path)


def test_wrappers_prefixes_and_old_files(tmp_path, imagenet_weights):
    _, saved = imagenet_weights
    path = tmp_path / "w.pth"
    old = {k: v for k, v in saved.items() if not k.endswith("num_batches_tracked")}  # 2017 torchvision files
    torch.save({"state_dict": {f"module.{k}": v for k, v in old.items()}}, path)
    model = create_model("resnet50", 1000, pretrained=path)
    assert torch.equal(model.layer4[2].bn3.running_mean, saved["layer4.2.bn3.running_mean"])
    torch.save({k: v for k, v in saved.items() if not k.startswith("fc.")}, path)  # a headless backbone
    assert load_pretrained(create_model("resnet50", 14), path).reinitialised == ["fc.weight", "fc.bias"]


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unsafe_or_missing_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload(marker)}, path)
    with pytest.raises(ValueError, match="evil.pth: refusing to load: a weights file holds tensors only"):
        create_model("resnet50", 14, pretrained=path)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="nope.pth: no such file"):
        create_model("resnet50", 14, pretrained=tmp_path / "nope.pth")
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="expected a state dict"):
        create_model("resnet50", 14, pretrained=path)
    with pytest.raises(ValueError, match="pretrained must be the path"):
        create_model("resnet50", 14, pretrained=True)


def test_pretrained_works_for_the_cifar_models_too(tmp_path):
    torch.manual_seed(0)
    source = create_model("resnet8", 100)
    path = tmp_path / "r8.pt"
    torch.save(source.state_dict(), path)
    model = create_model("resnet8", 10, pretrained=str(path))
    assert torch.equal(model.layers[2][0].conv2.weight, source.layers[2][0].conv2.weight)
    assert model.fc.weight.shape == (10, 64)


def test_inception_resnet_v2_without_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    assert "inception_resnet_v2" in list_models()
    with pytest.raises(ImportError, match=r"inception_resnet_v2' needs timm.*pip install 'elr\[timm\]'"):
        create_model("inception_resnet_v2", 50)


def test_inception_resnet_v2_with_timm():
    pytest.importorskip("timm")
    model = create_model("inception_resnet_v2", 50).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 50)
    assert model.feature_dim == 1536


def test_config_accepts_pretrained_and_new_models():
    assert model_params("resnet50") == ["in_channels", "pretrained"]
    assert model_params("inception_resnet_v2") == ["in_channels", "pretrained"]
    cfg = Config.load(None, ["data.dataset=cifar10", "data.root=x", "model.name=resnet50",
                             "model.pretrained=/weights/resnet50.pth"])
    assert cfg.model.params == {"pretrained": "/weights/resnet50.pth"}
    with pytest.raises(ConfigError, match="valid keys: name, in_channels, pretrained"):
        Config.load(None, ["model.name=resnet50", "model.weights=x"])


def test_pretrained_file_is_read_at_start_only(tmp_path):
    """Training loads the file; resume and eval rebuild from the checkpoint without it."""
    from elr.checkpoint import load_checkpoint
    from elr.config import Config
    from elr.runs import evaluate_run, resume, train

    torch.manual_seed(123)
    start = create_model("mlp", 10, in_features=64, hidden=[16])
    weights = tmp_path / "mlp.pt"
    torch.save(start.state_dict(), weights)
    config = Config.from_dict({"data": {"dataset": "digits"}, "noise": {"type": "none"},
                               "model": {"name": "mlp", "hidden": [16], "pretrained": str(weights)},
                               "loss": {"name": "ce"}, "optim": {"epochs": 1, "lr": 1e-9, "weight_decay": 0.0},
                               "monitor": {"memorization": False}, "device": "cpu"}).validate()
    out = tmp_path / "run"
    summary = train(config, out)
    trained = load_checkpoint(out / "checkpoint.pt")["method"]["model"]
    for key, value in start.state_dict().items():  # lr 1e-9: the weights are still the file's
        torch.testing.assert_close(trained[key], value, rtol=0, atol=1e-6)
    weights.unlink()
    assert resume(out)["last"] == summary["last"]
    assert evaluate_run(out)["test_acc"] == pytest.approx(summary["last"]["test_acc"])
