"""Exercise 1.2, residual networks (notebook 03_residual): what do residual connections change? The depth studies
of 02 with residual twins, the lab's ResNetCNN and its cost, the ResNet/VGG ranking, He et al.'s comparison."""
from __future__ import annotations

from typing import Any

import pandas as pd

from labcore.analysis import claims, plots, reference, sweep
from labcore.store.runs import RunResult

NOTEBOOK = "03_residual"
LAB_RANKING = "ResNet34 > ResNet18 > VGG19 > VGG16 > VGG24"  # the ranking write-up's order (lab-reference.md)


# Every study x sweep x residual flag x seed, as 02 plans them: 02's plain runs (same keys) and their twins.
plan = sweep.plan_studies


def lab_twins(results: dict[str, list[RunResult]]) -> list[RunResult]:
    """The lab's ResNetCNN and its plain twin (same layers, no skips), at the lab's number of residual blocks."""
    depth = reference.LAB_SETTINGS["lab_resnet"]["model.depth"]
    return [r for r in results["lab_resnet"] if r.config.model.depth == depth]


def cost_table(runs_table: pd.DataFrame) -> pd.DataFrame:
    """Parameters, training seconds per run and accuracy of the lab's plain CNN and of the ResNetCNN with its plain
    twin, each at the lab's own depth (3 convolutions per block; 3 residual blocks)."""
    rows = [runs_table[(runs_table["study"] == study) & (runs_table["depth"] == reference.LAB_SETTINGS[study]["model.depth"])]
            for study in ("lab_cnn", "lab_resnet")]
    cost = sweep.aggregate(pd.concat(rows))
    return cost[["study", "residual", "n_params", "seconds", "val_acc_mean", "test_acc_mean"]].round(4)


def cost_sentence(cost: pd.DataFrame) -> str:
    """How many times the lab CNN's parameters and training time per run the ResNetCNN (the residual one) has.
    (Until 2026-11 this took max/min over all rows, so the plain twin could stand in for either model.)"""
    resnet = cost[(cost["study"] == "lab_resnet") & cost["residual"]]
    cnn = cost[(cost["study"] == "lab_cnn") & ~cost["residual"]]
    if resnet.empty or cnn.empty:
        return "The lab's plain CNN and its ResNetCNN were not both trained at the lab's depth, so their cost is not compared."
    r, c = resnet.iloc[0], cnn.iloc[0]
    return (f"The ResNetCNN has {r['n_params'] / c['n_params']:.1f}x the parameters of the lab's plain CNN "
            f"({int(r['n_params']):,} against {int(c['n_params']):,}) and took {r['seconds'] / c['seconds']:.1f}x its "
            f"training time per run here ({r['seconds']:.1f} s against {c['seconds']:.1f} s).")


def ranking_rows(runs_table: pd.DataFrame) -> pd.DataFrame:
    """The runs of the ranking's five models: VGG16/19/24 and the residual ResNet18/34."""
    return runs_table[(runs_table["study"] == "vgg") | ((runs_table["study"] == "resnet") & runs_table["residual"])]


def ranking_table(runs_table: pd.DataFrame) -> pd.DataFrame:
    """The five models ranked by mean validation accuracy, with the spread, test accuracy, training loss, size."""
    rank = sweep.ranking(ranking_rows(runs_table))
    rank.insert(0, "model", [sweep.model_name(f, d) for f, d in zip(rank["family"], rank["depth"])])
    return rank[["model", "val_acc_mean", "val_acc_std", "test_acc_mean", "train_loss_mean", "n_params", "seeds"]].round(4)


def ranking_curves(results: dict[str, list[RunResult]]) -> dict[str, list[list[dict]]]:
    """The five models' histories by name (VGG16, ..., ResNet34), for plots.compare_curves."""
    five = results["vgg"] + [r for r in results["resnet"] if r.config.model.residual]
    return plots.curves_by(five, lambda c: sweep.model_name(c.model.family, c.model.depth))


def ranking_sentence(runs_table: pd.DataFrame) -> str:
    """The five models' order by validation accuracy and by final training loss (tested over seeds), next to the
    lab's, and which of the lab's two VGG orders the runs support."""
    five = ranking_rows(runs_table)
    return (claims.orders_sentence([(sweep.by_model(five, "val_acc"), "validation accuracy", True),
                                    (sweep.by_model(five, "train_loss"), "final training loss", False)])
            + f" (The lab: {LAB_RANKING}.) " + claims.vgg_claims(sweep.study(runs_table, "vgg"), orders=False))


def summary(results: dict[str, list[RunResult]], runs_table: pd.DataFrame, lab_table: pd.DataFrame | None, device: str,
            tracking: str) -> dict[str, Any]:
    """What the report publishes (labcore.report.publish.publish(**summary)): metrics, provenance, headline, figure.
    What this build left out (no twins, `lab_table` None, no ranking study) leaves its metrics and lines out."""
    twins = sweep.with_twins(runs_table)
    seeds = sorted(set(runs_table["seed"]))
    metrics = {**sweep.run_metrics(runs_table), "reused_from_store": int(runs_table["cached"].sum())}
    headline = []
    if len(twins):
        trained = sweep.trainability(twins)
        metrics.update(
            not_trained_plain=int(trained[~trained["residual"]]["trained"].isin(["no", "failed"]).sum()),
            not_trained_residual=int(trained[trained["residual"]]["trained"].isin(["no", "failed"]).sum()))
        n_twins = int((~trained["residual"]).sum())
        headline += [("Plain configurations that did not train in any seed", f"{metrics['not_trained_plain']} of {n_twins}"),
                     ("Their residual twins that did not train in any seed",
                      f"{metrics['not_trained_residual']} of {n_twins}")]
    if lab_table is not None:
        lab = lab_table.drop_duplicates("metric").set_index("metric")
        metrics.update(lab_resnet_val_acc=lab.loc["val_acc", "measured (mean)"],
                       lab_resnet_train_loss=lab.loc["train_loss", "measured (mean)"],
                       lab_resnet_comparison=lab_table.to_dict(orient="records"))
        headline.append(reference.lab_headline("Lab ResNetCNN", lab_table))
    if len(ranking_rows(runs_table)):
        order = sweep.model_order(ranking_rows(runs_table))
        metrics["ranking"] = order
        headline.append(("Ranking by validation accuracy",
                         claims.order_words(order) + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else "")))
    return {"metrics": metrics, "headline": headline,
            "provenance": sweep.provenance_of(results, device, tracking),
            "figure": plots.versus_depth(twins if len(twins) else runs_table, "test_acc",
                                         title="Test accuracy: plain (red), residual (blue)")}
