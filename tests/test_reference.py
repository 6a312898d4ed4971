"""Comparisons with the lab's numbers: agreement, settings differences, and which claims the runs support."""

import pandas as pd

from labcore.analysis import claims, reference
from labcore.core.config import RunConfig


def test_compare_uses_the_interval_over_seeds_and_the_tolerance():
    table = reference.compare("mlp_mnist", {"val_acc": [0.915, 0.918, 0.921], "train_loss": [0.6]})
    val = table[table.claim.str.startswith("lab: validation")].iloc[0]
    assert val["verdict"] == "agrees" and val["seeds"] == 3 and abs(val["measured (mean)"] - 0.918) < 1e-9
    assert table[table.metric == "train_loss"].iloc[0]["verdict"] == "disagrees"  # 0.6 vs about 0.25, one seed
    noisy = reference.compare("mlp_mnist", {"val_acc": [0.80, 0.92, 0.99]})
    assert set(noisy.verdict) == {"inconclusive"}, "a noisy measurement never agrees"
    text = claims.agreement_sentence(table)
    assert "agrees with" in text and "disagrees with" in text


def test_reduced_settings_are_not_comparable_and_gradients_compare_as_ratios():
    quick = RunConfig.build({"name": "mnist", "subset": 100}, {"family": "mlp", "width": 16, "depth": 2},
                            {"epochs": 3, "lr": 1e-4})
    table = reference.compare("mlp_mnist", {"val_acc": [0.92, 0.92, 0.921]}, cfg=quick)
    assert set(table.verdict) == {"not comparable"} and "is not comparable with" in claims.agreement_sentence(table)
    grad = reference.compare("grad_lab_cnn", {"mean": [0.010, 0.012, 0.011], "std": [0.2, 0.21, 0.19]})
    assert list(grad.verdict) == ["agrees", "disagrees"], "0.011 within a factor 2; 0.2 is 9x the lab's 0.022"


def test_differences_name_each_departure_from_the_lab():
    lab = RunConfig.build({"name": "mnist"}, {"family": "mlp", "width": 16, "depth": 2}, {"epochs": 15, "lr": 1e-4})
    assert reference.differences("mlp_mnist", lab) == []
    quick = lab.replace(train={"epochs": 3}, data={"subset": 100})
    assert reference.differences("mlp_mnist", quick) == ["data.subset: 100 here, None in the lab",
                                                         "train.epochs: 3 here, 15 in the lab"]
    assert reference.differences("mlp_mnist", quick, only=("model.",)) == []
    assert "Not the lab's settings" in reference.caveat("mlp_mnist", quick)


def _vgg(accs, losses=None):
    rows = []
    for depth, vals in zip((16, 19, 24), accs):
        for seed, v in enumerate(vals):
            loss = (losses or {}).get(depth, [1.0] * len(vals))[seed]
            rows.append({"family": "vgg", "depth": depth, "seed": seed, "val_acc": v, "train_loss": loss})
    return pd.DataFrame(rows)


def test_vgg_claims_are_tested_over_seeds_on_both_measures():
    tight = lambda m: [m - 0.005, m, m + 0.005]  # noqa: E731
    assert "VGG19 beats VGG16: the ranking write-up" in claims.vgg_claims(_vgg([tight(0.80), tight(0.85), tight(0.70)]))
    assert "VGG16 beats VGG19: the VGG-only" in claims.vgg_claims(_vgg([tight(0.85), tight(0.80), tight(0.70)]))
    quick = claims.vgg_claims(_vgg([[0.37, 0.40, 0.34], [0.41, 0.42, 0.40], [0.33, 0.29, 0.37]],
                                      {16: [1.20, 1.21, 1.19], 19: [1.50, 1.52, 1.49], 24: [2.00, 2.02, 1.99]}))
    assert "By validation accuracy, these runs support neither" in quick
    assert "By final training loss, VGG16 beats VGG19" in quick and "**VGG16 > VGG19 > VGG24**" in quick
    assert "By final training loss, VGG24 is last, as both write-ups say." in quick
    # 03's quick page: VGG19 ≈ VGG16 > VGG24 by validation accuracy, yet VGG19 and VGG24 are not separated.
    near = claims.vgg_claims(_vgg([[0.40, 0.41, 0.42], [0.35, 0.45, 0.40], [0.30, 0.31, 0.32]]))
    assert "VGG24 is not shown to be last: the test does not separate it from VGG19." in near
    single = claims.vgg_claims(_vgg([[0.80], [0.85], [0.70]]))
    assert single.count("can be claimed") == 1 and "beats" not in single and "not shown to be last" not in single
    assert single.startswith("With one seed per model") and "without a second seed" in single
    assert claims.vgg_claims(_vgg([[0.80], [0.85], [0.70]]), orders=False) == (
        "Neither write-up's order of VGG16 and VGG19, nor VGG24 last, can be tested without a second seed.")


def test_degradation_sentence():
    df = pd.DataFrame({"residual": [False] * 4, "depth": [20, 20, 56, 56], "train_acc": [0.9, 0.91, 0.8, 0.81]})
    assert "Welch p" in claims.degradation_sentence(df)
    assert "trains *worse* (degradation)" in claims.degradation_sentence(df)
    df["train_acc"] = [0.8, 0.81, 0.9, 0.91]
    assert "deeper plain network trains better" in claims.degradation_sentence(df)


def test_he_table_sits_next_to_the_papers_table_6_and_deviations_are_computed():
    rows = [{"depth": d, "residual": r, "seed": s, "test_acc": acc + 0.001 * s}
            for d, r, acc in ((20, False, 0.90), (20, True, 0.91), (56, False, 0.88), (56, True, 0.93)) for s in range(3)]
    table = reference.he_table(pd.DataFrame(rows)).set_index("layers")
    assert table.loc[20, "paper ResNet test error %"] == 8.75 and table.loc[56, "paper ResNet test error %"] == 6.97
    assert abs(table.loc[56, "ResNet test error %"] - 6.9) < 1e-9 and table.loc[56, "ResNet seeds"] == 3
    quick = RunConfig.build({"name": "cifar10", "val_size": 1000, "subset": 4000},
                            {"family": "cifar_resnet", "depth": 20, "width": 8},
                            {"epochs": 8, "lr": 0.02, "optimizer": "sgd", "batch_size": 128})
    dev = "; ".join(reference.he_deviations(quick, "image-folder:/data/cifar10", 3))
    for part in ("per-pixel mean subtraction", "4,000 training images (1,000 held out", "JPEG mirror",
                 "256 iterations instead of 64,000", "learning rate 0.02 instead of 0.1",
                 "8 filters in the first stage instead of 16", "3 seeds per depth"):
        assert part in dev, part
    full = quick.replace(data={"val_size": 5000, "subset": None}, train={"epochs": 182, "lr": 0.1}, model={"width": 16})
    dev = "; ".join(reference.he_deviations(full, "torchvision:/data/cifar-10-batches-py", 3))
    assert "iterations" not in dev and "learning rate" not in dev and "JPEG" not in dev and "45,000 training" in dev


def test_gradient_comparisons_know_the_lab_gradient_runs_models():
    kernel4 = RunConfig.build({"name": "cifar10"}, {"family": "lab_cnn", "depth": 3, "width": 16, "kernel_size": 4})
    assert reference.differences("grad_lab_cnn", kernel4, only=("model.",)) == []
    narrow = RunConfig.build({"name": "cifar10"}, {"family": "lab_resnet", "depth": 3, "width": 16, "residual": True})
    table = reference.compare("grad_lab_resnet", {"mean": [0.1, 0.11, 0.12]}, cfg=narrow, only=("model.",))
    assert list(table.verdict) == ["not comparable"], "width 16 is not the lab's 64"


def test_he_sentences_name_the_depths_and_the_deviations_computed_from_the_runs():
    from labcore.store import runs

    cfg = RunConfig.build({"name": "cifar10", "val_size": 5000},
                          {"family": "cifar_resnet", "depth": 20, "width": 8, "norm": "batch"},
                          {"epochs": 2, "optimizer": "sgd", "lr": 0.02})
    results = [runs.RunResult(cfg.replace(model={"depth": d}, seed=s), [], {}, 1, 1.0, "cpu", "image-folder:/x")
               for d in (20, 56) for s in (0, 1)]
    assert reference.he_depths_sentence(results) == ("Depths trained here: 20 and 56 layers (He et al.: 20 and 56; "
                                                     "the paper's Table 6 also has 32, 44 and 110).")
    assert reference.he_depths_sentence(results, table6=False).endswith("(He et al.: 20 and 56).")
    text = reference.he_deviations_sentence(results)
    assert "learning rate 0.02 instead of 0.1" in text and "8 filters in the first stage instead of 16" in text
    assert "2 seeds per depth" in text and text.endswith("not a replication of the paper's numbers.")
    assert "an order where the tests over seeds separate the models" in text
    one = reference.he_deviations_sentence([r for r in results if r.config.seed == 0])
    assert "at most a direction (one seed per model: no order between them can be claimed)" in one
    assert "order where" not in one, "a single seed claims no ordering"
    assert reference.he_deviations_sentence(results, conclusion=False).endswith("where the paper reports single runs "
                                                                               "(ResNet-110: best of 5).")
