"""How a profile's parameters differ from full's, in effect (the banner of a page and `make diff` name them)."""
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
