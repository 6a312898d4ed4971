"""Exercise 1.2, plain networks (notebook 02_cnn_depth): do deeper plain networks train better? Depth studies of
several families on CIFAR-10, the lab's CNN, the VGG order and He et al.'s plain networks."""
from __future__ import annotations

from typing import Any

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


def summary(results: dict[str, list[RunResult]], runs_table: pd.DataFrame, trained: pd.DataFrame,
            lab_table: pd.DataFrame, device: str, tracking: str) -> dict[str, Any]:
    """What the report publishes (labcore.report.publish.publish(**summary)): metrics, provenance, headline, figure."""
    lab = lab_table.drop_duplicates("metric").set_index("metric")  # the lab's own claim first, then the replica's
    seeds = sorted(set(runs_table["seed"]))
    order = sweep.model_order(sweep.study(runs_table, "vgg"))
    metrics = {**sweep.run_metrics(runs_table), "configurations": len(trained),
               "not_trained": int(trained["trained"].isin(["no", "failed"]).sum()),
               "partly_trained": int((trained["trained"] == "partly").sum()),
               "lab_cnn_val_acc": lab.loc["val_acc", "measured (mean)"],
               "lab_cnn_train_loss": lab.loc["train_loss", "measured (mean)"], "vgg_order": order,
               "lab_cnn_comparison": lab_table.to_dict(orient="records")}
    partly = f" ({metrics['partly_trained']} more in some seeds only)" if metrics["partly_trained"] else ""
    headline = [
        ("Configurations that did not train in any seed", f"{metrics['not_trained']} of {len(trained)}{partly}"),
        reference.lab_headline("Lab CNN", lab_table),
        ("VGG order by validation accuracy", claims.order_words(order) + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else "")),
    ]
    return {"metrics": metrics, "headline": headline,
            "provenance": sweep.provenance_of(results, device, tracking),
            "figure": plots.versus_depth(runs_table, "test_acc", title="Test accuracy against depth")}
