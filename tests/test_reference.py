"""Comparisons with the lab's numbers: agreement, settings differences, and which claims the runs support."""
import math

import pandas as pd

from labcore import reference
from labcore.config import RunConfig


def test_compare_uses_mean_spread_and_tolerance():
    table = reference.compare("mlp_mnist", {"val_acc": [0.915, 0.918, 0.921], "train_loss": [0.6]})
    val = table[table.claim.str.startswith("lab: validation")].iloc[0]
    assert val["agrees"] and val["seeds"] == 3 and abs(val["measured (mean)"] - 0.918) < 1e-9
    assert not table[table.metric == "train_loss"].iloc[0]["agrees"]  # 0.6 vs about 0.25
    assert "agrees with" in reference.agreement_sentence(table) and "differs from" in reference.agreement_sentence(table)


def test_differences_name_each_departure_from_the_lab():
    lab = RunConfig.build({"name": "mnist"}, {"family": "mlp", "width": 16, "depth": 2}, {"epochs": 15, "lr": 1e-4})
    assert reference.differences("mlp_mnist", lab) == []
    quick = lab.replace(train={"epochs": 3}, data={"subset": 100})
    assert reference.differences("mlp_mnist", quick) == ["data.subset: 100 here, None in the lab",
                                                         "train.epochs: 3 here, 15 in the lab"]
    assert reference.differences("mlp_mnist", quick, only=("model.",)) == []
    assert "Not the lab's settings" in reference.caveat("mlp_mnist", quick)


def _rank(means, stds):
    return pd.DataFrame({"depth": [16, 19, 24], "val_acc_mean": means, "val_acc_std": stds})


def test_vgg_claims():
    assert "supporting the ranking write-up" in reference.vgg_claims(_rank([0.80, 0.85, 0.70], [0.01, 0.01, 0.01]))
    assert "supporting the VGG-only write-up" in reference.vgg_claims(_rank([0.85, 0.80, 0.70], [0.01, 0.01, 0.01]))
    assert "neither" in reference.vgg_claims(_rank([0.80, 0.81, 0.70], [0.02, 0.02, 0.01]))
    assert "single seed" in reference.vgg_claims(_rank([0.80, 0.85, 0.70], [math.nan] * 3))
    assert "VGG24 is last" in reference.vgg_claims(_rank([0.80, 0.85, 0.70], [0.01] * 3))


def test_degradation_sentence():
    df = pd.DataFrame({"residual": [False] * 4, "depth": [20, 20, 56, 56], "train_acc": [0.9, 0.91, 0.8, 0.81]})
    assert "trains *worse* (degradation)" in reference.degradation_sentence(df)
    df["train_acc"] = [0.8, 0.81, 0.9, 0.91]
    assert "deeper plain network trains better" in reference.degradation_sentence(df)
