"""Figures built from what training and evaluation return. Each function returns a matplotlib Figure.

Figures are created without pyplot, so a notebook shows each exactly once (as the cell's value)
and long sweeps do not accumulate open figures. They are at most MAX_WIDTH inches wide, the width of a
report page at 100 px per inch, so the browser never shrinks them and no text in them is smaller than
the page's body text (14 px); they are embedded at twice that density, crisp on high-DPI screens.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib
import matplotlib.ticker
import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from labcore.text import sci

History = list[dict]


MAX_WIDTH = 10.5  # inches: a report page's content width at the 100 dpi figures are shown at
STYLE = {  # points at 100 dpi: 11 pt is 15 px, just above the page's 14 px body text
    "font.size": 12, "axes.titlesize": 12, "axes.labelsize": 12, "xtick.labelsize": 11, "ytick.labelsize": 11,
    "legend.fontsize": 11, "figure.titlesize": 13, "figure.dpi": 100,
    "axes.formatter.useoffset": False,  # a flat curve at 0.106 must not be labelled '1e-9 + 1.06e-1'
}
CHANCE_CLASSES = 10  # both datasets: uniform guessing gives loss ln(10) = 2.30 and accuracy 10 %


def report_figure(width: float, height: float) -> Figure:
    """A Figure no wider than MAX_WIDTH (a wider request is scaled down, keeping its aspect ratio)."""
    scale = min(1.0, MAX_WIDTH / width)
    return ReportFigure(figsize=(width * scale, height * scale), layout="constrained")


def chance_line(ax, metric: str, classes: int = CHANCE_CLASSES) -> None:
    """A dotted line where uniform guessing among `classes` classes sits, for loss, accuracy or error metrics."""
    level = {"loss": math.log(classes), "acc": 1 / classes, "err": 1 - 1 / classes}.get(metric.rsplit("_", 1)[-1])
    if level is not None:
        ax.axhline(level, color="grey", linestyle=":", linewidth=1.2, label="chance")


def sparse_ticks(ax, labels: Sequence[str], axis: str = "x", most: int = 20, **kw) -> None:
    """Every k-th label, so at most `most` show at full size instead of all of them too small to read."""
    step = max(1, -(-len(labels) // most))
    pos = list(range(0, len(labels), step))
    setter = ax.set_xticks if axis == "x" else ax.set_yticks
    setter(pos, [labels[i] for i in pos], **kw)


class ReportFigure(Figure):
    """A Figure that IPython shows as an embedded PNG at twice its density (crisp on high-DPI screens), with no
    pyplot and no change to IPython's or matplotlib's global settings."""

    def savefig(self, *args, **kwargs) -> None:
        """Save under STYLE too: matplotlib makes some artists (tick labels) only when it draws."""
        with matplotlib.rc_context(STYLE):
            super().savefig(*args, **kwargs)

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=2 * self.dpi, bbox_inches="tight")
        return buf.getvalue()

    def _ipython_display_(self) -> None:
        """Shown at its size in inches, from a PNG of twice the pixels; IPython asks this before any formatter,
        so a Figure printer that pyplot's inline backend registered cannot draw it at 1x outside STYLE."""
        from IPython.display import Image, display

        display(Image(data=self._repr_png_(), retina=True))


def styled(make: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw the figure under STYLE (matplotlib reads its settings while drawing), leaving the global ones alone,
    with readable ticks on every axis (`readable_axes`)."""
    @functools.wraps(make)
    def wrapper(*args, **kwargs) -> Figure:
        with matplotlib.rc_context(STYLE):
            fig = make(*args, **kwargs)
            readable_axes(fig)
            return fig

    return wrapper


LOG_SPAN = 30.0  # a positive curve spanning more than this factor (a loss of 100 at epoch 1, then 2) is drawn on a log axis


def readable_axes(fig: Figure) -> None:
    """No axis labelled '0.1060000000 ... 0.1059999988': a linear axis whose values hardly vary (a constant metric,
    every seed at chance) is widened to a few percent around them, and no axis uses an offset. A panel whose positive
    curves span more than LOG_SPAN (one diverged epoch) gets a log y axis, said in its title, so the others stay
    readable instead of a flat line at the bottom."""
    for ax in fig.axes:
        _log_if_wide(ax)
        _say_if_at_chance(ax)
        for get, set_, scale in ((ax.get_ylim, ax.set_ylim, ax.get_yscale), (ax.get_xlim, ax.set_xlim, ax.get_xscale)):
            lo, hi = get()
            if scale() == "linear" and abs(hi - lo) < 1e-6 * max(abs(lo), abs(hi), 1e-9):
                pad = 0.05 * max(abs(lo), abs(hi)) or 0.05
                set_(lo - pad, hi + pad)
        for axis in (ax.xaxis, ax.yaxis):
            fmt = axis.get_major_formatter()
            if isinstance(fmt, matplotlib.ticker.ScalarFormatter):
                fmt.set_useOffset(False)


NEAR_CHANCE = 0.02  # within 2 % of the chance line, plus 0.01 (loss 2.303 +- 0.056, accuracy 0.1 +- 0.012): at chance


def _curves(ax) -> np.ndarray:
    """Every finite y value the panel's curves plot (in data coordinates: not a chance line or an epoch marker,
    drawn across the axes, however few epochs a curve has)."""
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()
          if line.get_transform() == ax.transData and line.get_label() != "chance"]
    ys = np.concatenate(ys) if ys else np.array([])
    return ys[np.isfinite(ys)]


def _say_if_at_chance(ax) -> None:
    """A panel whose every curve stays near its chance line (uniform guessing) says so in its title: fitted to a
    0.01 range, noise at chance reads as a steep fall (a chance-level loss 'falling' from 2.310 to 2.301)."""
    chance = [line.get_ydata()[0] for line in ax.get_lines() if line.get_label() == "chance"]
    ys = _curves(ax)
    if chance and len(ys) and ax.get_title() and np.all(np.abs(ys - chance[0]) <= NEAR_CHANCE * abs(chance[0]) + 0.01):
        ax.set_title(f"{ax.get_title()} (every curve at the chance line)")


def _log_if_wide(ax) -> None:
    """A log y axis for a linear panel whose plotted curves are all positive and span more than LOG_SPAN."""
    ys = _curves(ax)
    if ax.get_yscale() != "linear" or not len(ys) or ys.min() <= 0 or ys.max() / ys.min() <= LOG_SPAN:
        return
    ax.set_yscale("log")
    if ax.get_title():
        ax.set_title(f"{ax.get_title()} (log scale)")


def sci_text(value: float, digits: int = 2) -> str:
    """A number as a figure writes it (labcore.text.sci): 0.043, 2.5, or 3.8×10⁻¹⁰."""
    return sci(value, digits)


def _stack(histories: Sequence[History], key: str, x: str = "epoch") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x values (epochs), mean and standard deviation of `key` over several seeds' histories (cut to the shortest)."""
    n = min(len(h) for h in histories)
    values = np.array([[row[key] for row in h[:n]] for h in histories], dtype=float)  # [seeds, epochs]
    epochs = np.array([row[x] for row in histories[0][:n]])
    return epochs, values.mean(0), values.std(0)


def _band(ax, histories: Sequence[History], key: str, label: str, color=None, style: str = "-",
          x: str = "epoch") -> None:
    """Mean line with a +-1 std band (the band is empty for a single seed)."""
    epochs, mean, std = _stack(histories, key, x)
    (line,) = ax.plot(epochs, mean, style, color=color, label=label)
    if len(histories) > 1:
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)


@styled
def training_curves(histories: History | Sequence[History], title: str = "") -> Figure:
    """Loss and accuracy per epoch, train and validation (mean +- std over seeds), best epoch marked."""
    if histories and isinstance(histories[0], dict):
        histories = [histories]
    fig = report_figure(10.5, 4)
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


@styled
def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str = "") -> Figure:
    """Confusion matrix heatmap, rows normalised to recall (counts in the cells)."""
    counts = np.asarray(matrix)
    recall = counts / counts.sum(1, keepdims=True).clip(min=1)
    fig = report_figure(8, 7)
    ax = fig.subplots()
    sns.heatmap(recall, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, ax=ax, annot_kws={"fontsize": 11},
                xticklabels=classes, yticklabels=classes, cbar_kws={"label": "fraction of the true class"})
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix (test set)")
    return fig


@styled
def misclassified(x: torch.Tensor, y: Sequence[int], pred: Sequence[int], classes: Sequence[str],
                  n: int = 24, cols: int = 6) -> Figure:
    """A grid of the first `n` misclassified test images (uint8 [N, C, H, W]), titled true -> predicted."""
    y, pred = np.asarray(y), np.asarray(pred)
    wrong = np.flatnonzero(y != pred)[:n]
    rows = max(1, -(-len(wrong) // cols))
    fig = report_figure(cols * 1.75, rows * 2.2)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong):
        img = x[i].cpu().permute(1, 2, 0).numpy()  # [C, H, W] -> [H, W, C] for imshow
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
        ax.set_title(f"{classes[y[i]]}\n-> {classes[pred[i]]}")
    fig.suptitle(f"Misclassified test images ({len(wrong)} shown of {int((y != pred).sum())})")
    return fig


@styled
def compare_curves(groups: Mapping[str, Sequence[History]], metric: str = "val_acc", title: str = "",
                   ax=None) -> Figure:
    """One line per group (e.g. per depth), mean +- std over seeds, for one history metric."""
    fig = ax.figure if ax is not None else report_figure(6, 4)
    ax = ax or fig.subplots()
    for label, hs in groups.items():
        _band(ax, hs, metric, label)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return fig


def curves_by(results: Sequence, key) -> dict:
    """Histories of finished RunResults grouped by `key(config)` (e.g. a model name), in first-seen order.
    Failed runs are left out: their partial histories would cut every curve of their group short."""
    groups: dict = {}
    for r in results:
        if getattr(r, "ok", True):
            groups.setdefault(key(r.config), []).append(r.history)
    return groups


PANELS = (("train_loss", "training loss"), ("val_loss", "validation loss"),
          ("train_acc", "training accuracy"), ("val_acc", "validation accuracy"))


@styled
def depth_study(results: Sequence, title: str = "") -> Figure:
    """Training and validation loss and accuracy per epoch, one line per depth (mean +- std over seeds)."""
    fig = report_figure(10.5, 7)
    axes = fig.subplots(2, 2).ravel()
    groups = curves_by(results, lambda c: c.model.depth)
    for ax, (metric, name) in zip(axes, PANELS):
        for depth, hs in sorted(groups.items()):
            _band(ax, hs, metric, f"depth {depth}")
        chance_line(ax, metric)
        ax.set(xlabel="epoch", title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend()
    fig.suptitle(title)
    return fig


@styled
def twins(results: Sequence, metrics: Sequence[str] = ("train_loss", "val_acc"), title: str = "") -> Figure:
    """Plain and residual side by side at equal depth: one column per depth, one row per metric."""
    groups = curves_by(results, lambda c: (c.model.depth, c.model.residual))
    depths = sorted({d for d, _ in groups})
    fig = report_figure(3.6 * len(depths), 3.2 * len(metrics))
    axes = np.atleast_2d(fig.subplots(len(metrics), len(depths), squeeze=False, sharey="row"))
    for j, depth in enumerate(depths):
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            for residual, color in ((False, "tab:red"), (True, "tab:blue")):
                if (depth, residual) in groups:
                    _band(ax, groups[(depth, residual)], metric, "residual" if residual else "plain", color=color)
            chance_line(ax, metric)
            ax.set(title=f"depth {depth}" if i == 0 else "", xlabel="epoch" if i == len(metrics) - 1 else "",
                   ylabel=metric.replace("_", " ") if j == 0 else "")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].legend()
    fig.suptitle(title)
    return fig


@styled
def versus_depth(df, metric: str = "test_acc", title: str = "") -> Figure:
    """`metric` against depth for each study (one panel each), plain and residual, mean +- std over seeds."""
    studies = list(dict.fromkeys(df["study"]))
    cols = min(4, len(studies))
    rows = -(-len(studies) // cols)
    fig = report_figure(3.4 * cols, 3.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[len(studies):]:
        ax.axis("off")
    for ax, study in zip(axes, studies):
        sub = df[df["study"] == study]
        for residual, color in ((False, "tab:red"), (True, "tab:blue")):
            g = sub[sub["residual"] == residual].groupby("depth")[metric]
            if len(g):
                mean, std = g.mean(), g.std().fillna(0)
                ax.errorbar(mean.index, mean.values, yerr=std.values, marker="o", capsize=3, color=color,
                            label="residual" if residual else "plain")
        chance_line(ax, metric)
        ax.set(title=study, xlabel="depth", ylabel=metric.replace("_", " ") if ax is axes[0] else "")
        depths = sorted(set(sub["depth"]))
        ax.set_xticks(depths[:: -(-len(depths) // 6)])  # the depths trained (at most 6 labels), not a grid
        if len(depths) == 1:
            ax.set_xlim(depths[0] - 1, depths[0] + 1)
    one_legend(fig, axes[len(studies):])
    fig.suptitle(title or f"{metric.replace('_', ' ')} against depth")
    return fig


def one_legend(fig: Figure, spare: Sequence = ()) -> None:
    """One legend for all panels (the same lines in each), in the first empty panel, else below them: a legend in
    every panel hides the points it sits on."""
    entries = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if not entries:  # nothing labelled: no legend (matplotlib refuses a legend of 0 columns)
        return
    if len(spare):
        spare[0].legend(entries.values(), entries.keys(), loc="center")
    else:
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=len(entries))


@styled
def training_error(results: Sequence, title: str = "") -> Figure:
    """He et al.'s Figure 6: training error (dashed) and validation error (solid, where the paper draws test error)
    against iterations, one colour per depth, plain (left) and residual (right)."""
    from labcore.core.data import sizes

    groups = curves_by(results, lambda c: (c.model.residual, c.model.depth))
    steps = {r.config.model.depth: -(-sizes(r.config.data)[0] // r.config.train.batch_size) for r in results}
    variants = sorted({res for res, _ in groups})
    fig = report_figure(5.25 * len(variants), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(variants), sharey=True))
    for ax, residual in zip(axes, variants):
        for (res, depth), hs in sorted(groups.items()):
            if res != residual:
                continue
            err = [[{**row, "iteration": row["epoch"] * steps[depth], "train_err": 1 - row["train_acc"],
                     "val_err": 1 - row["val_acc"]} for row in h] for h in hs]
            _band(ax, err, "val_err", f"{depth} layers", x="iteration")
            _band(ax, err, "train_err", "", style="--", color=ax.lines[-1].get_color(), x="iteration")
        chance_line(ax, "train_err")
        ax.set(title=("ResNet" if residual else "plain"), xlabel="iterations", ylabel="error")
        ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
        shown = [h for h in ax.get_lines() if h.get_label() and not h.get_label().startswith("_")]
        styles = [Line2D([], [], color="black", linestyle="--", label="training"),
                  Line2D([], [], color="black", label="validation")]  # the paper's dashed/solid, named
        ax.legend(shown + styles, [h.get_label() for h in shown + styles])
    fig.suptitle(title or "Training error (dashed) and validation error (solid)")
    return fig
