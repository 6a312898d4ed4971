"""Exercise 2's own rules: what the ranking models' gradient ratios may be said to show."""
import pandas as pd
import pytest

from labcore.exercises.gradient_flow import attenuation_sentence


def test_attenuation_sentence_names_a_trend_only_when_every_step_agrees():


    table = pd.DataFrame({"model": ["VGG16", "VGG19", "VGG24", "ResNet18"], "weight layers": [16, 19, 24, 18],
                          "last/first at initialisation": [10.0, 100.0, 1000.0, 2.0],
                          "last/first after training": [5.0, 50.0, 20.0, 2.0]})
    text = attenuation_sentence(table, "VGG")
    assert "At initialisation, the last layer's gradient is 10x (VGG16), 100x (VGG19), 1,000x (VGG24)" in text
    assert "the ratio grows with every step in depth" in text
    assert "After training" in text and "does not move in one direction with depth" in text
    assert "not a test over seeds" in text and "ResNet18" not in text
    assert "Fewer than two" in attenuation_sentence(table, "ResNet")
    assert "neither show the deepest VGG starving its input layers of gradient nor rule it out" in text


@pytest.mark.parametrize("init, after, verdict", [
    ([0.55, 0.35, 0.13], [0.35, 0.49, 1.0], "Every ratio is at most 1"),  # quick's VGGs; exactly 1 still counts
    ([0.55, 0.35, 0.13], [0.35, 0.49, 1.01], "neither show"),  # one ratio above 1, the deepest not the largest at init
    ([1.5, 2.0, 40.0], [1.2, 1.1, 3.0], "The deepest, VGG24, passes the least gradient back"),
    ([1.5, 2.0, 2.0], [1.2, 1.1, 3.0], "neither show"),  # a tie with a shallower model is not 'the least'
    ([0.5, 0.6, 0.9], [0.5, 0.6, 0.9], "Every ratio is at most 1"),
])
def test_attenuation_verdict_on_vanishing_gradients_at_its_boundaries(init, after, verdict):


    table = pd.DataFrame({"model": ["VGG16", "VGG19", "VGG24"], "weight layers": [16, 19, 24],
                          "last/first at initialisation": init, "last/first after training": after})
    text = attenuation_sentence(table, "VGG")
    assert verdict in text
    assert sum(v in text for v in ("Every ratio is at most 1", "passes the least gradient", "neither show")) == 1


def test_first_conv_ratios_pair_each_plain_twin_with_its_residual_twin():
    import torch

    from labcore.exercises.gradient_flow import first_conv_sentence, first_conv_table

    grads = {(22, False, 1): torch.ones(2, 2), (22, True, 1): 3 * torch.ones(2, 2),
             (40, False, 1): torch.ones(2, 2), (40, True, 1): 10 * torch.ones(2, 2)}
    table = first_conv_table(grads)
    assert list(table["residual / plain"]) == pytest.approx([3.0, 10.0])
    assert first_conv_sentence(table) == ("at 22 layers, epoch 1: residual/plain = **3x**; "
                                          "at 40 layers, epoch 1: residual/plain = **10x**.")


def test_the_gradient_sentences_read_their_numbers_from_the_measurements():
    from labcore.exercises.gradient_flow import first_conv_norms, first_conv_table, lab_ratio_sentence, shrinkage_sentence
    from labcore.analysis import reference

    stats = pd.DataFrame({"mean": [0.01, 0.1]}, index=["lab CNN (plain)", "lab ResNetCNN"])
    lab = reference.lab_value("grad_lab_resnet", "mean") / reference.lab_value("grad_lab_cnn", "mean")
    assert lab_ratio_sentence(stats) == (f"The ResNetCNN's mean gradient norm is **10.0x** the plain CNN's (the lab "
                                         f"measured {lab:.1f}x: 0.115 against 0.011).")
    layers = pd.DataFrame({"depth": [0, 1], "norm": [0.5, 2.0]})
    assert shrinkage_sentence({"plain, init": layers}) == ("Gradient at the last layer divided by the gradient at the "
                                                           "first (how much it shrinks on the way back): plain, init: "
                                                           "**4x**.")
    import torch

    table = first_conv_table({(22, False, 1): torch.ones(1), (22, True, 1): 2 * torch.ones(1)})
    assert first_conv_norms(table) == {"22 layers, plain, epoch 1": 1.0, "22 layers, residual, epoch 1": 2.0}


def test_the_epoch_by_epoch_ratios_say_they_come_from_fewer_probe_batches_than_section_2():
    """Section 4 follows the gradients on the first `over_training_batches` probe batches, Section 2 on all of them:
    the same model's ratio then differs between the two, and the sentence says why."""
    from types import SimpleNamespace

    from labcore.exercises.gradient_flow import by_epoch_sentence

    layers = pd.DataFrame({"epoch": [0, 0, 1, 1], "depth": [0, 1, 0, 1], "norm": [0.5, 2.0, 1.0, 2.0]})
    tw = SimpleNamespace(batches=[None] * 4)
    fewer = by_epoch_sentence({"plain ConvNet-13": layers}, {"over_training_batches": 2}, tw)
    assert "on the first 2 of the 4 probe batches (Section 2 measured" in fewer and "**plain ConvNet-13**: 4x, 2x" in fewer
    same = by_epoch_sentence({"plain ConvNet-13": layers}, {"over_training_batches": 4}, tw)
    assert "on the same 4 probe batches as Section 2:" in same
