"""Config: YAML presets, dotted overrides, unknown keys and value validation; schedules."""

import math
from pathlib import Path

import pytest

from elr.config import Config, ConfigError, OptimConfig, apply_overrides
from elr.schedules import learning_rate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_overrides_reach_nested_and_component_keys():
    cfg = Config.load(None, ["optim.lr=0.01", "loss.lam=7", "loss.beta=0.9", "noise.rate=0.2", "optim.milestones=[10, 20]"])
    assert cfg.optim.lr == 0.01 and cfg.noise.rate == 0.2 and cfg.optim.milestones == [10, 20]
    assert cfg.loss.params == {"lam": 7, "beta": 0.9}


def test_override_parses_yaml_values():
    raw = apply_overrides({}, ["a.b=true", "a.c=null", "d=1e-3", "e=name", "f=[1, 2]"])
    assert raw == {"a": {"b": True, "c": None}, "d": 1e-3, "e": "name", "f": [1, 2]}


def test_yaml_exponent_numbers_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {weight_decay: 1e-3}\nloss: {name: elr, lam: 3e0}\n")
    cfg = Config.load(path)
    assert cfg.optim.weight_decay == 1e-3 and cfg.loss.params["lam"] == 3.0


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*valid keys: lr, momentum"):
        Config.load(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="unknown key colour"):
        Config.load(None, ["colour=blue"])


def test_unknown_component_parameter_is_an_error():
    with pytest.raises(ConfigError, match=r"loss\.q .*'elr'.*lam"):
        Config.load(None, ["loss.q=0.7"])
    with pytest.raises(ConfigError, match="loss.name"):
        Config.load(None, ["loss.name=nonsense"])
    with pytest.raises(ConfigError, match="model.name"):
        Config.load(None, ["model.name=resnet9000"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lr=-1", "optim.lr"),
        ("noise.rate=1.5", "noise.rate"),
        ("optim.batch_size=0", "optim.batch_size"),
        ("optim.schedule=linear", "optim.schedule"),
        ("data.dataset=mnist", "data.dataset"),
        ("optim.epochs=2.5", "optim.epochs"),
        ("data.augment=maybe", "data.augment"),
        ("optim.milestones=[80, 40]", "optim.milestones"),
        ("device=tpu", "device"),
        ("data.val_fraction=1.0", "data.val_fraction"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config.load(None, [override])


def test_cifar_needs_a_root():
    with pytest.raises(ConfigError, match="data.root"):
        Config.load(CONFIGS / "cifar10" / "elr_sym40.yaml")


RUN_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if "sweeps" not in p.parts)  # sweeps: test_experiments


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_preset_loads_and_round_trips(path, tmp_path):
    cfg = Config.load(path, ["data.root=/data/somewhere"] if "cpu" not in path.parts else [])
    again = tmp_path / "again.yaml"
    again.write_text(cfg.to_yaml())
    assert Config.load(again).to_dict() == cfg.to_dict()


def test_paper_presets_carry_the_authors_hyperparameters():
    sym = Config.load(CONFIGS / "cifar10" / "elr_sym40.yaml", ["data.root=x"])
    assert (sym.loss.params, sym.optim.lr, sym.optim.weight_decay, sym.optim.epochs) == (
        {"lam": 3.0, "beta": 0.7}, 0.02, 1e-3, 150)
    assert (sym.optim.schedule, sym.optim.restart_period, sym.optim.min_lr) == ("cosine_restarts", 10, 1e-3)
    c100 = Config.load(CONFIGS / "cifar100" / "elr_sym40.yaml", ["data.root=x"])
    assert c100.loss.params == {"lam": 7.0, "beta": 0.9} and c100.optim.milestones == [80, 120]
    asym = Config.load(CONFIGS / "cifar10" / "elr_asym40.yaml", ["data.root=x"])
    assert asym.loss.params == {"lam": 1.0, "beta": 0.9} and asym.optim.epochs == 120


def test_schedules_by_hand():
    o = OptimConfig(lr=0.1, epochs=100, schedule="multistep", milestones=[40, 80], gamma=0.1)
    assert [learning_rate(o, e) for e in (0, 39.99, 40, 79.5, 80)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    o = OptimConfig(lr=0.02, epochs=150, schedule="cosine_restarts", restart_period=10, min_lr=1e-3)
    # torch CosineAnnealingWarmRestarts(T_0=10, eta_min=1e-3) per epoch: eta_min + (lr-eta_min)(1+cos(pi*(e%10)/10))/2
    for e in (0, 3, 9, 10, 13.7):
        expected = 1e-3 + (0.02 - 1e-3) * (1 + math.cos(math.pi * (int(e) % 10) / 10)) / 2
        assert learning_rate(o, e) == pytest.approx(expected)
    o = OptimConfig(lr=0.1, epochs=10, schedule="cosine", min_lr=0.0)
    assert learning_rate(o, 5) == pytest.approx(0.05) and learning_rate(o, 10) == pytest.approx(0.0)
    o = OptimConfig(lr=0.1, epochs=10, schedule="onecycle", warmup_fraction=0.25)
    assert learning_rate(o, 0) == pytest.approx(0.004) and learning_rate(o, 2.5) == pytest.approx(0.1)
    assert learning_rate(o, 10) == pytest.approx(0.1 / 25 / 1e4)
