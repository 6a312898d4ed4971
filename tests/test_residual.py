"""Exercise 1.2 (residual)'s own sentences."""
import pandas as pd

from labcore.exercises.residual import cost_sentence


def test_the_cost_sentence_compares_the_resnetcnn_with_the_plain_cnn_not_with_its_twin():
    """Until 2026-11 the ratio was max/min over all three rows, so a slow plain twin stood in for the ResNetCNN."""
    cost = pd.DataFrame({"study": ["lab_cnn", "lab_resnet", "lab_resnet"], "residual": [False, False, True],
                         "n_params": [20_000, 150_000, 150_000], "seconds": [10.0, 90.0, 60.0]})
    assert cost_sentence(cost) == ("The ResNetCNN has 7.5x the parameters of the lab's plain CNN (150,000 against 20,000) "
                                   "and took 6.0x its training time per run here (60.0 s against 10.0 s).")
    assert "not both trained" in cost_sentence(cost[cost["study"] == "lab_resnet"])


def _ranking_runs(seeds: int) -> pd.DataFrame:
    models = (("vgg", 16, False, 0.30), ("vgg", 19, False, 0.32), ("vgg", 24, False, 0.20), ("resnet", 18, True, 0.40),
              ("resnet", 34, True, 0.42))
    return pd.DataFrame([{"study": f, "family": f, "depth": d, "residual": r, "seed": s, "val_acc": acc + 0.001 * s,
                          "train_loss": 2.0 - acc + 0.001 * s} for f, d, r, acc in models for s in range(seeds)])


def test_with_one_seed_the_ranking_gives_its_caveat_once_and_the_vgg_orders_inside_the_five():
    from labcore.exercises.residual import ranking_sentence

    one = ranking_sentence(_ranking_runs(1))
    assert one.count("can be claimed") == 1 and one.count("one seed per model") == 1, one
    assert "ResNet34, ResNet18, VGG19, VGG16, VGG24 by validation accuracy" in one
    assert one.endswith("Neither write-up's order of VGG16 and VGG19, nor VGG24 last, can be tested without a second "
                        "seed.")
    three = ranking_sentence(_ranking_runs(3))  # seeds enough to test: the tested orders, the VGGs' among them
    assert "By validation accuracy: **" in three and "VGG24 is last, as both write-ups say" in three
    assert three.count("Welch t-test") == 1 and "(lower is better)" in three, "'>' and '≈' explained once"
