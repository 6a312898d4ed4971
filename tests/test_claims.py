"""The rules behind generated sentences, at their boundaries, and a property test: random numbers never
produce a sentence that contradicts them."""
import math
import re

import numpy as np
import pytest

from labcore.analysis import claims


def test_an_order_needs_a_test_over_seeds():
    assert claims.compare([0.80, 0.81, 0.79], [0.70, 0.71, 0.69]).verdict == "greater"
    assert claims.compare([0.70, 0.71, 0.69], [0.80, 0.81, 0.79]).verdict == "less"
    assert claims.compare([0.80, 0.85, 0.75], [0.79, 0.84, 0.74]).verdict == "indistinguishable"
    one = claims.compare([0.9], [0.1, 0.1, 0.1])
    assert one.verdict == "one seed" and one.p is None, "one seed: no test, however large the gap"
    assert claims.compare([0.5, 0.5], [0.5, 0.5]).verdict == "indistinguishable"
    flat = claims.compare([0.6, 0.6], [0.5, 0.5])
    assert flat.verdict == "indistinguishable" and flat.p is None, "no spread: nothing to test the gap against"
    stuck = claims.compare([0.1, 0.1, 0.1], [0.60, 0.62, 0.58])  # every seed of one side at chance, the same
    assert stuck.verdict == "indistinguishable" and stuck.p is None
    assert claims.compare([0.1, 0.1, 0.101], [0.60, 0.62, 0.58]).verdict == "less", "any spread: the test runs"
    assert claims.order({"a": [0.6, 0.6], "b": [0.5, 0.5]})[0] == "a ≈ b"


def test_the_boundary_of_the_test_is_the_stated_level():
    a, b = [0.0, 1.0, 2.0], [2.0, 3.0, 4.0]  # p of Welch's test with these is about 0.07
    c = claims.compare(a, b)
    assert 0.05 < c.p < 0.1 and c.verdict == "indistinguishable"
    assert claims.compare(a, b, level=0.90).verdict == "less"


def test_failed_seeds_are_left_out_of_tests_not_averaged():
    c = claims.compare([0.8, math.nan, 0.81, 0.79], [0.5, 0.51, 0.49])
    assert c.n_a == 3 and c.verdict == "greater" and abs(c.mean_a - 0.8) < 1e-9


def test_order_chains_only_what_the_tests_support():
    groups = {"VGG16": [0.37, 0.40, 0.34], "VGG19": [0.41, 0.42, 0.40], "VGG24": [0.33, 0.29, 0.37]}
    chain, _ = claims.order(groups)
    assert chain == "VGG19 ≈ VGG16 ≈ VGG24", "the quick profile's overlapping VGG bands support no order"
    losses = {"VGG16": [1.20, 1.21, 1.19], "VGG19": [1.50, 1.52, 1.49], "VGG24": [2.00, 2.02, 1.99]}
    chain, _ = claims.order(losses, higher_is_better=False)
    assert chain == "VGG16 > VGG19 > VGG24", "lower training loss is better, with clear gaps"
    sentence = claims.order_sentence(losses, "final training loss", higher_is_better=False)
    assert "**VGG16 > VGG19 > VGG24**" in sentence and "lower" in sentence and "3 seeds each" in sentence


def test_with_one_seed_no_order_is_claimed():
    s = claims.order_sentence({"a": [0.9], "b": [0.5]}, "validation accuracy")
    assert "single runs" in s and "not an order that can be claimed" in s and "**" not in s


@pytest.mark.parametrize("values, lab, verdict", [
    ([0.920, 0.921, 0.919], 0.92, "agrees"),            # inside, narrow
    ([0.920, 0.921, 0.919], 0.935, "agrees"),           # outside the interval but within the lab's rounding
    ([0.920, 0.921, 0.919], 0.95, "disagrees"),         # beyond interval + tolerance
    ([0.80, 0.95, 1.0], 0.92, "inconclusive"),          # inside, but the interval is wider than the tolerance
    ([0.91], 0.92, "inconclusive"),                     # one seed near the value: no interval, no claim
    ([0.50], 0.92, "disagrees"),                        # one seed far beyond three tolerances
    ([], 0.92, "inconclusive"),
])
def test_agreement_only_when_the_interval_contains_the_lab_and_is_narrow(values, lab, verdict):
    assert claims.agreement(values, lab, tolerance=0.02) == verdict


def test_agreement_on_a_log_scale_and_not_comparable_settings():
    assert claims.agreement([0.010, 0.012, 0.011], 0.011, math.log(2), log=True) == "agrees"
    assert claims.agreement([0.10, 0.12, 0.11], 0.011, math.log(2), log=True) == "disagrees"
    assert claims.agreement([0.92] * 3, 0.92, 0.02, comparable=False) == "not comparable"


def test_a_seed_trained_when_beating_chance_beyond_sampling_noise():
    bound = claims.chance_bound(1000, 0.1)
    assert abs(bound - (0.1 + 1.645 * math.sqrt(0.09 / 1000))) < 1e-12  # 0.1156 on 1,000 images
    assert claims.seed_trained(bound + 1e-6, 1000, 0.1) and not claims.seed_trained(bound, 1000, 0.1)
    assert claims.seed_trained(0.12, 5000, 0.1) and not claims.seed_trained(0.12, 200, 0.1), "fewer images, more noise"
    assert claims.seed_trained(math.nan, 1000, 0.1) is None


def test_answering_the_most_frequent_class_to_every_image_is_not_training():
    """Smoke's 500 CIFAR-10 validation images are 13.4 % trucks: a network that answers "truck" to all of them
    scores 0.134, far above 1/10 + noise, and has learned nothing. Chance is the best constant guess there."""
    assert claims.seed_trained(0.134, 500, 0.1), "against 1/10 it would have counted"
    assert not claims.seed_trained(0.134, 500, 0.134)
    bound = claims.chance_bound(500, 0.134)
    assert abs(bound - (0.134 + 1.645 * math.sqrt(0.134 * 0.866 / 500))) < 1e-12  # 0.159
    assert claims.seed_trained(bound + 1e-6, 500, 0.134) and not claims.seed_trained(bound, 500, 0.134)
    assert not claims.seed_trained(1.0, 500, 1.0), "every image of one class: answering it is no learning"
    with pytest.raises(AssertionError, match="guess is an accuracy"):
        claims.chance_bound(500, 10)  # a number of classes where the guess's accuracy belongs


def test_seeds_phrase_names_failed_seeds():
    assert claims.seeds_phrase([True, None, False], [0, 1, 2]) == "trained in 1 of 3 seeds (seed 1 failed)"


def test_property_random_groups_never_get_an_order_their_numbers_contradict():
    rng = np.random.default_rng(0)
    for _ in range(400):
        n = int(rng.integers(1, 5))
        groups = {f"m{i}": list(rng.normal(rng.uniform(0, 1), rng.uniform(0, 0.2), n)) for i in range(int(rng.integers(2, 5)))}
        higher = bool(rng.integers(0, 2))
        chain, pairs = claims.order(groups, higher)
        names = re.split(r" > | ≈ |, ", chain)
        seps = re.findall(r" > | ≈ |, ", chain)
        assert sorted(names) == sorted(groups)
        for (a, b), sep, pair in zip(zip(names, names[1:]), seps, pairs):
            ma, mb = np.mean(groups[a]), np.mean(groups[b])
            assert (ma >= mb) if higher else (ma <= mb), "the chain runs best first"
            if sep == " > ":
                assert pair.p is not None and pair.p < 0.05, "'>' only with a significant test"
            if n == 1:
                assert sep == ", ", "one seed: never an ordering symbol"


def test_property_agreement_never_claims_what_the_interval_does_not_show():
    rng = np.random.default_rng(1)
    for _ in range(400):
        n = int(rng.integers(1, 6))
        values = list(rng.normal(0.9, rng.uniform(0, 0.05), n))
        lab, tol = float(rng.uniform(0.85, 0.95)), 0.02
        verdict = claims.agreement(values, lab, tol)
        mean, lo, hi = claims.interval(values)
        if verdict == "agrees":
            assert n >= 2 and lo - tol <= lab <= hi + tol and (hi - lo) / 2 <= tol
        if verdict == "disagrees":
            assert (n >= 2 and not lo - tol <= lab <= hi + tol) or (n == 1 and abs(mean - lab) > 3 * tol)


def test_an_order_reads_in_words_without_a_legend():
    assert claims.order_words("VGG16 > VGG19 ≈ VGG24") == "VGG16 ahead of VGG19; VGG19 and VGG24 not distinguishable"
    assert claims.order_words("A, B, C") == "A, B, C, in the order of their means (one seed: no order is claimed)"
    assert claims.order_words("A") == "A"


@pytest.mark.parametrize("a, b, verdict", [
    ((0.5, 0.01, 3), (0.5, 0.02, 3), "identical"),
    ((0.50, 0.02, 3), (0.51, 0.02, 3), "within seed noise"),
    ((0.50, 0.001, 3), (0.60, 0.001, 3), "differs"),
    ((0.50, None, 1), (0.51, None, 1), "one seed: cannot tell"),
    ((float("nan"), None, 1), (0.5, None, 1), "differs"),
])
def test_two_builds_means_are_compared_against_their_spread(a, b, verdict):
    assert claims.same_within_noise(*a, *b) == verdict


def test_with_one_seed_everywhere_the_orders_are_given_once_with_one_caveat():
    single = claims.orders_sentence([({"a": [0.9], "b": [0.5], "c": [0.7]}, "validation accuracy", True),
                                     ({"a": [1.0], "b": [2.0], "c": [1.5]}, "final training loss", False)])
    assert single.count("can be claimed") == 1 and "**" not in single
    assert "a, c, b by validation accuracy, and a, c, b by final training loss" in single
    # A second seed anywhere: each measure gets its own tested sentence, as order_sentence words it.
    mixed = claims.orders_sentence([({"a": [0.9, 0.91], "b": [0.5]}, "validation accuracy", True)])
    assert mixed == claims.order_sentence({"a": [0.9, 0.91], "b": [0.5]}, "validation accuracy")
    assert "the means come in the order a, b" in mixed and "one seed per model" not in mixed
    # One model only: nothing to order, said as order_sentence says it.
    assert "there is no order to state" in claims.orders_sentence([({"a": [0.9]}, "validation accuracy", True)])
