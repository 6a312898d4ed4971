"""The lab's reported numbers (shared/lab-reference.md) and comparisons of our measurements with them.

These are the lab's claims, kept as data so every report can put its own measurements next to
them; nothing here is ever used as a result.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# (metric, value, what the lab wrote); "replica" rows are a re-run of the lab's loop on the mirrored data.
LAB: dict[str, list[tuple[str, float, str]]] = {
    "mlp_mnist": [
        ("train_loss", 0.25, "lab: average training loss about 0.25 after 15 epochs"),
        ("val_acc", 0.92, "lab: validation accuracy about 0.92 after 15 epochs"),
        ("val_acc", 0.920, "replica on the mirrored data: validation 0.920"),
        ("test_acc", 0.917, "replica on the mirrored data: test 0.917"),
    ],
    "lab_cnn": [
        ("train_loss", 1.31, "lab: training loss about 1.31 after 10 epochs"),
        ("val_acc", 0.56, "lab: validation accuracy about 0.56 after 10 epochs"),
        ("train_loss", 1.25, "replica on the mirrored data: training loss 1.25"),
        ("val_acc", 0.556, "replica on the mirrored data: validation 0.556"),
        ("test_acc", 0.530, "replica on the mirrored data: test 0.530"),
    ],
    "lab_resnet": [
        ("train_loss", 0.75, "lab: training loss about 0.75 after 10 epochs"),
        ("val_acc", 0.70, "lab: validation accuracy about 0.70 after 10 epochs"),
    ],
    "grad_lab_cnn": [("mean", 0.011, "lab: plain CNN (kernel 4) gradient-norm mean"),
                     ("std", 0.022, "lab: plain CNN (kernel 4) gradient-norm standard deviation")],
    "grad_lab_resnet": [("mean", 0.115, "lab: ResNetCNN gradient-norm mean"),
                        ("std", 0.095, "lab: ResNetCNN gradient-norm standard deviation")],
}

# How far a measurement may sit from a claim of "about X" and still agree with it:
# accuracies in absolute terms, losses and gradient statistics relative to the claim.
TOLERANCE = {"acc": 0.02, "loss": 0.15, "mean": 0.5, "std": 0.5}


def _tolerance(metric: str, value: float) -> float:
    kind = next((k for k in TOLERANCE if metric.endswith(k)), "loss")
    return TOLERANCE[kind] if kind == "acc" else TOLERANCE[kind] * abs(value)


def compare(experiment: str, measured: dict[str, Sequence[float]]) -> pd.DataFrame:
    """One row per lab claim: the claim, our mean and spread over seeds, the difference, and whether it agrees."""
    rows = []
    for metric, value, claim in LAB[experiment]:
        vals = np.asarray(measured.get(metric, []), dtype=float)
        if vals.size == 0:
            continue
        mean, std = float(vals.mean()), float(vals.std())
        tol = _tolerance(metric, value)
        rows.append({"metric": metric, "lab": value, "claim": claim, "measured (mean)": mean,
                     "measured (std)": std, "seeds": int(vals.size), "difference": mean - value,
                     "agrees": bool(abs(mean - value) <= tol + 2 * std)})
    return pd.DataFrame(rows)


def agreement_sentence(table: pd.DataFrame) -> str:
    """A one-paragraph reading of a `compare` table, for the report's markdown."""
    if table.empty:
        return "No measurement to compare with the lab's numbers."
    parts = []
    for _, r in table.iterrows():
        verb = "agrees with" if r["agrees"] else "differs from"
        spread = f" +- {r['measured (std)']:.3f}" if r["seeds"] > 1 else ""
        parts.append(f"{r['metric']} {r['measured (mean)']:.3f}{spread} {verb} {r['claim']} "
                     f"(difference {r['difference']:+.3f})")
    return "; ".join(parts) + "."
