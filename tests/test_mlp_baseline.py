"""Exercise 1.1's own rules: the convergence verdict and its sentence, the most frequent confusions."""
import dataclasses

from labcore.exercises.mlp_baseline import convergence, convergence_sentence, mean_history, mistakes_sentence, top_confusions
from labcore.store.runs import RunResult
from labcore.core.config import RunConfig


def test_convergence_verdicts():
    flat = [{"epoch": e, "train_loss": 0.3, "val_loss": 0.3, "val_acc": 0.9} for e in range(1, 8)]
    rising = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_acc": 0.5 + 0.05 * e} for e in range(1, 8)]
    assert convergence(flat)["verdict"] == "levelled off"
    assert convergence(rising)["verdict"] == "still improving"
    assert convergence(flat[:2])["verdict"] == "too short to tell"
    over = [{"epoch": e, "train_loss": 1 / e, "val_loss": 0.5 + abs(e - 2) * 0.1, "val_acc": 0.9} for e in range(1, 9)]
    assert convergence(over)["verdict"] == "overfitting"
    assert mean_history([flat, flat])[0] == flat[0]
    # Training loss still falling, validation flat: a plateau, never "still improving" or "more epochs would help".
    plateau = [{"epoch": e, "train_loss": 1 / e, "val_loss": 0.5, "val_acc": 0.8} for e in range(1, 8)]
    assert convergence(plateau)["verdict"] == "plateau"
    assert "would likely help" not in convergence_sentence(convergence(plateau))
    assert "cannot show what much longer training would do" in convergence_sentence(convergence(flat))
    # Boundaries: a validation gain of exactly `tol` counts as improving, just below it does not.
    edge = [{"epoch": e, "train_loss": 0.3, "val_loss": 0.3, "val_acc": 0.9 + (0.005 if e == 7 else 0)} for e in range(1, 8)]
    assert convergence(edge)["verdict"] == "still improving"
    below = [{**r, "val_acc": 0.9 + (0.0049 if r["epoch"] == 7 else 0)} for r in edge]
    assert convergence(below)["verdict"] == "levelled off"


def test_top_confusions():
    cm = [[5, 2, 0], [7, 5, 1], [0, 0, 5]]
    assert top_confusions(cm, ("a", "b", "c"), k=2) == [("b", "a", 7), ("a", "b", 2)]


def test_the_mistakes_sentence_counts_against_all_mistakes():
    cm = [[5, 2, 0], [7, 5, 1], [0, 0, 5]]
    r = RunResult(RunConfig(), [], {"confusion": cm}, 1, 1.0, "cpu", "toy")
    assert mistakes_sentence(r, ("a", "b", "c"), k=2) == ("The most frequent mistakes (true -> predicted, count): "
                                                          "b -> a (7), a -> b (2); together 90% of the 10 mistakes.")
    perfect = RunResult(RunConfig(), [], {"confusion": [[3, 0], [0, 4]]}, 1, 1.0, "cpu", "toy")
    assert mistakes_sentence(perfect, ("a", "b")) == "The model makes no mistake on these test images."


def test_the_runs_sentences_read_their_numbers_from_the_runs():
    from labcore.store import runs
    from labcore.exercises.mlp_baseline import curves_title, data_sentence, long_title, settings_sentence

    cfg = RunConfig.build({"name": "mnist"}, {"family": "mlp", "width": 16, "depth": 2}, {"epochs": 15, "lr": 1e-4})
    r = RunResult(cfg, [], {}, 1, 1.0, "cpu", "torchvision:/data/MNIST/raw")
    long = RunResult(cfg.replace(train={"epochs": 100}), [], {}, 1, 1.0, "cpu", "x")
    assert data_sentence([r], 55000, 5000, 10000) == ("55,000 training, 5,000 validation and 10,000 test images from "
                                                      "torchvision:/data/MNIST/raw; 1 seed, trained now.")
    read = dataclasses.replace(r, cached=True)
    assert data_sentence([read], 55000, 5000, 10000).endswith("1 seed, read from the run store.")
    assert data_sentence([read, r], 55000, 5000, 10000).endswith("2 seeds, 1 trained now, 1 read from the run store.")
    assert settings_sentence([r], [long]) == ("Settings of this report: adam at learning rate 0.0001, 16 units, "
                                              "15 epochs above, 100 epochs in the long run.")
    assert curves_title([r]) == "MLP (width 16, depth 2) on MNIST, 1 seed"
    assert long_title([long]) == "The same MLP trained for 100 epochs"
    assert runs.caption(r, "Per-class report") == f"Per-class report of {cfg.label()} (seed 0):"
