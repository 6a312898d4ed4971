"""Exercise 1.2, plain networks (notebook 02_cnn_depth): do deeper plain networks train better? Depth studies of
several families on CIFAR-10, the lab's CNN, the VGG order and He et al.'s plain networks."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from labcore.analysis import claims, plots, reference, sweep
from labcore.store.runs import RunResult

NOTEBOOK = "02_cnn_depth"


# Every study x sweep x residual flag x seed; 03 plans the same studies with their residual twins, by the same function.
plan = sweep.plan_studies


def vgg_table(runs_table: pd.DataFrame) -> pd.DataFrame:
    """VGG16/19/24 ranked by mean validation accuracy, with the spread and the final training loss."""
    rank = sweep.ranking(runs_table, study="vgg")
    return rank[["family", "depth", "val_acc_mean", "val_acc_std", "test_acc_mean", "train_loss_mean", "seeds"]].round(4)


def precision_runs(results: dict[str, list[RunResult]]) -> dict[str, list[RunResult]]:
    """The lab CNN's runs at the lab's depth (studies lab_cnn and lab_cnn_fp32) by the precision they trained in."""
    out: dict[str, list[RunResult]] = {}
    for r in sweep.at_lab_depth(results.get("lab_cnn", []) + results.get("lab_cnn_fp32", []), "lab_cnn"):
        out.setdefault({"bf16": "bf16 autocast"}.get(r.precision, r.precision), []).append(r)
    return out


def precision_table(results: dict[str, list[RunResult]]) -> pd.DataFrame:
    """Per precision: seeds, final training loss, validation and test accuracy (mean and standard deviation over
    seeds) and training seconds per run."""
    rows = []
    for name, rs in precision_runs(results).items():
        row: dict[str, Any] = {"precision": name, "seeds": len(rs)}
        for metric, values in (("train loss", [r.final("train_loss") for r in rs]),
                               ("val acc", [r.final("val_acc") for r in rs]),
                               ("test acc", [r.test.get("accuracy", float("nan")) for r in rs])):
            row[f"{metric} (mean)"], row[f"{metric} (std)"] = float(np.mean(values)), float(np.std(values, ddof=1)) \
                if len(values) > 1 else float("nan")
        row["seconds per run"] = float(np.mean([r.seconds for r in rs]))
        rows.append(row)
    return pd.DataFrame(rows)


def precision_sentence(results: dict[str, list[RunResult]]) -> str:
    """Whether the precision changed the lab CNN's accuracies: a Welch test over seeds, and the size of the
    difference against the tolerance the lab comparison allows (reference.TOLERANCE)."""
    groups = precision_runs(results)
    if len(groups) != 2:
        return ("All of the lab CNN's runs here trained in " + ", ".join(groups) + ", so precisions cannot be "
                "compared on this machine's runs.") if groups else "No run of the lab CNN at the lab's depth."
    (a, ra), (b, rb) = groups.items()
    tol, parts, same = reference.TOLERANCE["acc"], [], True
    for metric, get in (("validation accuracy", lambda r: r.final("val_acc")),
                        ("test accuracy", lambda r: r.test.get("accuracy", float("nan")))):
        c = claims.compare([get(r) for r in ra], [get(r) for r in rb], a, b)
        close = abs(c.mean_a - c.mean_b) <= tol
        same &= c.verdict == "indistinguishable" and close
        p = f", Welch p = {c.p:.2f}" if c.p is not None else ""
        parts.append(f"{metric} {c.mean_a:.3f} ({a}) against {c.mean_b:.3f} ({b}), {c.n_a} and {c.n_b} seeds{p}")
    verdict = (f"The two precisions cannot be told apart over these seeds and their means differ by less than {tol}, "
               "the tolerance of the comparison with the lab: bfloat16 changes no conclusion of this page."
               if same else "The two precisions differ beyond seed noise or beyond the lab comparison's tolerance: "
               "read this page's numbers with the precision each run records.")
    return "; ".join(parts) + ". " + verdict


def summary(results: dict[str, list[RunResult]], runs_table: pd.DataFrame, trained: pd.DataFrame,
            lab_table: pd.DataFrame | None, device: str, tracking: str) -> dict[str, Any]:
    """What the report publishes (labcore.report.publish.publish(**summary)): metrics, provenance, headline, figure.
    A section this build left out (`lab_table` None, no VGG study) leaves its metrics and lines out."""
    seeds = sorted(set(runs_table["seed"]))
    metrics = {**sweep.run_metrics(runs_table), "configurations": len(trained),
               "not_trained": int(trained["trained"].isin(["no", "failed"]).sum()),
               "partly_trained": int((trained["trained"] == "partly").sum())}
    partly = f" ({metrics['partly_trained']} more in some seeds only)" if metrics["partly_trained"] else ""
    headline = [("Configurations that did not train in any seed", f"{metrics['not_trained']} of {len(trained)}{partly}")]
    if lab_table is not None:
        lab = lab_table.drop_duplicates("metric").set_index("metric")  # the lab's own claim first, then the replica's
        metrics.update(lab_cnn_val_acc=lab.loc["val_acc", "measured (mean)"],
                       lab_cnn_train_loss=lab.loc["train_loss", "measured (mean)"],
                       lab_cnn_comparison=lab_table.to_dict(orient="records"))
        headline.append(reference.lab_headline("Lab CNN", lab_table))
    if "vgg" in results:
        order = sweep.model_order(sweep.study(runs_table, "vgg"))
        metrics["vgg_order"] = order
        headline.append(("VGG order by validation accuracy",
                         claims.order_words(order) + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else "")))
    return {"metrics": metrics, "headline": headline,
            "provenance": sweep.provenance_of(results, device, tracking),
            "figure": plots.versus_depth(runs_table, "test_acc", title="Test accuracy against depth")}
