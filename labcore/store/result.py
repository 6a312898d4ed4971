"""A run's result: what a report needs from one training run (or from its failure), as the store keeps it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from labcore.core.config import RunConfig


@dataclass(frozen=True)
class RunResult:
    """Everything a report needs from one training run (or from its failure: status 'failed' and error)."""

    config: RunConfig
    history: list[dict]  # one dict per epoch, as returned by `fit` (partial for a failed run)
    test: dict  # `evaluate` on the test split ({} for a failed run)
    n_params: int
    seconds: float  # training wall time (the run that produced it, not this process)
    device: str
    data_source: str
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None  # for a failed run: what went wrong, in one line
    estimate_seconds: float | None = None  # what the plan's calibration expected `seconds` to be
    # The run's wall time from building its model to its test result (its share when fused; the data's loading
    # aside): `seconds` plus the model, the test pass and W&B (most of a smoke run). Estimates learn it.
    wall_seconds: float | None = None
    node: str | None = None  # the machine that trained it
    compiled: bool = False  # trained through torch.compile
    fused: tuple[int, ...] = ()  # the seeds of the fused group it trained in (labcore.engine.fused; `seconds` is its share)
    numerics: dict | None = None  # the numeric settings it trained with (machine.numerics: TF32, determinism, ...)
    code: dict | None = None  # {module: digest} of the code that trained it (labcore.store.identity)
    data: dict | None = None  # the dataset it saw: {"name", "sha256" of its decoded content}
    commit: str | None = None  # the git commit of the checkout that trained it (None outside git)
    kept: dict | None = None  # kept for newer code after `make verify` re-derived runs identically (what, when)
    resumed: dict | None = None  # continued after an interruption: {"epoch": last epoch done before, "wandb": how}
    cached: bool = False  # True when loaded from the store instead of trained now

    @property
    def key(self) -> str:
        """The run store's key of this run."""
        return self.config.key()

    @property
    def precision(self) -> str:
        """The precision it trained in, 'fp32' or 'bf16' (bfloat16 autocast): as recorded, else its config's (a
        record from before precision was recorded, when 'auto' did not exist)."""
        return (self.numerics or {}).get("precision", self.config.train.precision)

    @property
    def ok(self) -> bool:
        """Whether the run finished (a failed run keeps its partial history and its error)."""
        return self.status == "ok"

    def final(self, metric: str) -> float:
        """The last epoch's value of a history metric, e.g. final('val_acc'); NaN when there is none."""
        return self.history[-1][metric] if self.history else float("nan")

    def regime_change(self, new: "RunResult") -> list[str]:
        """How `new`, a result of the same config, was computed otherwise than this one: 'device: cpu then, cuda
        now', ... (empty if alike)."""
        def regime(r: RunResult) -> dict:
            n = r.numerics or {}
            return {"device": r.device, "fused": bool(len(r.fused) > 1), "compiled": r.compiled,
                    "precision": n.get("precision", r.config.train.precision),
                    **{k: n.get(k) for k in ("threads", "deterministic", "tf32_matmul", "torch")}}
        a, b = regime(self), regime(new)
        return [f"{k}: {a[k]} then, {b[k]} now" for k in a if a[k] != b[k]]

    def summary(self) -> dict[str, Any]:
        """Flat scalars for tables: config labels, final metrics, test accuracy, size, time and status."""
        m = self.config.model
        return {"family": m.family, "depth": m.depth, "width": m.width, "residual": m.residual,
                "seed": self.config.seed, "dataset": self.config.data.name, "n_val": self.config.data.val_size,
                "train_loss": self.final("train_loss"),
                "train_acc": self.final("train_acc"), "val_loss": self.final("val_loss"),
                "val_acc": self.final("val_acc"), "test_acc": self.test.get("accuracy", float("nan")),
                "n_params": self.n_params, "seconds": self.seconds, "cached": self.cached, "precision": self.precision,
                "status": self.status, "error": self.error, "device": self.device, "data_source": self.data_source}


def class_table(test: dict[str, Any]) -> Any:
    """The test set's per-class precision, recall, F1 and support (images), one row per class, then the macro and
    weighted averages, then accuracy (its F1 column; support: every test image), as scikit-learn's report reads.
    A class the model never predicted has no precision (0 of 0): no value, left out of the averages, where the
    stored report (scikit-learn's zero_division=0) says 0.000."""
    import pandas as pd

    report = dict(test["report"])
    accuracy = report.pop("accuracy", None)
    table = pd.DataFrame(report).T.rename_axis("class").rename(columns={"f1-score": "F1", "support": "support (images)"})
    if test.get("confusion"):
        table = _undefined_left_out(table, test["confusion"])
    if accuracy is not None:
        total = table["support (images)"].iloc[-1]
        table.loc["accuracy"] = [float("nan"), float("nan"), accuracy, total]
    table["support (images)"] = table["support (images)"].astype(int)
    table.attrs["dash"] = "no value: accuracy has no precision or recall, nor a class never predicted a precision"
    return table


def _undefined_left_out(table: Any, confusion: list[list[int]]) -> Any:
    """`table` (class_table's, classes first in the confusion matrix's order, then the two averages) with the
    precision of never-predicted classes NaN and the averages' precision taken over the others. (Their F1 stays:
    2 TP / (2 TP + FP + FN) is 0 for a class with images none of which was found.)"""
    import numpy as np
    import pandas as pd

    n = len(confusion)
    never = np.asarray(confusion).sum(axis=0) == 0  # a column of zeros: no image predicted as that class
    classes = table.iloc[:n].copy()
    classes.loc[never, "precision"] = np.nan
    weights = classes["support (images)"].where(~never)
    averaged = {"macro avg": classes["precision"].mean(),
                "weighted avg": (classes["precision"] * weights).sum() / weights.sum()}
    table = pd.concat([classes, table.iloc[n:]])
    for row, value in averaged.items():
        if row in table.index:
            table.loc[row, "precision"] = value
    return table


def record_of(result: RunResult) -> dict[str, Any]:
    """The result as the store writes it (result.json): every field, the config as a plain dict."""
    record = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("config", "cached")}
    record["config"] = result.config.to_dict()
    return record
