"""Every figure function on synthetic results: page-wide at most, readable ticks, no offset notation,
labelled axes, and the chance lines its text tells the reader to look for."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from labcore.analysis import gradient_plots, plots
from labcore.core.config import RunConfig
from labcore.store.runs import RunResult

BODY_PT = 10.5  # 14 px of body text at the 100 dpi figures are shown at (1 pt = 100/72 px)


def _history(epochs=4, start=2.3, seed=0):
    rng = np.random.default_rng(seed)
    return [{"epoch": e, "train_loss": start / e + 1e-9 * rng.random(), "val_loss": start / e + 0.1,
             "train_acc": 0.1 + 0.1 * e, "val_acc": 0.105 + 0.09 * e} for e in range(1, epochs + 1)]


def _results(families=("convnet",), depths=(1, 3, 8), residual=(False, True), seeds=(0, 1)):
    out = []
    for fam in families:
        for d in depths:
            for res in residual:
                for s in seeds:
                    cfg = RunConfig.build({"name": "cifar10"}, {"family": fam, "depth": d, "width": 4, "residual": res},
                                          {"epochs": 4}, seed=s)
                    out.append(RunResult(cfg, _history(seed=s), {"accuracy": 0.3}, n_params=10, seconds=1.0,
                                         device="cpu", data_source="synthetic"))
    return out


def _table(results):
    return pd.DataFrame([{"study": r.config.model.family, **r.summary()} for r in results])


def _layers(n=30):
    return pd.DataFrame([{"param": f"stages.{i}.conv.weight", "depth": i, "norm": 10.0 ** (-i / 5) * (1 + b),
                          "batch": b, "seed": 0, "epoch": e} for i in range(n) for b in range(3) for e in range(3)])


FIGURES = {
    "training_curves": lambda: plots.training_curves([_history(), _history(seed=1)], title="t"),
    "confusion": lambda: plots.confusion(np.eye(10, dtype=int) * 5 + 1, [f"class{i}" for i in range(10)]),
    "misclassified": lambda: plots.misclassified(torch.zeros(30, 1, 8, 8, dtype=torch.uint8), [0] * 30, [1] * 30,
                                                 ["airplane", "automobile"]),
    "compare_curves": lambda: plots.compare_curves({"a": [_history()], "b": [_history(seed=2)]}),
    "depth_study": lambda: plots.depth_study(_results(residual=(False,))),
    "twins": lambda: plots.twins(_results(depths=(1, 3, 8, 20, 56))),
    "versus_depth": lambda: plots.versus_depth(_table(_results(families=("mlp", "convnet", "vgg", "lab_cnn", "resnet"),
                                                                depths=(1,)) + _results())),
    "training_error": lambda: plots.training_error(_results(depths=(20, 56))),
    "grad_boxes": lambda: gradient_plots.grad_boxes({"plain": _layers(120), "residual": _layers(120)}),
    "grad_vs_depth": lambda: gradient_plots.grad_vs_depth({"plain, init": _layers(), "residual, init": _layers()}),
    "flow_by_model": lambda: gradient_plots.flow_by_model({m: pd.concat([_layers(n).assign(state=st, position=_layers(n).depth / (n - 1))
                                                                for st in ("initialisation", "after training")])
                                                  for m, n in (("VGG16", 16), ("VGG24", 24), ("ResNet18", 18))}),
    "gradient_flow": lambda: gradient_plots.gradient_flow(pd.DataFrame({"layer": [f"layer.{i}" for i in range(60)],
                                                               "mean_abs": np.linspace(1e-3, 1, 60),
                                                               "max_abs": np.linspace(1e-2, 2, 60)})),
    "filter_grads": lambda: gradient_plots.filter_grads({f"m{i}": torch.randn(8, 3, 3, 3) for i in range(6)}),
    "layer_epoch": lambda: gradient_plots.layer_epoch({"plain": _layers(40), "residual": _layers(40)}),
}


@pytest.mark.parametrize("name", FIGURES)
def test_figures_fit_the_page_with_readable_labels_and_no_offsets(name):
    fig = FIGURES[name]()
    assert fig.get_size_inches()[0] <= plots.MAX_WIDTH + 1e-9, "wider than a report page"
    fig.canvas.draw()  # tick labels exist only after a draw
    for ax in fig.axes:
        for label in ax.get_xticklabels() + ax.get_yticklabels():
            if label.get_visible() and label.get_text():
                assert label.get_fontsize() >= BODY_PT, f"{name}: tick {label.get_text()!r} at {label.get_fontsize()} pt"
        for axis in (ax.xaxis, ax.yaxis):
            assert not axis.get_offset_text().get_text(), f"{name}: offset notation {axis.get_offset_text().get_text()!r}"
    plotted = [ax for ax in fig.axes if (ax.lines or ax.collections or ax.images or ax.patches)
               and ax.get_label() != "<colorbar>"]
    assert plotted and all(ax.get_xlabel() or ax.get_title() for ax in plotted), f"{name}: unlabelled panel"


def _chance_levels(fig):
    return {round(line.get_ydata()[0], 4) for ax in fig.axes for line in ax.lines if line.get_label() == "chance"}


@pytest.mark.parametrize("name, levels", [
    ("depth_study", {round(math.log(10), 4), 0.1}),
    ("twins", {round(math.log(10), 4), 0.1}),
    ("versus_depth", {0.1}),
    ("training_error", {0.9}),
])
def test_chance_lines_where_the_text_points_to_them(name, levels):
    assert _chance_levels(FIGURES[name]()) == levels


def test_single_depth_panels_label_only_that_depth():
    fig = plots.versus_depth(_table(_results(families=("lab_cnn",), depths=(3,), residual=(False,))))
    fig.canvas.draw()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["3"]


def test_he_figure_names_its_line_styles():
    fig = FIGURES["training_error"]()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"training", "validation", "20 layers", "56 layers"} <= set(labels)


def test_an_axis_of_a_constant_metric_reads_plainly_and_every_box_is_labelled():
    import numpy as np
    import pandas as pd

    from labcore.analysis import gradient_plots, plots

    flat = [[{"epoch": e, "train_loss": 2.3, "val_loss": 2.3, "train_acc": 0.106, "val_acc": 0.106}
             for e in range(1, 4)]]
    fig = plots.training_curves(flat, title="at chance")
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        assert hi - lo > 1e-3, "a constant metric gets a readable range"
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert all(len(t.replace("\u2212", "-")) <= 6 for t in labels), labels
    params = [f"stages.0.{b}.conv.{w}" for b in range(30) for w in ("weight", "bias")]
    tables = {"plain": pd.DataFrame([{"param": p, "norm": float(10 ** np.random.uniform(-9, 0))} for p in params
                                     for _ in range(3)])}
    fig = gradient_plots.grad_boxes(tables)
    shown = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
    assert shown == [gradient_plots.short_param(p) for p in params] and shown[0] == "s0.0.w", "every box, in order"
    assert len(fig.axes) == 2, "60 parameters over two rows of 30"
    lab = {"lab CNN": pd.DataFrame([{"param": p, "norm": 1e-3} for p in ("stem.0.weight", "stem.0.bias", "head.weight")
                                    for _ in range(3)]),
           "lab ResNetCNN": pd.DataFrame([{"param": p, "norm": 1e-3} for p in ("stem.0.weight", "head.weight")
                                          for _ in range(3)])}
    fig = gradient_plots.grad_boxes(lab)
    assert fig.axes[0].get_xlim() == (-1, 3), "the fullest panel fills its width, not a 45-box row"
    caption = fig._supxlabel.get_text()
    assert caption == "parameter, input to output (w: weight, b: bias)", "only the abbreviations these names use"
    assert gradient_plots.glossary(params) == "w: weight, b: bias; s: stage, then numbers"
    assert plots.sci_text(3.78e-10) == "3.8\u00d710\u207b\u00b9\u2070" and plots.sci_text(0.0433) == "0.043"


@pytest.mark.parametrize("first, log", [(15.0, False), (21.0, True), (100.0, True)])
def test_a_panel_with_one_diverged_epoch_goes_log_and_says_so(first, log):
    """A validation loss of 100 at epoch 1, then about 2.5 (ResNet-56 plain in the quick build): on a linear axis
    every other curve is a flat line at the bottom. Beyond a 30-fold span (the lowest curve ends at 0.675 here: 15
    is 22-fold, 21 is 31-fold) the panel is log-scaled and its title says so; the other panels are untouched."""
    results = _results(depths=(20, 56), residual=(False,))
    for r in results:
        if r.config.model.depth == 56:
            r.history[0]["val_loss"] = first
    fig = plots.depth_study(results, title="cifar_resnet")
    panels = {ax.get_title().removesuffix(" (log scale)"): ax for ax in fig.axes if ax.get_title()}
    assert (panels["validation loss"].get_yscale() == "log") == log
    assert panels["validation loss"].get_title().endswith("(log scale)") == log
    assert {panels[t].get_yscale() for t in ("training loss", "training accuracy", "validation accuracy")} == {"linear"}


def test_a_panel_whose_curves_all_sit_at_chance_says_so_in_its_title():
    """Fitted to 2.301-2.310, noise at chance reads as a steep fall: the title says every curve is at chance."""
    import matplotlib.pyplot as plt

    fig, (flat, learns, two) = plt.subplots(1, 3)
    flat.plot([1, 2, 3], [2.310, 2.305, 2.301])
    learns.plot([1, 2, 3], [2.30, 1.9, 1.5])
    two.plot([1, 2], [2.309, 2.302])  # smoke's two epochs: a curve, not a chance line
    for ax in (flat, learns, two):
        ax.set_title("training loss")
        plots.chance_line(ax, "train_loss")
        ax.axvline(2, linestyle="--")  # the best epoch's marker is not a curve either
    plots.readable_axes(fig)
    assert flat.get_title() == "training loss (every curve at the chance line)" == two.get_title()
    assert learns.get_title() == "training loss"
    plt.close(fig)
