"""Figures built from what training and evaluation return. Each function returns a matplotlib Figure.

Figures are created without pyplot, so a notebook shows each exactly once (as the cell's value)
and long sweeps do not accumulate open figures.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

History = list[dict]


def _register_png_display() -> None:
    """Let IPython show a bare Figure (made without pyplot) as an embedded PNG."""
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:  # plain Python: figures are saved, not displayed
        return
    shell = get_ipython()
    if shell is not None:
        select_figure_formats(shell, {"png"}, bbox_inches="tight", dpi=100)


_register_png_display()


def _stack(histories: Sequence[History], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and standard deviation of `key` over several seeds' histories (cut to the shortest)."""
    n = min(len(h) for h in histories)
    values = np.array([[row[key] for row in h[:n]] for h in histories], dtype=float)  # [seeds, epochs]
    epochs = np.array([row["epoch"] for row in histories[0][:n]])
    return epochs, values.mean(0), values.std(0)


def _band(ax, histories: Sequence[History], key: str, label: str, color=None, style: str = "-") -> None:
    """Mean line with a +-1 std band (the band is empty for a single seed)."""
    epochs, mean, std = _stack(histories, key)
    (line,) = ax.plot(epochs, mean, style, color=color, label=label)
    if len(histories) > 1:
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)


def training_curves(histories: History | Sequence[History], title: str = "") -> Figure:
    """Loss and accuracy per epoch, train and validation (mean +- std over seeds), best epoch marked."""
    if histories and isinstance(histories[0], dict):
        histories = [histories]
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric, name in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "acc", "accuracy")):
        _band(ax, histories, f"train_{metric}", "train")
        _band(ax, histories, f"val_{metric}", "validation")
        ax.set(xlabel="epoch", ylabel=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs, val_acc, _ = _stack(histories, "val_acc")
    best = int(epochs[int(np.argmax(val_acc))])
    for ax in (ax_loss, ax_acc):
        ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best})")
        ax.legend()
    fig.suptitle(title or "Training curves")
    return fig


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str = "") -> Figure:
    """Confusion matrix heatmap, rows normalised to recall (counts in the cells)."""
    counts = np.asarray(matrix)
    recall = counts / counts.sum(1, keepdims=True).clip(min=1)
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(recall, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, ax=ax,
                xticklabels=classes, yticklabels=classes, cbar_kws={"label": "fraction of the true class"})
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix (test set)")
    return fig


def misclassified(x: torch.Tensor, y: Sequence[int], pred: Sequence[int], classes: Sequence[str],
                  n: int = 24, cols: int = 8) -> Figure:
    """A grid of the first `n` misclassified test images (uint8 [N, C, H, W]), titled true -> predicted."""
    y, pred = np.asarray(y), np.asarray(pred)
    wrong = np.flatnonzero(y != pred)[:n]
    rows = max(1, -(-len(wrong) // cols))
    fig = Figure(figsize=(cols * 1.4, rows * 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong):
        img = x[i].cpu().permute(1, 2, 0).numpy()  # [C, H, W] -> [H, W, C] for imshow
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
        ax.set_title(f"{classes[y[i]]} -> {classes[pred[i]]}", fontsize=8)
    fig.suptitle(f"Misclassified test images ({len(wrong)} shown of {int((y != pred).sum())})")
    return fig


def compare_curves(groups: Mapping[str, Sequence[History]], metric: str = "val_acc", title: str = "",
                   ax=None) -> Figure:
    """One line per group (e.g. per depth), mean +- std over seeds, for one history metric."""
    fig = ax.figure if ax is not None else Figure(figsize=(6, 4), layout="constrained")
    ax = ax or fig.subplots()
    for label, hs in groups.items():
        _band(ax, hs, metric, label)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig


def _by(results, key) -> dict:
    """Group RunResults' histories by a function of their config, keeping first-seen order."""
    groups: dict = {}
    for r in results:
        groups.setdefault(key(r.config), []).append(r.history)
    return groups


PANELS = (("train_loss", "training loss"), ("val_loss", "validation loss"),
          ("train_acc", "training accuracy"), ("val_acc", "validation accuracy"))


def depth_study(results: Sequence, title: str = "") -> Figure:
    """Training and validation loss and accuracy per epoch, one line per depth (mean +- std over seeds)."""
    fig = Figure(figsize=(14, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    groups = _by(results, lambda c: c.model.depth)
    for ax, (metric, name) in zip(axes, PANELS):
        for depth, hs in sorted(groups.items()):
            _band(ax, hs, metric, f"depth {depth}")
        ax.set(xlabel="epoch", title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def twins(results: Sequence, metrics: Sequence[str] = ("train_loss", "val_acc"), title: str = "") -> Figure:
    """Plain and residual side by side at equal depth: one column per depth, one row per metric."""
    groups = _by(results, lambda c: (c.model.depth, c.model.residual))
    depths = sorted({d for d, _ in groups})
    fig = Figure(figsize=(3.6 * len(depths), 3.0 * len(metrics)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(metrics), len(depths), squeeze=False, sharey="row"))
    for j, depth in enumerate(depths):
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            for residual, color in ((False, "tab:red"), (True, "tab:blue")):
                if (depth, residual) in groups:
                    _band(ax, groups[(depth, residual)], metric, "residual" if residual else "plain", color=color)
            ax.set(title=f"depth {depth}" if i == 0 else "", xlabel="epoch" if i == len(metrics) - 1 else "",
                   ylabel=metric.replace("_", " ") if j == 0 else "")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def versus_depth(df, metric: str = "test_acc", title: str = "") -> Figure:
    """`metric` against depth for each study (one panel each), plain and residual, mean +- std over seeds."""
    studies = list(dict.fromkeys(df["study"]))
    fig = Figure(figsize=(3.4 * len(studies), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(studies)))
    for ax, study in zip(axes, studies):
        sub = df[df["study"] == study]
        for residual, color in ((False, "tab:red"), (True, "tab:blue")):
            g = sub[sub["residual"] == residual].groupby("depth")[metric]
            if len(g):
                mean, std = g.mean(), g.std().fillna(0)
                ax.errorbar(mean.index, mean.values, yerr=std.values, marker="o", capsize=3, color=color,
                            label="residual" if residual else "plain")
        ax.set(title=study, xlabel="depth", ylabel=metric.replace("_", " ") if ax is axes[0] else "")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.suptitle(title or f"{metric.replace('_', ' ')} against depth")
    return fig


def training_error(results: Sequence, title: str = "") -> Figure:
    """He et al.'s figure: training error (1 - training accuracy) per epoch, plain (left) and residual (right)."""
    groups = _by(results, lambda c: (c.model.residual, c.model.depth))
    variants = sorted({res for res, _ in groups})
    fig = Figure(figsize=(5.5 * len(variants), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(variants), sharey=True))
    for ax, residual in zip(axes, variants):
        for (res, depth), hs in sorted(groups.items()):
            if res != residual:
                continue
            err = [[{**row, "train_err": 1 - row["train_acc"], "val_err": 1 - row["val_acc"]} for row in h] for h in hs]
            _band(ax, err, "train_err", f"{depth} layers, training")
            _band(ax, err, "val_err", f"{depth} layers, validation", style="--", color=ax.lines[-1].get_color())
        ax.set(title="residual" if residual else "plain", xlabel="epoch", ylabel="error")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.suptitle(title or "Training (solid) and validation (dashed) error")
    return fig
