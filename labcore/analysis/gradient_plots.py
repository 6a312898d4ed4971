"""Figures of exercise 2 (04_gradient_flow): measured gradient norms per layer, per model, over depth and over
training, in the report style of labcore.analysis.plots (page-wide at most, labelled, log scales where norms span
decades)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from labcore.analysis.plots import MAX_WIDTH, report_figure, sci_text, sparse_ticks, styled


PER_ROW = 45  # boxes in one row of a panel: each labelled at the page's text size, across the page's width


@styled
def grad_boxes(tables: Mapping[str, pd.DataFrame], title: str = "") -> Figure:
    """Box plots of per-parameter gradient norms (over batches), one panel per model, parameters input -> output;
    every box labelled (names shortened, `short_param`), a long model's parameters over several rows."""
    rows = [(label, df, part, chunk) for label, df in tables.items()
            for part, chunk in enumerate(_chunks(list(dict.fromkeys(df["param"]))))]  # already sorted by depth
    fig = report_figure(MAX_WIDTH, 3.4 * len(rows))
    axes = np.atleast_1d(fig.subplots(len(rows), 1, sharey=True))
    widest = max(len(r[3]) for r in rows)  # one box width for every panel: the fullest row fills its axes
    for ax, (label, df, part, params) in zip(axes, rows):
        ax.boxplot([df.loc[df["param"] == p, "norm"].to_numpy() for p in params], positions=range(len(params)),
                   showfliers=False)
        ax.set_yscale("log")
        ax.set_xticks(range(len(params)), [short_param(p) for p in params], rotation=90)
        ax.set_xlim(-1, widest)
        parts = sum(r[0] == label for r in rows)
        ax.set(title=label + (f" ({part + 1} of {parts})" if parts > 1 else ""), ylabel="gradient L2 norm (log)")
    fig.suptitle(title or "Per-parameter gradient norms")
    names = [p for _, df, _, params in rows for p in params]
    fig.supxlabel(f"parameter, input to output ({glossary(names)})")
    return fig


SHORT = {"stages.": "s: stage", "transitions.": "t: transition", "blocks.": "bl: block", "layers.": "l: layer"}


def glossary(params: list[str]) -> str:
    """What the short names of `params` (short_param) abbreviate, only what occurs among them: 'w: weight, b: bias;
    s: stage, then block numbers'; names kept whole (the lab's 'stem') need none."""
    ends = [w for w, end in (("w: weight", ".weight"), ("b: bias", ".bias")) if any(p.endswith(end) for p in params)]
    parts = [text for prefix, text in SHORT.items() if any(prefix in p for p in params)]
    return "; ".join(filter(None, [", ".join(ends), ", ".join(parts) + (", then numbers" if parts else "")]))


def _chunks(params: list[str]) -> list[list[str]]:
    """`params` in rows of at most PER_ROW, as even as possible."""
    n = -(-len(params) // PER_ROW) or 1
    size = -(-len(params) // n)
    return [params[k:k + size] for k in range(0, len(params), size)] or [[]]


def short_param(name: str) -> str:
    """A parameter's name short enough to label every box: 'stages.0.11.conv.weight' -> 's0.11.w'."""
    out = name.replace("stages.", "s").replace("transitions.", "t").replace("blocks.", "bl").replace("layers.", "l")
    return out.replace(".conv.", ".").replace(".weight", ".w").replace(".bias", ".b")


@styled
def grad_vs_depth(curves: Mapping[str, pd.DataFrame], title: str = "") -> Figure:
    """Per-layer gradient norm (median over batches, band: min-max) against the layer's depth, log scale.

    `curves` maps a label (e.g. 'plain, init') to a `probes.layer_norms` table; labels containing
    'residual' are drawn in blue, others in red; labels containing 'init' are dashed.
    """
    fig = report_figure(8, 4.5)
    ax = fig.subplots()
    for label, df in curves.items():
        g = df.groupby("depth")["norm"]
        color = "tab:blue" if "residual" in label else "tab:red"
        style = "--" if "init" in label else "-"
        ax.plot(g.median().index, g.median().values, style, color=color, label=label, marker=".")
        ax.fill_between(g.min().index, g.min().values, g.max().values, color=color, alpha=0.12, linewidth=0)
    ax.set(yscale="log", xlabel="layer (0 = nearest the input)", ylabel="gradient norm of the layer (log)")
    ax.legend()
    fig.suptitle(title or "Gradient norm against depth")
    return fig


@styled
def flow_by_model(tables: Mapping[str, pd.DataFrame], title: str = "") -> Figure:
    """Per-layer gradient norm (median over batches) against the layer's relative position, one line per model,
    at initialisation (left) and after training (right); `tables` are `probes.before_after` results."""
    fig = report_figure(10.5, 4.5)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, state in zip(axes, ("initialisation", "after training")):
        for label, df in tables.items():
            sub = df[df["state"] == state]
            med = sub.groupby("position")["norm"].median()
            ax.plot(med.index, med.values, marker=".", label=label, linestyle="--" if "ResNet" in label else "-")
        ax.set(yscale="log", title=state, xlabel="layer position (0 = input, 1 = output)",
               ylabel="gradient norm of the layer (log)" if ax is axes[0] else "")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5))  # below, over no curve
    fig.suptitle(title or "Gradient norm by layer")
    return fig


@styled
def gradient_flow(table: pd.DataFrame, title: str = "") -> Figure:
    """The classic gradient-flow plot: mean and maximum |gradient| of each layer's weights, input to output."""
    fig = report_figure(9, 5)
    ax = fig.subplots()
    x = np.arange(len(table))
    ax.bar(x, table["max_abs"], color="tab:cyan", alpha=0.6, label="max |grad|")
    ax.bar(x, table["mean_abs"], color="tab:blue", label="mean |grad|")
    sparse_ticks(ax, list(table["layer"]), most=24, rotation=60, ha="right")
    ax.set(yscale="log", ylabel="|gradient| (log)", xlabel="layer, input -> output")
    ax.legend()
    fig.suptitle(title or "Gradient flow")
    return fig


@styled
def filter_grads(grads: Mapping[str, torch.Tensor], title: str = "") -> Figure:
    """Heatmaps of first-convolution weight gradients [out, in, k, k], one panel per model, one colour scale.

    Each panel tiles the filters: rows are output channels, and each row holds the in-channel kernels side by side.
    The shared, symmetric scale makes a small gradient look faint next to a large one, which is the point.
    """
    tiles = {}
    for label, g in grads.items():
        o, i, k, _ = g.shape
        tiles[label] = g.permute(0, 2, 1, 3).reshape(o * k, i * k).numpy()  # [out*k, in*k]
    vmax = max(float(np.abs(t).max()) for t in tiles.values()) or 1.0
    cols = min(4, len(tiles))
    rows = -(-len(tiles) // cols)
    fig = report_figure(3.6 * cols + 1.2, 4.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    im = None
    for ax, (label, t) in zip(axes, tiles.items()):
        im = ax.imshow(t, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        # Three short lines, so that neighbouring titles never run into each other.
        ax.set_title(label.replace(", epoch", "\nepoch").replace(", init", "\ninit") +
                     f"\n|grad| = {sci_text(float(np.linalg.norm(t)))}", fontsize="small")
    fig.colorbar(im, ax=list(axes), shrink=0.7, pad=0.04, label="gradient (shared scale)")
    fig.suptitle(title or "First convolution's weight gradient")
    return fig


@styled
def layer_epoch(maps: Mapping[str, pd.DataFrame], title: str = "") -> Figure:
    """Heatmaps of log10 per-layer gradient norm: layer (rows, input at the top) x epoch (columns), shared scale.

    Each value is a `probes.layer_norms` table with an added 'epoch' column (median over batches is shown).
    """
    grids = {label: df.groupby(["depth", "epoch"])["norm"].median().unstack("epoch") for label, df in maps.items()}
    logs = {label: np.log10(g.clip(lower=1e-12)) for label, g in grids.items()}
    lo = min(float(v.min().min()) for v in logs.values())
    hi = max(float(v.max().max()) for v in logs.values())
    fig = report_figure(4.2 * len(maps), 5)
    axes = np.atleast_1d(fig.subplots(1, len(maps)))
    for ax, (label, grid) in zip(axes, logs.items()):
        # Tick labels thinned to a readable number (seaborn's "auto" packs them too tightly at this size).
        sns.heatmap(grid, ax=ax, vmin=lo, vmax=hi, cmap="magma", cbar=ax is axes[-1],
                    xticklabels=max(1, -(-grid.shape[1] // 8)), yticklabels=max(1, -(-grid.shape[0] // 12)),
                    cbar_kws={"label": "log10 gradient norm"})
        ax.tick_params(axis="y", labelrotation=0)
        ax.set(title=label, xlabel="epoch", ylabel="layer (0 = input side)" if ax is axes[0] else "")
    fig.suptitle(title or "Per-layer gradient norm over training")
    return fig
