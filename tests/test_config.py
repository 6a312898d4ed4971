"""Configs are strict: unknown keys, wrong types and bad values fail with one-line messages."""
import re

import pytest

from labcore.core.config import ConfigError, ModelConfig, RunConfig, TrainConfig, from_dict, load_yaml, validate_params


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'widht' in model; valid keys: family, depth, width"):
        from_dict(ModelConfig, {"widht": 16}, "model")


@pytest.mark.parametrize("section, value, message", [
    ({"model": {"depth": "two"}}, None, r"model.depth must be int, got 'two'"),
    ({"train": {"lr": -1.0}}, None, r"train.lr must be > 0"),
    ({"train": {"optimizer": "adamw"}}, None, r"train.optimizer is 'adamw'; choose one of: adam, sgd"),
    ({"data": {"name": "imagenet"}}, None, r"data.name is 'imagenet'; choose one of: mnist, cifar10"),
    ({"model": {"residual": 1}}, None, r"model.residual must be bool"),
    ({"seeds": [0, "1"]}, None, r"seeds\[1\] must be int"),
])
def test_bad_values_fail_with_one_line(section, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate_params(section)
    assert "\n" not in str(info.value)


def test_ints_become_floats_and_lists_tuples():
    cfg = from_dict(TrainConfig, {"lr": 1, "schedule": "multistep", "milestones": [0.5, 0.9]}, "train")
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.milestones == (0.5, 0.9)


def test_yaml_reads_1e_minus_4_as_a_float(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train: {lr: 1e-4, epochs: 3}\n")
    assert load_yaml(f)["train"]["lr"] == pytest.approx(1e-4)


def test_yaml_syntax_error_is_one_line_with_position(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("train: {lr: 1e-4\nmodel: [\n")
    with pytest.raises(ConfigError, match=r"p.yaml at line \d+, column \d+") as info:
        load_yaml(f)
    assert "\n" not in str(info.value)


def test_key_is_stable_and_tracks_every_field():
    a = RunConfig.build(model={"depth": 2}, seed=0)
    assert a.key() == RunConfig.build(model={"depth": 2}, seed=0).key()
    assert a.key() != a.replace(seed=1).key()
    assert a.key() != a.replace(model={"depth": 3}).key()
    assert a.key() != a.replace(train={"lr": 2e-4}).key()
    assert a.replace(model={"depth": 3}).model.width == a.model.width  # replace keeps the other fields


def test_configs_are_frozen():
    cfg = RunConfig()
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("model, message", [
    ({"family": "lab_resnet", "norm": "batch"}, "model.norm='batch' changes nothing for family lab_resnet"),
    ({"family": "lab_cnn", "norm": "batch"}, "model.norm='batch' changes nothing for family lab_cnn"),
    ({"family": "vgg", "kernel_size": 5}, "model.kernel_size=5 changes nothing for family vgg (read only by lab_cnn"),
])
def test_a_model_field_its_family_ignores_is_refused_in_one_line(model, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ModelConfig(**model)


@pytest.mark.parametrize("train, message", [
    ({"optimizer": "adam", "momentum": 0.5}, "train.momentum=0.5 changes nothing for optimizer adam (read only by sgd)"),
    ({"schedule": "cosine", "milestones": [0.3]}, "train.milestones=(0.3,) changes nothing for schedule cosine"),
])
def test_a_training_field_its_optimiser_or_schedule_ignores_is_refused_in_one_line(train, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunConfig.build(train=train)
    RunConfig.build(train={**train, "optimizer": "sgd", "schedule": "multistep"})  # read there: accepted


@pytest.mark.parametrize("section, given, message", [
    ("model", {"family": "mlp", "kernel_size": 3}, "model.kernel_size changes nothing for family mlp (read only by "
                                                    "lab_cnn); remove it from the parameters"),
    ("train", {"optimizer": "adam", "momentum": 0.9}, "train.momentum changes nothing for optimizer adam"),
    ("train", {"milestones": [0.5, 0.75]}, "train.milestones changes nothing for schedule constant"),
])
def test_a_parameter_file_may_not_write_a_field_its_settings_never_read_even_at_its_default(section, given, message):
    from labcore.core.config import validate_params

    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_params({section: given})
    validate_params({section: {k: v for k, v in given.items() if k in ("family", "optimizer")}})  # left out: fine
    validate_params({"model": {"family": "lab_cnn", "kernel_size": 3}, "train": {"optimizer": "sgd", "momentum": 0.9}})


def test_the_fields_a_family_reads_and_the_defaults_everywhere_are_accepted():
    ModelConfig(family="lab_cnn", kernel_size=4)
    ModelConfig(family="vgg", norm="batch")
    assert ModelConfig(family="lab_resnet", norm="none").norm == "none"  # the default, spelled out: same key



def test_milestones_written_as_a_list_by_hand_are_the_same_config():
    """A notebook may write TrainConfig(milestones=[0.5, 0.75]): equal to the default tuple, hashable, same key."""
    from labcore.core.config import RunConfig, TrainConfig

    by_hand = TrainConfig(schedule="multistep", milestones=[0.5, 0.75])
    assert by_hand == TrainConfig(schedule="multistep") and hash(by_hand) == hash(TrainConfig(schedule="multistep"))
    assert RunConfig(train=by_hand).key() == RunConfig(train=TrainConfig(schedule="multistep")).key()
