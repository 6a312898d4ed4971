"""How a profile's parameters differ from full's, in effect (the banner of a page and `make diff` name them)."""
import pytest

from labcore.core.config import ConfigError
from labcore.exercises import params


def test_differences_name_each_reduced_setting_against_full():
    quick = {"data": {"subset": 4000, "val_size": 1000}, "seeds": [0, 1, 2], "train": {"epochs": 8}}
    full = {"data": {"subset": None, "val_size": 5000}, "seeds": [0, 1, 2], "train": {"epochs": 10}}
    assert params.differences(quick, full) == ["data.val_size: 1000 (full: 5000)", "data.subset: 4000 (full: all)",
                                               "train.epochs: 8 (full: 10)"]


def test_the_banner_lists_only_settings_that_differ_in_effect():
    ours = {"train": {"epochs": 10, "precision": "fp32", "milestones": [0.5, 0.75]}, "residual": None,
            "studies": {"a": {"model": {"width": 8}, "residual": None}, "mine": {"model": {"width": 4}}}}
    full = {"train": {"epochs": 10}, "residual": [False],
            "studies": {"a": {"model": {"width": 8}}, "b": {"model": {}}, "c": {"model": {}}}}
    assert params.differences(ours, full) == ["studies.mine: only in this profile",
                                              "studies: b, c not run here (full runs them)"]
    assert params.differences({"train": {"precision": "auto"}}, {"train": {}}) == ["train.precision: auto (full: fp32)"]
    assert params.differences({"studies": {"a": {"residual": [True]}}}, {"studies": {"a": {}}}) == \
        ["studies.a.residual: [true] (full: the notebook's)"]
    assert params.differences(full, full) == []
    assert params.differences({"long_epochs": None, "deep_study": None}, {"long_epochs": 100, "deep_study": "convnet"}) \
        == ["long_epochs: none (full: 100)", "deep_study: none (full: convnet)"]  # only a subset's None means all


def test_against_full_names_differences_for_a_profile_and_nothing_for_full_or_a_missing_full_file(tmp_path, monkeypatch):
    quick = params.merged_parameters("01_mlp_baseline", "quick")
    reduced = params.against_full("01_mlp_baseline", "quick", quick)
    assert reduced and all("(full: " in r or "not run here" in r for r in reduced)
    assert not any(r.startswith("profile") for r in reduced), "the profile itself always differs: never listed"
    assert params.against_full("01_mlp_baseline", "full", params.merged_parameters("01_mlp_baseline", "full")) is None
    monkeypatch.setattr(params, "PARAMETERS", tmp_path)  # no parameters/full/ here: nothing to compare with
    assert params.against_full("01_mlp_baseline", "quick", quick) is None


def _tracking(tmp_path, monkeypatch, mode):
    (tmp_path / "smoke").mkdir(exist_ok=True)
    (tmp_path / "smoke" / "01_mlp_baseline.yaml").write_text(f"tracking: {mode}\n")
    monkeypatch.setattr(params, "PARAMETERS", tmp_path)
    return params.merged_parameters("01_mlp_baseline", "smoke")["tracking"]


@pytest.mark.parametrize("mode", ["offline", "online", "disabled"])
def test_each_tracking_mode_is_a_valid_parameter(tmp_path, monkeypatch, mode):
    assert _tracking(tmp_path, monkeypatch, mode) == mode


@pytest.mark.parametrize("mode", ["cloud", "Offline", "''"])
def test_any_other_tracking_mode_is_one_line_naming_the_file_and_the_modes(tmp_path, monkeypatch, mode):
    with pytest.raises(ConfigError, match=r"01_mlp_baseline.yaml: tracking mode is .* \(parameter 'tracking'\); choose "
                                          r"one of: offline, online, disabled") as info:
        _tracking(tmp_path, monkeypatch, mode)
    assert "\n" not in str(info.value)


def test_a_model_parameter_of_its_own_may_not_write_a_field_its_family_never_reads(tmp_path, monkeypatch):
    """04's lab_plain_model is a model section under another name: the same rule, named by that name."""
    from labcore.core.config import ConfigError
    from labcore.exercises import params

    monkeypatch.setattr(params, "PARAMETERS", tmp_path)
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "04_gradient_flow.yaml").write_text("lab_residual_model: {family: lab_resnet, kernel_size: 3}\n")
    with pytest.raises(ConfigError, match=r"lab_residual_model.kernel_size changes nothing for family lab_resnet"):
        params.merged_parameters("04_gradient_flow", "smoke")
    # Another value: the model's own check, named as the file names it too.
    (tmp_path / "smoke" / "04_gradient_flow.yaml").write_text("lab_residual_model: {family: lab_resnet, kernel_size: 5}\n")
    with pytest.raises(ConfigError, match=r"04_gradient_flow.yaml: lab_residual_model.kernel_size=5 changes nothing"):
        params.merged_parameters("04_gradient_flow", "smoke")
    (tmp_path / "smoke" / "04_gradient_flow.yaml").write_text("lab_plain_model: {family: lab_cnn, width: 0}\n")
    with pytest.raises(ConfigError, match=r"04_gradient_flow.yaml: lab_plain_model.width must be > 0, got 0"):
        params.merged_parameters("04_gradient_flow", "smoke")
