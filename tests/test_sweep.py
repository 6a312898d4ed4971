"""Sweeps: expansion into configs, strict specs, and the tables and sentences reports are built from."""
import re

import pandas as pd
import pytest

from labcore.analysis import claims, sweep
from labcore.core.config import ConfigError

DATA = {"name": "cifar10", "subset": 100}
TRAIN = {"epochs": 1}


def test_expand_is_the_product_of_sweep_residual_and_seeds():
    plan = sweep.expand({"conv": {"model": {"family": "convnet", "width": 4}, "sweep": {"model.depth": [1, 2, 3]}},
                         "lab": {"model": {"family": "lab_cnn"}, "residual": [False], "train": {"lr": 0.5}}},
                        DATA, TRAIN, seeds=[0, 1], residual=[False, True])
    assert len(plan["conv"]) == 3 * 2 * 2 and len(plan["lab"]) == 2
    assert {(c.model.depth, c.model.residual, c.seed) for c in plan["conv"]} == {
        (d, r, s) for d in (1, 2, 3) for r in (False, True) for s in (0, 1)}
    assert all(c.train.lr == 0.5 and c.train.epochs == 1 for c in plan["lab"])  # study overrides merge over shared
    assert len({c.key() for cfgs in plan.values() for c in cfgs}) == 14, "every run has its own key"


def test_same_study_in_two_notebooks_gives_the_same_keys():
    spec = {"mlp": {"model": {"family": "mlp", "width": 8}, "sweep": {"model.depth": [1, 4]}}}
    plain = sweep.expand(spec, DATA, TRAIN, [0], [False])["mlp"]
    both = sweep.expand(spec, DATA, TRAIN, [0], [False, True])["mlp"]
    assert {c.key() for c in plain} < {c.key() for c in both}  # 03 finds 02's plain runs in the store


@pytest.mark.parametrize("studies, message", [
    ({"a": {"modle": {}}}, "unknown key 'modle' in studies.a"),
    ({"a": {"model": {"family": "mlp"}, "sweep": {"depth": [1]}}}, "sweep field 'depth' must be"),
    ({"a": {"model": {"family": "mlp"}, "sweep": {"model.depth": []}}}, "non-empty list"),
    ({"a": {"model": {"family": "mlp"}, "seeds": ["x"]}}, "studies.a.seeds\\[0\\] must be int"),
    ({}, "non-empty mapping"),
    ({"a": {"model": {"family": "mlp"}, "seeds": []}}, "studies.a.seeds is empty, so studies.a plans no run"),
    ({"a": {"model": {"family": "mlp"}, "residual": []}}, "studies.a.residual is empty, so studies.a plans no run"),
])
def test_bad_sweeps_fail_with_one_line(studies, message):
    with pytest.raises(ConfigError, match=message):
        sweep.expand(studies, DATA, TRAIN, [0], [False])


def test_an_empty_residual_list_plans_nothing_so_it_is_refused_naming_where_it_was_given():
    study = {"a": {"model": {"family": "mlp"}}}
    with pytest.raises(ConfigError, match=r"^residual is empty, so studies.a plans no run; .*\(false: plain, true"):
        sweep.expand(study, DATA, TRAIN, [0], [])  # the notebook's list, which the study inherits
    assert len(sweep.expand(study, DATA, TRAIN, [0], [True])["a"]) == 1  # one value is enough


def _table():
    rows = []
    for depth, res, losses, accs in ((1, False, [1.2, 1.3, 1.25], [0.40, 0.41, 0.39]), (8, False, [2.30, 2.30, 2.29], [0.10, 0.11, 0.10]),
                                     (1, True, [1.1, 1.2, 1.15], [0.42, 0.41, 0.43]), (8, True, [1.0, 1.05, 1.1], [0.47, 0.46, 0.48])):
        for seed, (loss, acc) in enumerate(zip(losses, accs)):
            rows.append({"study": "conv", "family": "convnet", "depth": depth, "residual": res, "seed": seed, "train_loss": loss,
                         "train_acc": acc + 0.1, "val_acc": acc, "test_acc": acc, "n_params": 10 * depth, "seconds": 1.0,
                         "n_val": 1000, "guess_acc": 0.1})
    return pd.DataFrame(rows)


def test_trainability_is_per_seed_against_chance_on_validation():
    t = sweep.trainability(_table()).set_index(["depth", "residual"])
    assert t.loc[(8, False), "trained"] == "no" and t.loc[(8, True), "trained"] == "yes"
    assert t.loc[(8, False), "seeds_trained"] == "trained in 0 of 3 seeds"
    df = _table()
    df.loc[(df.depth == 1) & ~df.residual & (df.seed == 1), "val_acc"] = float("nan")  # a failed seed
    df.loc[(df.depth == 1) & ~df.residual & (df.seed == 2), "val_acc"] = 0.11  # at chance on 1,000 images
    row = sweep.trainability(df).set_index(["depth", "residual"]).loc[(1, False)]
    assert row["trained"] == "partly" and row["seeds_trained"] == "trained in 1 of 3 seeds (seed 1 failed)"


def test_chance_is_the_best_constant_guess_on_the_runs_own_validation_images(monkeypatch):
    import torch

    from labcore.core.config import DataConfig
    from labcore.store import training

    y_val = torch.tensor([9] * 67 + [c for c in range(9) for _ in range(49)][:433])  # 500 images, 13.4 % trucks
    monkeypatch.setattr(training, "load_splits", lambda data: type("Splits", (), {"y_val": y_val})())
    assert sweep.guess_accuracy(DataConfig(subset=500, val_size=500)) == 0.134
    df = _table()
    df["guess_acc"] = 0.134  # the same runs on such a split: depth 8's plain seeds at 0.10-0.11 stay untrained,
    df.loc[(df.depth == 8) & ~df.residual, "val_acc"] = 0.134  # and so does one that answers "truck" to all
    assert sweep.trainability(df).set_index(["depth", "residual"]).loc[(8, False), "trained"] == "no"


def test_sentences_say_what_the_table_says():
    lines = claims.depth_effect_sentences(_table(), sweep.trainability(_table()))
    plain = next(line for line in lines if "plain" in line)
    res = next(line for line in lines if "residual" in line)
    assert "the shallowest (1) is best, ahead of every other depth" in plain
    assert "depth 8 trained in 0 of 3 seeds" in plain
    assert "the deepest (8) is best" in res and "every depth trained in every seed" in res


def test_a_best_depth_within_the_seed_spread_is_not_called_best():
    df = _table()
    df.loc[df.residual & (df.depth == 8), "test_acc"] = [0.40, 0.46, 0.44]  # overlaps depth 1's 0.41-0.43
    res = next(line for line in claims.depth_effect_sentences(df, sweep.trainability(df)) if "residual" in line)
    assert "not distinguishable from depth 1 with 3 seeds" in res and "is best" not in res
    one = df[df.seed == 0]
    res = next(line for line in claims.depth_effect_sentences(one, sweep.trainability(one)) if "residual" in line)
    assert "one seed cannot rank depths" in res


def test_the_deepest_trained_convnet_against_the_shallowest():
    text = claims.deepest_trained_sentence(_table(), sweep.trainability(_table()), "conv")
    assert "**conv, residual**: the deepest network that trains in every seed has depth 8" in text
    assert "it does beat the shallowest" in text
    assert "**conv, plain**: fewer than two depths trained" in text


def test_ranking_orders_by_mean_validation_accuracy():
    rank = sweep.ranking(_table(), residual=True)
    assert list(rank.depth) == [8, 1] and list(rank.index) == [1, 2]


def test_counts_and_model_orders_read_from_the_runs():
    from labcore.store import runs
    from labcore.core.config import RunConfig

    def result(depth, seed, val_acc, cached):
        cfg = RunConfig.build({"name": "cifar10"}, {"family": "vgg", "depth": depth, "width": 8, "norm": "batch"},
                              {}, seed=seed)
        row = {"val_acc": val_acc, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0}
        return runs.RunResult(cfg, [row], {}, 1, 1.0, "cpu", "x", cached=cached)

    results = {"vgg": [result(16, 0, 0.50, True), result(16, 1, 0.51, True), result(19, 0, 0.30, False),
                       result(19, 1, 0.31, False)]}
    assert sweep.counts_sentence(results) == "4 runs in 1 study (vgg: 4); 2 trained now, 2 loaded from the run store."
    two = {"vgg": results["vgg"][:1], "resnet": results["vgg"][1:]}
    assert sweep.counts_sentence(two).startswith("4 runs in 2 studies (vgg: 1, resnet: 3)")
    assert sweep.counts_sentence({"vgg": results["vgg"][:1]}).startswith("1 run in 1 study")
    df = pd.DataFrame([{"study": "vgg", **r.summary()} for r in results["vgg"]])
    assert sweep.model_order(df) == "VGG16 > VGG19"
    assert sweep.by_model(df, "val_acc") == {"VGG16": [0.50, 0.51], "VGG19": [0.30, 0.31]}
    assert sweep.model_name("resnet", 34) == "ResNet34" and sweep.model_name("convnet", 3) == "convnet-3"


def test_the_overview_reads_mean_and_spread_in_one_cell():
    view = sweep.overview(_table())
    assert list(view.columns) == ["study", "depth", "variant", "train loss", "val acc", "test acc", "seeds",
                                  "parameters", "seconds per run"]
    assert all("±" in v for v in view["val acc"]) and set(view["variant"]) == {"plain", "residual"}


def _results(field: str, values: list, seeds=(0, 1, 2)):
    """Fake results of an MLP study swept over depth and `field` (each run's val_acc: its value's index / 10)."""
    from labcore.store.runs import RunResult

    plan = sweep.expand({"mlp": {"model": {"family": "mlp", "width": 8},
                                 "sweep": {"model.depth": [1, 2], field: values}}}, DATA, TRAIN, list(seeds), [False])
    section, name = field.split(".")
    out = []
    for c in plan["mlp"]:
        v = values.index(getattr(getattr(c, section), name)) / 10 + c.seed / 100
        out.append(RunResult(c, [{"epoch": 1, "train_loss": 1.0, "train_acc": v, "val_loss": 1.0, "val_acc": v}],
                             {"accuracy": v}, 10, 1.0, "cpu", "synthetic"))
    return {"mlp": out}


@pytest.mark.parametrize("field, values, label", [("model.width", [8, 16], "width"), ("train.lr", [0.001, 0.01], "lr")])
def test_a_sweep_beyond_depth_is_one_row_per_configuration_never_pooled_as_seeds(field, values, label, monkeypatch):
    from .synthetic import synthetic_splits, use_splits

    use_splits(monkeypatch, lambda data: synthetic_splits())  # the chance level is read from validation labels
    results = _results(field, values)
    agg = sweep.aggregate(sweep.table(results))
    assert len(agg) == 2 * 2 and set(agg["seeds"]) == {3}, agg  # 2 depths x 2 values, 3 seeds each
    assert set(agg["study"]) == {f"mlp ({label}={v})" for v in values}
    assert len(sweep.trainability(sweep.table(results))) == 4
    assert len(sweep.depth_figures(results, "t")) == 2
    assert len(sweep.study(sweep.table(results), "mlp")) == 2 * 2 * 3  # the study by its name: every configuration
    order = sweep.model_order(sweep.table(results))
    assert f"mlp-1 ({label}={values[1]})" in order and f"mlp-1 ({label}={values[0]})" in order


def test_a_study_swept_over_depth_alone_keeps_its_name():
    from labcore.store.runs import RunResult

    cfgs = sweep.expand({"mlp": {"model": {"family": "mlp", "width": 8}, "sweep": {"model.depth": [1, 2]}}},
                        DATA, TRAIN, [0, 1], [False, True])["mlp"]
    rs = [RunResult(c, [], {}, 1, 1.0, "cpu", "x") for c in cfgs]
    assert sweep.settings(rs) == [""] * len(rs) and list(sweep.by_setting({"mlp": rs})) == ["mlp"]


@pytest.mark.parametrize("where, studies, seeds", [
    ("seeds", {"mlp": {"model": {"family": "mlp"}}}, [1, 1]),
    ("studies.mlp.seeds", {"mlp": {"model": {"family": "mlp"}, "seeds": [0, 2, 0]}}, [0]),
    ("studies.mlp.sweep.model.depth", {"mlp": {"model": {"family": "mlp"}, "sweep": {"model.depth": [1, 2, 1]}}}, [0]),
    ("studies.mlp.residual", {"mlp": {"model": {"family": "mlp"}, "residual": [True, True]}}, [0]),
])
def test_a_repeated_value_where_a_set_is_meant_is_refused(where, studies, seeds):
    from labcore.analysis import sweep as sw

    with pytest.raises(ConfigError, match=f"{where.replace('.', '[.]')} lists .* twice; each value names its own runs"):
        sw.plan_studies(studies, {"name": "cifar10"}, {}, seeds, [False])
    assert sw.distinct([0, 1, 2], "seeds") == [0, 1, 2] and sw.distinct([], "seeds") == []


@pytest.mark.parametrize("spec, message", [
    ({"model": {"family": "vgg", "kernel_size": 3}}, "studies.a: model.kernel_size changes nothing for family vgg"),
    ({"model": {"family": "mlp"}, "train": {"momentum": 0.9}}, "studies.a: train.momentum changes nothing for optimizer"),
])
def test_a_study_may_not_write_a_field_its_runs_never_read(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        sweep.expand({"a": spec}, DATA, TRAIN, [0], [False])


def test_a_sweep_onto_a_setting_that_does_not_read_a_field_keys_its_runs_as_if_the_field_were_left_out():
    """SGD's momentum in a study that also sweeps Adam: the Adam runs never read it, so they are Adam runs as written
    alone (one key for one computation); the SGD runs keep it."""
    study = {"a": {"model": {"family": "mlp"}, "train": {"optimizer": "sgd", "momentum": 0.95},
                   "sweep": {"train.optimizer": ["sgd", "adam"]}}}
    sgd, adam = sweep.expand(study, DATA, TRAIN, [0], [False])["a"]
    assert sgd.train.momentum == 0.95 and adam.train.momentum == 0.9
    assert adam.key() == sweep.expand({"a": {"model": {"family": "mlp"}, "train": {"optimizer": "adam"}}}, DATA, TRAIN,
                                      [0], [False])["a"][0].key()
