"""Exercise 2 (notebook 04_gradient_flow): why residual networks train better, measured. It trains nothing of its
own: it probes the gradients of runs that 01 and 03 train (its UPSTREAM), and of the lab's two models at
initialisation, through labcore.core.probes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from labcore.analysis import gradient_plots, reference
from labcore.core import probes
from labcore.store import provenance, runs
from labcore.core.config import ConfigError, ModelConfig, RunConfig, from_dict
from labcore.core.data import Splits
from labcore.store.planned import Planned, every_epoch
from labcore.core.models import count_layers
from labcore.core.train import init_model
from labcore.exercises.params import check_probe
from labcore.store.runs import RunResult, RunStore
from labcore.analysis.sweep import distinct, model_name
from labcore.text import count, sci

NOTEBOOK = "04_gradient_flow"
UPSTREAM = ("01_mlp_baseline", "03_residual")  # 01's MLP; 03's ConvNet twins and the ranking's VGG/ResNet runs
MLP, RESIDUAL = UPSTREAM


def _deep_twins(study: list[Planned], name: str, depths: list[int]) -> dict[tuple[int, bool], list[Planned]]:
    """The plain and residual runs of `study` at `depths`, every seed, with weights after every epoch."""
    found: dict[tuple[int, bool], list[Planned]] = {}
    for p in study:
        found.setdefault((p.cfg.model.depth, p.cfg.model.residual), []).append(p)
    for d in depths:
        for res in (False, True):
            if (d, res) not in found:
                have = sorted({f"{dd} ({'residual' if r else 'plain'})" for dd, r in found})
                raise ConfigError(f"deep_depths: {RESIDUAL}'s study {name!r} has no {'residual' if res else 'plain'} "
                                  f"run at depth {d}; it has {', '.join(have)}. Add {d} to that study's sweep, or "
                                  "probe one of those")
    return {(d, res): [Planned(p.cfg, every_epoch(p.cfg), study=p.study) for p in found[(d, res)]]
            for d in depths for res in (False, True)}


def plan(deep_study: str | None, deep_depths: list[int], short_epochs: int, lab_plain_model: dict, lab_residual_model: dict,
         init_seeds: list[int], probe: dict, upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The runs it reads: 03's plain and residual twins of `deep_study` at `deep_depths` (given weights after every
    epoch, so they can be probed over training), 01's first MLP run and 03's VGG and ResNet ranking, all as 01 and
    03 plan them in the same profile. Also returned, never trained: the lab's two models at initialisation
    ('lab_pair', one config per init seed), on the twins' data, which is also where the probe's images come from."""
    if not init_seeds:
        raise ConfigError("init_seeds must name at least one value")
    distinct(init_seeds, "init_seeds")
    distinct(deep_depths, "deep_depths")
    mlp, residual = upstream[MLP], upstream[RESIDUAL]
    deep = {}
    if deep_study is not None:  # None: no twins (a profile of the lab's own runs); the page leaves their sections out
        if deep_study not in residual:
            raise ConfigError(f"deep_study: {RESIDUAL} has no study {deep_study!r}; its studies: {', '.join(residual)}")
        if not deep_depths:
            raise ConfigError("deep_depths must name at least one depth of deep_study (or set deep_study: null)")
        deep = _deep_twins(residual[deep_study], deep_study, deep_depths)
    # The twins' data (else 03's first run's): the probe's images and the lab pair's inputs.
    base = next(iter(deep.values()))[0].cfg if deep else next(p for ps in residual.values() for p in ps).cfg
    if deep and not 1 <= short_epochs <= base.train.epochs:
        raise ConfigError(f"short_epochs={short_epochs}: must be between 1 and the twins' {base.train.epochs} epochs")
    check_probe(probe, base.to_dict()["data"])
    lab_pair = {name: [RunConfig(base.data, from_dict(ModelConfig, model, f"lab_{name}_model"), base.train, s)
                       for s in init_seeds]
                for name, model in (("plain", lab_plain_model), ("residual", lab_residual_model))}
    ranking = residual.get("vgg", []) + [p for p in residual.get("resnet", []) if p.cfg.model.residual]
    return {"deep": deep, "mlp": mlp["runs"][:1], "ranking": ranking, "lab_pair": lab_pair}


@dataclass(frozen=True)
class Twins:
    """The deep ConvNet twins as probed here: their configs, shared settings and the probe's batches."""

    study: str | None  # the depth study of 03 they come from (None: no twins in this build)
    configs: dict[tuple[int, bool], list[RunConfig]]  # (depth, residual) -> one config per seed
    layers: dict[int, int]  # depth -> weight layers (convolutions and linear layers)
    epochs: int  # the twins' training epochs
    short_epochs: int  # the first heatmap's epoch
    seeds: list[int]
    splits: Splits  # the twins' data; the probe's images come from its training split
    batches: list  # the probe's (images, labels) batches

    @property
    def deepest(self) -> int:
        """The deepest depth probed (blocks per stage)."""
        return max(self.layers)

    def first(self, depth: int, residual: bool) -> RunConfig:
        """The first seed's config of one twin."""
        return self.configs[(depth, residual)][0]


def twins(planned: dict[str, Any], probe: dict, short_epochs: int) -> Twins:
    """The twins of a plan, with their weight-layer counts, data and the probe's batches (no twins where the plan
    has none: then the data, and so the probe's images, are the lab pair's)."""
    configs = {key: [p.cfg for p in ps] for key, ps in planned["deep"].items() if ps}
    # The twins share their data and training settings; without twins the lab pair's data.
    base = next(iter(configs.values()))[0] if configs else planned["lab_pair"]["plain"][0]
    splits = runs.load_splits(base.data)
    depths = sorted({d for d, _ in configs})
    study = next(ps for ps in planned["deep"].values() if ps)[0].study if configs else None
    return Twins(study, configs, {d: count_layers(init_model(configs[(d, False)][0])) for d in depths},
                 base.train.epochs, short_epochs, sorted({c.seed for cs in configs.values() for c in cs}), splits,
                 probes.probe_batches(splits, probe["batches"], probe["batch_size"], probe["seed"]))


def setup_sentence(tw: Twins, probe: dict) -> str:
    """What is probed: the batches, the twins' depths in weight layers, epochs and seeds."""
    depths = sorted(tw.layers)
    probe_line = f"Probe: {len(tw.batches)} batches of {probe['batch_size']} training images from {tw.splits.source}."
    if not depths:
        return probe_line + " No deep twins in this build: the sections about them are left out."
    return (f"{probe_line} "
            f"Twins: {RESIDUAL}'s study {tw.study!r}, depths {', '.join(map(str, depths))} (blocks per stage), that is "
            f"{', '.join(str(tw.layers[d]) for d in depths)} weight layers (3 x (depth + 1) convolutions and one "
            f"linear layer), {tw.epochs} epochs, seeds {tw.seeds}. The lab's third write-up speaks of 20 and 40 "
            "layers, which this family cannot give exactly with equal stages (20 would be 22 here).")


def name(tw: Twins, residual: bool | None = None) -> str:
    """'ConvNet-40' for the deepest twins, or with the variant: 'ConvNet-40 plain', 'ConvNet-40 residual'."""
    variant = "" if residual is None else " residual" if residual else " plain"
    return f"ConvNet-{tw.layers[tw.deepest]}{variant}"


def title(tw: Twins, what: str) -> str:
    """A figure title about the deepest twins' first seed, e.g. 'ConvNet-40: per-layer gradient norm (seed 0)'."""
    return f"ConvNet-{tw.layers[tw.deepest]}: {what} (seed {tw.seeds[0]})"


def init_gradients(planned: dict[str, Any], tw: Twins, device: torch.device) -> dict[str, dict[str, pd.DataFrame]]:
    """Per-parameter gradient norms at initialisation ('lab': the lab's pair; 'twins': the deepest ConvNets)."""
    pair = planned["lab_pair"]
    return {"lab": {"lab CNN (plain)": probes.at_init(pair["plain"], tw.batches, device),
                    "lab ResNetCNN": probes.at_init(pair["residual"], tw.batches, device)},
            "twins": {name(tw, res): probes.at_init(tw.configs[(tw.deepest, res)], tw.batches, device)
                      for res in (False, True)} if tw.layers else {}}


def gradient_stats(init: dict[str, dict[str, pd.DataFrame]]) -> pd.DataFrame:
    """The lab's statistic per model (mean and standard deviation over all per-parameter norms), and how much the
    gradient shrinks from the last layer to the first."""
    tables = {**init["lab"], **init["twins"]}
    return pd.DataFrame({n: {**probes.summary(t), "attenuation (last/first layer)": probes.attenuation(probes.layer_norms(t))}
                         for n, t in tables.items()}).T


def lab_comparison(init: dict[str, dict[str, pd.DataFrame]], planned: dict[str, Any]) -> pd.DataFrame:
    """The lab pair's mean and standard deviation per initialisation against the lab's numbers (only the models'
    settings are compared: these are untrained)."""
    frames = []
    for experiment, label, kind, shown in (("grad_lab_cnn", "lab CNN (plain)", "plain", "lab CNN"),
                                           ("grad_lab_resnet", "lab ResNetCNN", "residual", "lab ResNetCNN")):
        t = init["lab"][label]
        per_seed = [probes.summary(t[t["seed"] == s]) for s in sorted(set(t["seed"]))]
        measured = {k: [s[k] for s in per_seed] for k in ("mean", "std")}
        frames.append(reference.compare(experiment, measured, cfg=planned["lab_pair"][kind][0], only=("model.",))
                      .assign(model=shown))
    out = pd.concat(frames)
    out.attrs["reason"] = frames[0].attrs.get("reason")  # pd.concat drops attrs; both models share one reason
    return out


def lab_models_sentence(planned: dict[str, Any], tw: Twins, probe: dict) -> str:
    """Whether the probed pair is the lab's gradient run's, and how the probe compares with the lab's."""
    residual = planned["lab_pair"]["residual"]
    return ("Models as in the lab's gradient run? " + reference.caveat("lab_resnet", residual[0], only=("model.",))
            + f" Probe: {len(tw.batches)} batches of {probe['batch_size']} (the lab: 11 of 128), "
            f"{count(len(residual), 'initialisation')}.")


def lab_ratio(stats: pd.DataFrame) -> float:
    """The ResNetCNN's mean gradient norm over the plain CNN's, at initialisation."""
    return float(stats.loc["lab ResNetCNN", "mean"] / stats.loc["lab CNN (plain)", "mean"])


def lab_ratio_sentence(stats: pd.DataFrame) -> str:
    """Our ratio of mean gradient norms next to the lab's."""
    plain, res = reference.lab_value("grad_lab_cnn", "mean"), reference.lab_value("grad_lab_resnet", "mean")
    return (f"The ResNetCNN's mean gradient norm is **{lab_ratio(stats):.1f}x** the plain CNN's (the lab measured "
            f"{res / plain:.1f}x: {res} against {plain}).")


def fetch_twins(planned: dict[str, Any], device: torch.device, tracking: str, profile: str | None,
                train_missing: bool | None = None) -> dict[tuple[int, bool], list[RunResult]]:
    """The twins' runs from the store (trained now, with every epoch's weights, if 03 has not trained them and
    `train_missing` allows it: labcore.store.runs.fetch)."""
    return {key: runs.fetch(ps, device=device, tracking=tracking, notebook=NOTEBOOK, profile=profile,
                            train_missing=train_missing) for key, ps in planned["deep"].items()}


def depth_curves(store: RunStore, tw: Twins, device: torch.device) -> dict[str, pd.DataFrame]:
    """Per-layer gradient norms of the deepest twins (first seed), at initialisation and after training."""
    return {f"{'residual' if res else 'plain'}, {when}":
            probes.layer_norms(probes.over_training(store, tw.first(tw.deepest, res), [epoch], tw.batches, device))
            for res in (False, True) for epoch, when in ((0, "init"), (tw.epochs, f"after {tw.epochs} epochs"))}


def shrinkage_sentence(curves: dict[str, pd.DataFrame]) -> str:
    """The last-over-first gradient ratio of every curve of `depth_curves`."""
    return ("Gradient at the last layer divided by the gradient at the first (how much it shrinks on the way back): "
            + "; ".join(f"{k}: **{sci(probes.attenuation(t), 3)}x**" for k, t in curves.items()) + ".")


def twins_table(trained: dict[tuple[int, bool], list[RunResult]], tw: Twins) -> pd.DataFrame:
    """Final training loss and validation accuracy of every twin (mean over seeds)."""
    return pd.DataFrame([{"depth (blocks per stage)": d, "weight layers": tw.layers[d],
                          "variant": "residual" if res else "plain",
                          "final train loss": sum(r.final("train_loss") for r in rs) / len(rs),
                          "final val acc": sum(r.final("val_acc") for r in rs) / len(rs), "seeds": len(rs)}
                         for (d, res), rs in trained.items()]).round(4)


def first_conv_gradients(store: RunStore, tw: Twins, device: torch.device) -> dict[tuple[int, bool, int], torch.Tensor]:
    """The first convolution's filter gradients, {(weight layers, residual, epoch): [out, in, k, k]}, for every twin
    (first seed) after `short_epochs` and after all its epochs."""
    return {(tw.layers[d], res, e): probes.first_conv_gradient(store.load_model(tw.first(d, res), epoch=e).to(device),
                                                                tw.batches)
            for d in sorted(tw.layers) for res in (False, True) for e in (tw.short_epochs, tw.epochs)}


def first_conv_labelled(grads: dict[tuple[int, bool, int], torch.Tensor]) -> dict[str, torch.Tensor]:
    """`first_conv_gradients` keyed by readable labels, for gradient_plots.filter_grads."""
    return {f"{n} layers, {'residual' if res else 'plain'}, epoch {e}": g for (n, res, e), g in grads.items()}


def first_conv_table(grads: dict[tuple[int, bool, int], torch.Tensor]) -> pd.DataFrame:
    """The norm of each first-convolution gradient, and residual over plain at the same depth and epoch."""
    rows = [{"weight layers": n, "epoch": e, "plain": float(grads[(n, False, e)].norm()),
             "residual": float(grads[(n, True, e)].norm())} for (n, res, e) in grads if not res]
    table = pd.DataFrame(rows)
    return table.assign(**{"residual / plain": table["residual"] / table["plain"]})


def first_conv_norms(table: pd.DataFrame) -> dict[str, float]:
    """Each first-convolution gradient norm of `first_conv_table`, keyed '<n> layers, <variant>, epoch <e>'."""
    return {f"{r['weight layers']} layers, {variant}, epoch {r['epoch']}": r[variant]
            for r in table.to_dict(orient="records") for variant in ("plain", "residual")}


def first_conv_sentence(table: pd.DataFrame) -> str:
    """Residual over plain first-convolution gradient norm, by depth and epoch."""
    return "; ".join(f"at {r['weight layers']} layers, epoch {r['epoch']}: residual/plain = **{sci(r['residual / plain'], 3)}x**"
                     for r in table.to_dict(orient="records")) + "."


def layer_epochs(store: RunStore, tw: Twins, probe: dict, device: torch.device) -> dict[str, pd.DataFrame]:
    """Per-layer gradient norms of the deepest twins (first seed) at every epoch, on the first
    `over_training_batches` probe batches."""
    few = tw.batches[: probe["over_training_batches"]]
    return {f"{'residual' if res else 'plain'} ConvNet-{tw.layers[tw.deepest]}":
            probes.layer_norms(probes.over_training(store, tw.first(tw.deepest, res), list(range(tw.epochs + 1)), few,
                                                    device))
            for res in (False, True)}


def by_epoch_sentence(evolution: dict[str, pd.DataFrame], probe: dict, tw: Twins) -> str:
    """The last-over-first ratio epoch by epoch for each model of `layer_epochs`, and on which probe batches: fewer
    than `depth_curves` uses, so its first and last values are not Section 2's (a ratio moves with the batches)."""
    few, every = min(probe["over_training_batches"], len(tw.batches)), len(tw.batches)
    batches = (f"on the first {few} of the {every} probe batches (Section 2 measured initialisation and the end of "
               "training on all of them, so its ratios there differ from these)" if few < every
               else f"on the same {count(every, 'probe batch', 'probe batches')} as Section 2")
    return (f"Last-layer over first-layer gradient, epoch by epoch, {batches}: " + "; ".join(
        f"**{n}**: " + ", ".join(f"{sci(a, 3)}x" for a in probes.attenuation_by_epoch(t).values())
        for n, t in evolution.items()) + ". Rows near the input whose colour stays dark are layers that receive "
        "almost no gradient, and so barely change while the rest of the network trains.")


def mlp_run_sentence(mlp_run: RunResult) -> str:
    """Whether 01's MLP run was read from the run store (as it should be) or trained by this notebook."""
    return f"MLP run {mlp_run.key}: {'loaded from the run store' if mlp_run.cached else 'trained now'}."


def mlp_gradients(store: RunStore, mlp_run: RunResult, probe: dict, device: torch.device) -> pd.DataFrame:
    """Per-parameter gradient norms of 01's MLP at every stored epoch, on probe batches from its own data."""
    batches = probes.probe_batches(runs.load_splits(mlp_run.config.data), probe["batches"], probe["batch_size"],
                                   probe["seed"])
    return probes.over_training(store, mlp_run.config, every_epoch(mlp_run.config), batches, device)


def mlp_flow_figures(grads: pd.DataFrame) -> list:
    """The classic gradient-flow plot of the MLP at initialisation, halfway and at the end of training."""
    epochs = sorted(set(grads["epoch"]))
    return [gradient_plots.gradient_flow(probes.flow(grads[grads["epoch"] == e]), title=f"MLP on MNIST: gradient flow at epoch {e}")
            for e in sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})]


def mlp_sentence(layers: pd.DataFrame, mlp_run: RunResult) -> str:
    """The MLP's last-over-first ratio at every epoch, and its final validation accuracy."""
    return ("Last-layer over first-layer gradient of the MLP: " + ", ".join(
        f"epoch {e}: {sci(a, 3)}x" for e, a in probes.attenuation_by_epoch(layers).items())
        + f". Final validation accuracy {mlp_run.final('val_acc'):.3f}.")


def ranking_flows(store: RunStore, ranking: list[RunResult], probe: dict, device: torch.device) -> dict[str, pd.DataFrame]:
    """Per-layer gradient norms before and after training (probes.before_after) of each ranking model's first seed."""
    batches = probes.probe_batches(runs.load_splits(ranking[0].config.data), probe["batches"], probe["batch_size"],
                                   probe["seed"])
    first = min(r.config.seed for r in ranking)
    return {model_name(r.config.model.family, r.config.model.depth): probes.before_after(store, r.config, batches, device)
            for r in ranking if r.ok and r.config.seed == first}


def ranking_flow_table(flows: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Weight layers and the last-over-first ratio at initialisation and after training, per ranking model."""
    return pd.DataFrame([{"model": n, "weight layers": t["layer"].nunique(),
                          "last/first at initialisation": probes.attenuation(t[t["state"] == "initialisation"]),
                          "last/first after training": probes.attenuation(t[t["state"] == "after training"])}
                         for n, t in flows.items()])


def attenuation_sentence(table: pd.DataFrame, family: str = "VGG") -> str:
    """What the last/first ratios of one family's models (rows 'model', 'weight layers', 'last/first at
    initialisation', 'last/first after training') show about depth. A trend is named only when every step in
    depth goes the same way, and the sentence says these are single initialisations, not a test over seeds."""
    sub = table[table["model"].str.startswith(family)].sort_values("weight layers")
    if len(sub) < 2:
        return f"Fewer than two {family} models were probed, so their depths cannot be compared."
    parts, columns = [], ("last/first at initialisation", "last/first after training")
    for column, when in zip(columns, ("At initialisation", "After training")):
        vals = list(sub[column])
        trend = ("grows with every step in depth" if all(b > a for a, b in zip(vals, vals[1:])) else
                 "falls with every step in depth" if all(b < a for a, b in zip(vals, vals[1:])) else
                 "does not move in one direction with depth")
        parts.append(f"{when}, the last layer's gradient is " + ", ".join(
            f"{sci(v, 3)}x ({m})" for v, m in zip(vals, sub["model"])) + f" the first layer's: the ratio {trend}")
    deepest = sub.iloc[-1]
    if (sub[list(columns)] <= 1).all().all():
        verdict = (f"Every ratio is at most 1: the input layers of these {family} networks receive at least as much "
                   f"gradient as their last layer, before and after training, so these measurements do not support a "
                   f"gradient vanishing on its way back to the input as the reason a deeper {family} would train worse")
    elif all(deepest[c] > 1 and (sub[c].iloc[:-1] < deepest[c]).all() for c in columns):
        verdict = (f"The deepest, {deepest['model']}, passes the least gradient back to its input layers, before and "
                   "after training, as the vanishing-gradient explanation expects")
    else:
        verdict = (f"These ratios neither show the deepest {family} starving its input layers of gradient nor rule it "
                   "out")
    return ". ".join(parts) + (f". A larger ratio means less gradient reaches the input layers. {verdict}. One "
                               "initialisation per model: this describes these networks, not a test over seeds.")


def summary(stats: pd.DataFrame, grad_compare: pd.DataFrame, tw: Twins, init: dict[str, dict[str, pd.DataFrame]],
            init_seeds: list[int], probe: dict, device: str, tracking: str, curves: dict[str, pd.DataFrame] | None = None,
            first_conv_table: pd.DataFrame | None = None, mlp_layers: pd.DataFrame | None = None,
            trained: dict[tuple[int, bool], list[RunResult]] | None = None, mlp_run: RunResult | None = None
            ) -> dict[str, Any]:
    """What the report publishes (labcore.report.publish.publish(**summary)): metrics, provenance, headline, figure.
    The sections this build left out (no deep twins, no MLP) leave their metrics and lines out (None)."""
    lab = reference.lab_value("grad_lab_resnet", "mean") / reference.lab_value("grad_lab_cnn", "mean")
    metrics = {"lab_cnn_grad_mean": stats.loc["lab CNN (plain)", "mean"], "lab_cnn_grad_std": stats.loc["lab CNN (plain)", "std"],
               "lab_resnet_grad_mean": stats.loc["lab ResNetCNN", "mean"],
               "lab_resnet_grad_std": stats.loc["lab ResNetCNN", "std"],
               "gradient_stats": stats.reset_index(names="model").to_dict(orient="records"),
               "lab_comparison": grad_compare.to_dict(orient="records")}
    headline = [("Lab ResNetCNN / plain CNN mean gradient norm at initialisation", f"{lab_ratio(stats):.1f}x (lab: {lab:.1f}x)")]
    figure = gradient_plots.grad_boxes(init["lab"], title="The lab's pair at initialisation")
    if curves is not None and first_conv_table is not None:
        deep_metrics, deep_lines = _deep_summary(tw, curves, first_conv_table)
        metrics.update(deep_metrics)
        headline += deep_lines
        figure = gradient_plots.grad_vs_depth(curves, title=f"ConvNet-{tw.layers[tw.deepest]}: gradient norm by layer")
    if mlp_layers is not None:
        metrics["mlp_attenuation_final"] = list(probes.attenuation_by_epoch(mlp_layers).values())[-1]
    probed = [r for rs in (trained or {}).values() for r in rs] + ([mlp_run] if mlp_run is not None else [])
    return {"metrics": metrics, "headline": headline,
            "provenance": provenance.of_runs(probed, device, tracking, seeds=tw.seeds, init_seeds=init_seeds, probe=probe),
            "figure": figure}


def _deep_summary(tw: Twins, curves: dict[str, pd.DataFrame], first_conv: pd.DataFrame
                  ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The deep twins' metrics and headline lines: shrinkage from the last layer to the first, first-conv ratio."""
    atten = {k: probes.attenuation(t) for k, t in curves.items()}
    after = f"after {tw.epochs} epochs"
    deepest = tw.layers[tw.deepest]
    final = first_conv[(first_conv["weight layers"] == deepest) & (first_conv["epoch"] == tw.epochs)]
    metrics = {"deep_layers": deepest, **{f"attenuation_{k.replace(', ', '_').replace(' ', '_')}": v
                                          for k, v in atten.items()},
               "first_conv_norms": first_conv_norms(first_conv)}
    return metrics, [
        (f"Gradient shrinkage, last / first layer, ConvNet-{deepest} {after}",
         f"plain {sci(atten['plain, ' + after], 3)}x, residual {sci(atten['residual, ' + after], 3)}x"),
        (f"First-convolution gradient, residual / plain, {deepest} layers, epoch {tw.epochs}",
         f"{sci(final['residual / plain'].iloc[0], 3)}x"),
    ]
