"""The lab's reported numbers (shared/lab-reference.md) and comparisons of our measurements with them.

These are the lab's claims, kept as data so every report can put its own measurements next to
them; nothing here is ever used as a result.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .config import RunConfig

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

# The lab's settings per experiment (dotted RunConfig fields), to say when a profile departs from them.
_ADAM = {"data.val_size": 5000, "data.subset": None, "train.optimizer": "adam", "train.batch_size": 128,
         "train.augment": False, "train.schedule": "constant", "train.weight_decay": 0.0}
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "mlp_mnist": {**_ADAM, "data.name": "mnist", "model.family": "mlp", "model.width": 16, "model.depth": 2,
                  "train.lr": 1e-4, "train.epochs": 15},
    "lab_cnn": {**_ADAM, "data.name": "cifar10", "model.family": "lab_cnn", "model.width": 16, "model.depth": 3,
                "model.kernel_size": 3, "train.lr": 1e-3, "train.epochs": 10},
    "lab_resnet": {**_ADAM, "data.name": "cifar10", "model.family": "lab_resnet", "model.width": 64,
                   "model.depth": 3, "model.residual": True, "train.lr": 1e-3, "train.epochs": 10},
}


def differences(experiment: str, cfg: RunConfig, only: tuple[str, ...] = ("data.", "model.", "train.")) -> list[str]:
    """Where `cfg` departs from the lab's settings for `experiment`, e.g. ['train.epochs: 8 here, 10 in the lab'];
    `only` limits the check to fields starting with those prefixes (e.g. ("model.",) for untrained models)."""
    diffs = []
    for dotted, lab_value in LAB_SETTINGS[experiment].items():
        if not dotted.startswith(only):
            continue
        section, field = dotted.split(".")
        ours = getattr(getattr(cfg, section), field)
        if ours != lab_value:
            diffs.append(f"{dotted}: {ours} here, {lab_value} in the lab")
    return diffs


def caveat(experiment: str, cfg: RunConfig, only: tuple[str, ...] = ("data.", "model.", "train.")) -> str:
    """Markdown: whether a run uses the lab's settings for `experiment`, and if not, how it departs from them."""
    diffs = differences(experiment, cfg, only)
    if not diffs:
        return "These runs use the lab's own settings, so the comparison below is like for like."
    return ("**Not the lab's settings** (" + "; ".join(diffs) + "), so the comparison below only indicates the "
            "direction; the `full` profile uses the lab's settings.")


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


def _order(a: float, sa: float, b: float, sb: float) -> int | None:
    """+1 if a > b beyond the seeds' spread (one std each), -1 if below it, 0 if within it,
    None when the spread is unknown (a single seed: NaN std), so no difference can be called real."""
    if not (np.isfinite(sa) and np.isfinite(sb)):
        return None
    return 0 if abs(a - b) <= sa + sb else (1 if a > b else -1)


def vgg_claims(rank: pd.DataFrame) -> str:
    """Which of the lab's two VGG orderings (VGG19 > VGG16, or VGG16 > VGG19; VGG24 last in both) the data
    supports, from a `sweep.ranking` table of the VGG study (std NaN for a single seed)."""
    by = {d: (m, s) for d, m, s in zip(rank["depth"], rank["val_acc_mean"], rank["val_acc_std"])}
    if not {16, 19} <= set(by):
        return "VGG16 and VGG19 were not both trained, so the lab's claims cannot be checked."
    o = _order(*by[19], *by[16])
    if o is None:
        verdict = (f"With a single seed the spread between runs is unknown, so the difference between VGG19 and "
                   f"VGG16 ({by[19][0] - by[16][0]:+.3f}) supports neither of the lab's orderings; use several seeds.")
    elif o == 0:
        verdict = ("VGG16 and VGG19 are within each other's seed-to-seed spread, so these runs support neither of the "
                   "lab's two orderings of them over the other.")
    else:
        verdict = ("VGG19 beats VGG16 beyond the seed spread, supporting the ranking write-up (ResNet34 > ResNet18 > "
                   "VGG19 > VGG16 > VGG24)." if o > 0 else
                   "VGG16 beats VGG19 beyond the seed spread, supporting the VGG-only write-up (VGG16 > VGG19 > VGG24).")
    if 24 in by:
        last = min(by, key=lambda d: by[d][0]) == 24
        verdict += " Among the VGGs, VGG24 is " + ("last, as both write-ups say." if last else "not last, unlike both write-ups.")
    return verdict


def _pm(std: float) -> str:
    return f"+- {std:.3f}" if np.isfinite(std) else "one seed"


def degradation_sentence(df: pd.DataFrame) -> str:
    """He et al.'s degradation check from a runs table of one study: final training error, shallowest vs deepest."""
    lines = []
    for residual, g in df.groupby("residual"):
        err = pd.DataFrame({"err": 1 - g.groupby("depth")["train_acc"].mean(),
                            "std": g.groupby("depth")["train_acc"].std()})  # std NaN for a single seed
        if len(err) < 2:
            continue
        lo, hi = err.index.min(), err.index.max()
        o = _order(err.loc[hi, "err"], err.loc[hi, "std"], err.loc[lo, "err"], err.loc[lo, "std"])
        name = "residual" if residual else "plain"
        reading = {1: f"the deeper {name} network trains *worse* (degradation)",
                   -1: f"the deeper {name} network trains better",
                   0: "the two are within the seed-to-seed spread",
                   None: "a single seed cannot tell whether the difference is real"}[o]
        lines.append(f"**{name}**: final training error {err.loc[lo, 'err']:.3f} ({_pm(err.loc[lo, 'std'])}) at "
                     f"{lo} layers against {err.loc[hi, 'err']:.3f} ({_pm(err.loc[hi, 'std'])}) at {hi} layers: {reading}.")
    if not lines:
        return "Only one depth was trained, so depth cannot be compared."
    return " ".join(lines) + (" He et al. report degradation for plain networks (plain-56 above plain-20 in training "
                              "error) and the reverse for ResNets.")
