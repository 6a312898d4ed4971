"""A toy exercise (notebook 05_toy): the smallest complete exercise, which tests/test_exercise.py adds to a copy of
the project to prove that an exercise is its notebook, its parameter files and this module, and nothing else."""
from __future__ import annotations

from typing import Any

from labcore.analysis import plots
from labcore.store import provenance, runs
from labcore.core.config import RunConfig
from labcore.store.planned import Planned

NOTEBOOK = "05_toy"


def plan(data: dict, model: dict, train: dict, seeds: list[int]) -> dict[str, list[Planned]]:
    """One run of the model per seed."""
    return {"runs": [Planned(RunConfig.build(data, model, train, seed=s), study="runs") for s in seeds]}


def summary(results: list[runs.RunResult], device: str, tracking: str) -> dict[str, Any]:
    """What the report publishes: the mean validation accuracy over seeds."""
    val_acc = sum(r.final("val_acc") for r in results) / len(results)
    return {"metrics": {"val_acc": val_acc}, "headline": [("Validation accuracy", f"{val_acc:.3f}")],
            "provenance": provenance.of_runs(results, device, tracking),
            "figure": plots.training_curves(runs.histories(results), title="Toy")}
