"""Exercise 1.1 (notebook 01_mlp_baseline): the lab's MLP on MNIST, whether it has converged, and its test-set errors."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from labcore.analysis import plots
from labcore.analysis.sweep import distinct
from labcore.store import provenance, runs
from labcore.core.config import ConfigError, RunConfig
from labcore.store.planned import Planned, every_epoch
from labcore.store.runs import RunResult
from labcore.text import count

NOTEBOOK = "01_mlp_baseline"


def plan(data: dict, model: dict, train: dict, seeds: list[int], long_epochs: int | None) -> dict[str, list[Planned]]:
    """The lab's MLP once per seed (weights after every epoch, which 04 probes), and a longer run per seed (none
    when `long_epochs` is None: the page then leaves that section out)."""
    if not seeds:
        raise ConfigError("seeds is empty; give at least one seed, e.g. seeds: [0]")
    configs = [RunConfig.build(data, model, train, seed=s) for s in distinct(seeds, "seeds")]
    epochs = configs[0].train.epochs
    if long_epochs is not None and (type(long_epochs) is not int or long_epochs <= epochs):
        raise ConfigError(f"long_epochs is {long_epochs!r}; give a whole number of epochs above train.epochs ({epochs}): "
                          "the long run shows whether training levels off after them (or null to leave it out)")
    long = [] if long_epochs is None else [Planned(c.replace(train={"epochs": long_epochs}), study="long")
                                           for c in configs]
    return {"runs": [Planned(c, every_epoch(c), study="runs") for c in configs], "long": long}


RUN_COLUMNS = ("seed", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "n_params", "seconds", "status")


def runs_table(results: list[RunResult]) -> pd.DataFrame:
    """One row per seed: its final metrics (3 decimals), size, seconds and status; the settings are in the
    parameters cell, and every field of every run is on the build's runs page (runs.html)."""
    table = pd.DataFrame([r.summary() for r in results])[list(RUN_COLUMNS)].round(3)
    return table.set_index("seed")


def data_sentence(results: list[RunResult], n_train: int, n_val: int, n_test: int) -> str:
    """Where the images came from and how many each split has, and where the runs came from (trained now or read
    from the run store), for the runs' markdown."""
    stored = sum(r.cached for r in results)
    came = ("read from the run store" if stored == len(results) else "trained now" if not stored else
            f"{len(results) - stored} trained now, {stored} read from the run store")
    return (f"{n_train:,} training, {n_val:,} validation and {n_test:,} test images from {results[0].data_source}; "
            f"{count(len(results), 'seed')}, {came}.")


def curves_title(results: list[RunResult]) -> str:
    """'MLP (width 16, depth 2) on MNIST, 3 seeds'."""
    c = results[0].config
    return f"MLP (width {c.model.width}, depth {c.model.depth}) on {c.data.name.upper()}, {count(len(results), 'seed')}"


def long_title(long_results: list[RunResult]) -> str:
    """'The same MLP trained for 30 epochs'."""
    return f"The same MLP trained for {long_results[0].config.train.epochs} epochs"


def settings_sentence(results: list[RunResult], long_results: list[RunResult]) -> str:
    """The optimiser, learning rate, width and the two run lengths, read from the runs' configs."""
    c, long_epochs = results[0].config, long_results[0].config.train.epochs
    return (f"Settings of this report: {c.train.optimizer} at learning rate {c.train.lr:g}, {c.model.width} units, "
            f"{c.train.epochs} epochs above, {long_epochs} epochs in the long run.")


def mean_history(histories: list[dict] | list[list[dict]]) -> list[dict]:
    """Average several seeds' histories epoch by epoch (a single history is returned as is)."""
    if not histories or isinstance(histories[0], dict):
        return list(histories)
    n = min(len(h) for h in histories)
    return [{k: (v if k == "epoch" else float(np.mean([h[i][k] for h in histories])))
             for k, v in histories[0][i].items()} for i in range(n)]


def top_confusions(confusion: list[list[int]], classes: tuple[str, ...], k: int = 5) -> list[tuple[str, str, int]]:
    """The `k` most frequent (true, predicted, count) mistakes in a confusion matrix."""
    cm = np.asarray(confusion).copy()
    np.fill_diagonal(cm, 0)
    order = np.argsort(cm, axis=None)[::-1][:k]
    return [(classes[i], classes[j], int(cm[i, j])) for i, j in zip(*np.unravel_index(order, cm.shape)) if cm[i, j]]


def convergence(histories: list[dict] | list[list[dict]], window: int = 3, tol: float = 0.005) -> dict:
    """Has training levelled off? Reads the last `window` epochs of the mean curves over seeds.

    Verdicts: 'still improving' only while validation is still improving (accuracy up by `tol` or more, or
    validation loss down by more than 2 %); 'overfitting' when the best validation loss is more than `window`
    epochs old and it has risen by over 2 % since; 'plateau' when validation has stopped improving but the
    training loss still falls by 5 % or more (more epochs fit the training set without helping validation);
    'levelled off' when both have levelled off within the window (not 'converged': the window cannot show
    what much longer training would do); 'too short to tell' with `window` epochs or fewer.
    """
    history = mean_history(histories)
    assert history, "empty history"
    w = min(window, len(history) - 1)
    best = max(history, key=lambda r: r["val_acc"])
    if len(history) <= window:  # not enough epochs to see a plateau; say so instead of guessing
        return {"best_epoch": best["epoch"], "best_val_acc": best["val_acc"], "window": w, "epochs": len(history),
                "val_acc_gain": float("nan"), "val_loss_drop": float("nan"), "train_loss_drop": float("nan"),
                "verdict": "too short to tell"}
    best_loss = min(history, key=lambda r: r["val_loss"])
    gain = history[-1]["val_acc"] - history[-1 - w]["val_acc"]
    val_drop = 1 - history[-1]["val_loss"] / history[-1 - w]["val_loss"]
    loss_drop = 1 - history[-1]["train_loss"] / history[-1 - w]["train_loss"]
    if history[-1]["epoch"] - best_loss["epoch"] > window and history[-1]["val_loss"] > 1.02 * best_loss["val_loss"]:
        verdict = "overfitting"
    elif gain >= tol or val_drop > 0.02:
        verdict = "still improving"
    elif loss_drop >= 0.05:
        verdict = "plateau"
    else:
        verdict = "levelled off"
    return {"best_epoch": best["epoch"], "best_val_acc": best["val_acc"], "window": w, "epochs": len(history),
            "val_acc_gain": gain, "val_loss_drop": val_drop, "train_loss_drop": loss_drop, "verdict": verdict}


def convergence_sentence(c: dict) -> str:
    """Plain-language reading of `convergence(...)`: it claims nothing beyond the epochs it saw."""
    if c["verdict"] == "too short to tell":
        return (f"**Too short to tell**: {count(c['epochs'], 'epoch')} cannot show a plateau; "
                f"the best validation accuracy was {c['best_val_acc']:.4f} at epoch {c['best_epoch']}.")
    facts = (f"over the last {c['window']} epochs the validation accuracy changed by {c['val_acc_gain']:+.4f}, the "
             f"validation loss by {-c['val_loss_drop']:+.1%} and the training loss by {-c['train_loss_drop']:+.1%}; "
             f"the best validation accuracy, {c['best_val_acc']:.4f}, came at epoch {c['best_epoch']}")
    return {
        "levelled off": f"**Levelled off** within these {c['epochs']} epochs: {facts}. This window cannot show what much "
                     "longer training would do.",
        "plateau": f"**Plateau**: {facts}. The training loss still falls while validation has stopped improving: more "
                   "epochs fit the training images better without helping on new ones (a plateau, or the start of "
                   "overfitting).",
        "overfitting": f"**Past its best (overfitting)**: {facts}, and the validation loss has been rising for several "
                       "epochs.",
        "still improving": f"**Not converged yet**: {facts}. Validation is still improving, so more epochs would "
                           "likely help.",
    }[c["verdict"]]


def test_sentence(result: RunResult) -> str:
    """The first seed's test accuracy and loss, and which seed that is."""
    return (f"Seed {result.config.seed}: test accuracy {result.test['accuracy']:.4f}, test loss "
            f"{result.test['loss']:.4f}, on {len(result.test['predictions']):,} test images.")


def mistakes_sentence(result: RunResult, classes: tuple[str, ...], k: int = 5) -> str:
    """The `k` most frequent confusions (true -> predicted, count) and their share of all mistakes."""
    cm = result.test["confusion"]
    pairs = top_confusions(cm, classes, k)
    mistakes = int(np.sum(cm) - np.trace(cm))
    if not mistakes:
        return "The model makes no mistake on these test images."
    return ("The most frequent mistakes (true -> predicted, count): " + ", ".join(f"{t} -> {p} ({n})" for t, p, n in pairs)
            + f"; together {sum(n for *_, n in pairs) / mistakes:.0%} of the {mistakes} mistakes.")


def summary(results: list[RunResult], long_results: list[RunResult] | None, conv: dict, long_conv: dict | None,
            table: pd.DataFrame, device: str, tracking: str) -> dict[str, Any]:
    """What the report publishes (labcore.report.publish.publish(**summary)): metrics, provenance, headline, figure.
    Without long runs (`long_results` None: a profile that plans none) the long run's metrics and line are left out."""
    measured = table.set_index("metric")["measured (mean)"]
    measured = measured[~measured.index.duplicated()]  # the lab's and the replica's rows carry the same measurement
    c = results[0].config
    metrics = {"val_acc": measured["val_acc"], "test_acc": measured["test_acc"], "train_loss": measured["train_loss"],
               "epochs": c.train.epochs, "seeds": len(results), "converged": conv["verdict"],
               "seconds_per_epoch": sum(r.seconds for r in results) / sum(len(r.history) for r in results),
               "runs": [r.summary() for r in results], "lab_comparison": table.to_dict(orient="records")}
    seeds = f"{len(results)} seed{'s' if len(results) != 1 else ''}"
    headline = [
        ("Test accuracy", f"{metrics['test_acc']:.3f}, mean of {seeds}"),
        (f"Validation accuracy after {c.train.epochs} epochs", f"{metrics['val_acc']:.3f}"),
        (f"Convergence after {c.train.epochs} epochs", conv["verdict"]),
    ]
    if long_results:
        metrics.update(long_val_acc=long_conv["best_val_acc"], long_verdict=long_conv["verdict"])
        headline.append((f"Long run ({long_results[0].config.train.epochs} epochs)",
                         f"best validation accuracy {long_conv['best_val_acc']:.3f}, {long_conv['verdict']}"))
    return {"metrics": metrics, "headline": headline,
            "provenance": provenance.of_runs([*results, *(long_results or [])], device, tracking,
                                             seeds=[r.config.seed for r in results]),
            "figure": plots.training_curves(runs.histories(results), title="MLP on MNIST")}
