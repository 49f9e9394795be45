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


def test_unknown_key_suggests_the_closest_known_one():
    with pytest.raises(ConfigError, match=r"unknown key optim\.lrr in optim; did you mean optim\.lr\? valid keys"):
        Config.load(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown key loss\.lamda .*did you mean loss\.lam\?"):
        Config.load(None, ["loss.lamda=1"])
    with pytest.raises(ConfigError, match=r"unknown key colour in the top level; valid keys"):  # nothing close
        Config.load(None, ["colour=blue"])


def test_the_empty_config_is_a_valid_run():
    """Every default together: ELR on the bundled digits with the MLP (no data to download)."""
    cfg = Config.load(None)
    assert (cfg.data.dataset, cfg.model.name, cfg.loss.name) == ("digits", "mlp", "elr")


def test_a_config_that_names_no_model_gets_one_for_its_data():
    assert Config.load(None, ["data.dataset=cifar10", "data.root=x"]).model.name == "resnet8"
    cfg = Config.load(None, ["data.dataset=npz", "data.root=x", "model.widths=[8, 8, 16]"])  # resnet8's own key
    assert (cfg.model.name, cfg.model.params) == ("resnet8", {"widths": [8, 8, 16]})
    assert Config.load(None, ["model.hidden=[16]"]).model.name == "mlp"  # digits
    # naming the model it already has keeps its parameters
    raw = {"data": {"dataset": "npz", "root": "x"}, "model": {"widths": [8, 8, 16]}}
    assert apply_overrides(raw, ["model.name=resnet8"])["model"] == {"widths": [8, 8, 16], "name": "resnet8"}


def test_a_valid_topk_config_is_not_refused_for_the_stand_in_class_count():
    cfg = Config.load(None, ["data.dataset=cifar100", "data.root=x", "loss.target_storage=topk"])
    assert cfg.loss.params["target_storage"] == "topk"  # the default target_k (10), class count unknown yet
    assert Config.load(None, ["loss.target_storage=topk", "loss.target_k=50"]).loss.params["target_k"] == 50


def test_a_model_that_cannot_be_built_on_the_meta_device_is_left_to_the_build():
    import torch

    from elr.models import register_model
    from elr.models.registry import _REGISTRY

    @register_model("needs_real_tensors")
    def needs_real_tensors(num_classes, *, width=4):
        float(torch.ones(1).sum())  # .item() on a meta tensor raises
        return torch.nn.Linear(width, num_classes)

    try:
        cfg = Config.load(None, ["data.dataset=cifar10", "data.root=x", "model.name=needs_real_tensors",
                                 "model.width=8"])
        assert cfg.model.params == {"width": 8}
    finally:
        del _REGISTRY["needs_real_tensors"]


def test_a_model_of_images_on_feature_vectors_names_both_keys():
    with pytest.raises(ConfigError, match=r"model\.name=resnet8 takes images .* data\.dataset=digits gives feature "
                                          r"vectors of 64 values: use model\.name=mlp"):
        Config.load(None, ["model.name=resnet8"])


def test_an_override_of_loss_name_replaces_the_section(tmp_path):
    base = CONFIGS / "cpu" / "cifar10_elr_sym40.yaml"  # loss: {name: elr, lam: 3.0, beta: 0.7}
    assert Config.load(base, ["loss.name=ce"]).loss.params == {}
    # a switch goes first whatever its place; the section's other overrides apply to the new loss
    cfg = Config.load(base, ["loss.lam=1", "loss.name=elr_kl"])
    assert (cfg.loss.name, cfg.loss.params) == ("elr_kl", {"lam": 1})
    assert Config.load(base, ["loss.name=elr"]).loss.params == {"lam": 3.0, "beta": 0.7}  # same name: kept
    assert Config.load(base, ["model.name=mlp"]).model.params == {}  # resnet8's widths would not fit


def test_an_override_of_noise_type_keeps_only_what_the_new_type_reads():
    base = CONFIGS / "cpu" / "cifar10_elr_sym40.yaml"  # noise: {type: symmetric, rate: 0.4}
    cfg = Config.load(base, ["noise.type=cifar10n", "noise.label_set=worst"])
    assert (cfg.noise.type, cfg.noise.rate, cfg.noise.label_set) == ("cifar10n", 0.0, "worst")
    assert Config.load(base, ["noise.type=asymmetric"]).noise.rate == 0.4
    assert Config.load(base, ["noise.type=none"]).noise.rate == 0.0
    with pytest.raises(ConfigError, match="noise.rate has no meaning for noise.type=cifar10n"):  # given: refused
        Config.load(base, ["noise.type=cifar10n", "noise.label_set=worst", "noise.rate=0.2"])


@pytest.mark.parametrize("override, message", [
    ("loss.lam=-3", r"loss\.lam must be a finite number >= 0, got -3"),
    ("loss.beta=abc", r"loss\.beta must lie in \[0, 1\), got 'abc'"),
    ("loss.target_k=0", r"loss\.target_k must be an integer in \[1"),
    ("model.hidden=[-1]", r"model\.hidden entry must be an integer >= 1, got -1"),
    ("model.dropout=1.5", r"model\.dropout must be a float in \[0, 1\)"),
])
def test_component_values_are_checked_when_the_config_is(override, message):
    extra = ["loss.target_storage=topk"] if "target_k" in override else []
    with pytest.raises(ConfigError, match=message):
        Config.load(None, [override, *extra])


def test_switch_overrides_apply_in_order_and_the_last_one_wins():
    base = {"loss": {"name": "elr", "lam": 3.0, "beta": 0.7}, "noise": {"type": "symmetric", "rate": 0.4}}
    assert apply_overrides(base, ["loss.name=ce", "loss.name=elr"])["loss"] == {"name": "elr", "lam": 3.0, "beta": 0.7}
    assert apply_overrides(base, ["loss={name: gce, q: 0.7}", "loss.name=elr"])["loss"] == {"name": "elr"}
    assert apply_overrides(base, ["noise={type: symmetric, rate: 0.2}", "noise.type=asymmetric"])["noise"] == \
        {"type": "asymmetric", "rate": 0.2}
    assert apply_overrides(base, ["loss.name=gce", "loss.q=0.5", "loss.name=sce"])["loss"] == {"name": "sce", "q": 0.5}
    assert apply_overrides({}, ["loss.name=ce"]) == {"loss": {"name": "ce"}}
