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
