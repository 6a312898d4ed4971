"""Sweeps: studies of families x depths x residual x seeds (x any field), run through the run store.

A study is a mapping like

    {"model": {"family": "convnet", "width": 8}, "sweep": {"model.depth": [1, 3, 8]}}

with optional "data" and "train" sections (merged over the notebook's shared ones), "seeds" and
"residual" lists (default: the notebook's), and "sweep": dotted field -> list of values. `expand`
turns studies into RunConfigs and checks every one (including that its model can be built), so a
bad sweep fails before any training. labcore.plan turns them into the runs a notebook fetches.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import pandas as pd

from .config import SECTIONS, ConfigError, RunConfig, _check_type
from .data import CLASSES, SHAPES
from .models import check_buildable
from .runs import RunResult

STUDY_KEYS = ("data", "model", "train", "sweep", "seeds", "residual")


def _set(cfg: RunConfig, dotted: str, value: Any, where: str) -> RunConfig:
    """`cfg` with one dotted field ("model.depth", "train.lr", "seed") replaced."""
    if dotted == "seed":
        return cfg.replace(seed=value)
    section, _, field = dotted.partition(".")
    if section not in SECTIONS or not field:
        raise ConfigError(f"{where}: sweep field {dotted!r} must be 'seed' or '<data|model|train>.<field>'")
    return cfg.replace(**{section: {field: value}})


def expand(studies: dict[str, dict], data: dict, train: dict, seeds: list[int],
           residual: list[bool]) -> dict[str, list[RunConfig]]:
    """RunConfigs for every study, every combination of its sweep, every residual flag and seed."""
    if not isinstance(studies, dict) or not studies:
        raise ConfigError("studies must be a non-empty mapping of study names to specs")
    plan = {}
    for name, spec in studies.items():
        where = f"studies.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a mapping with keys {', '.join(STUDY_KEYS)}")
        unknown = sorted(set(spec) - set(STUDY_KEYS))
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(STUDY_KEYS)}")
        try:
            base = RunConfig.build({**data, **spec.get("data", {})}, spec.get("model"), {**train, **spec.get("train", {})})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        grid = {"model.residual": _check_type(spec.get("residual", residual), tuple[bool, ...], f"{where}.residual"),
                "seed": _check_type(spec.get("seeds", seeds), tuple[int, ...], f"{where}.seeds")}
        for field, values in (spec.get("sweep") or {}).items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}.sweep.{field} must be a non-empty list of values")
            grid[field] = values
        configs = []
        for combo in itertools.product(*grid.values()):
            cfg = base
            for field, value in zip(grid, combo):
                try:
                    cfg = _set(cfg, field, value, where)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
            configs.append(cfg)
        for cfg in configs:
            check_buildable(cfg.model, SHAPES[cfg.data.name], len(CLASSES[cfg.data.name]), where)
        plan[name] = configs
    return plan


def table(results: dict[str, list[RunResult]]) -> pd.DataFrame:
    """One row per run: the study's name plus `RunResult.summary()`."""
    return pd.DataFrame([{"study": name, **r.summary()} for name, rs in results.items() for r in rs])


def _mean_of_all(s: pd.Series) -> float:
    return s.mean(skipna=False)


def aggregate(df: pd.DataFrame, metrics: tuple[str, ...] = ("train_loss", "val_acc", "test_acc")) -> pd.DataFrame:
    """Mean and standard deviation over seeds per study, depth and variant."""
    keys = ["study", "family", "depth", "residual"]
    # A failed seed (NaN) makes the mean NaN rather than silently dropping out of it.
    out = df.groupby(keys)[list(metrics)].agg([_mean_of_all, "std"])
    out.columns = [f"{m}_{'mean' if s == '_mean_of_all' else s}" for m, s in out.columns]
    out["seeds"] = df.groupby(keys)["seed"].count()
    out["n_params"] = df.groupby(keys)["n_params"].first()
    out["seconds"] = df.groupby(keys)["seconds"].mean()
    return out.reset_index()


def trainability(df: pd.DataFrame, num_classes: int = 10, fraction: float = 0.9) -> pd.DataFrame:
    """Did each (study, depth, variant) train? 'no' when its final training loss stays above
    `fraction` x ln(classes), i.e. barely below the loss of guessing; 'diverged' when it is not finite."""
    chance = math.log(num_classes)
    agg = aggregate(df)

    def verdict(loss: float) -> str:
        if not math.isfinite(loss):
            return "diverged"
        return "no" if loss > fraction * chance else "yes"

    agg["trained"] = [verdict(v) for v in agg["train_loss_mean"]]
    return agg[["study", "family", "depth", "residual", "train_loss_mean", "val_acc_mean", "test_acc_mean", "trained"]]


def depth_effect_sentences(df: pd.DataFrame, metric: str = "test_acc") -> list[str]:
    """For each study and variant: which depth is best, and which depths did not train (computed, for markdown)."""
    agg = aggregate(df)
    ok = trainability(df).set_index(["study", "depth", "residual"])["trained"]
    lines = []
    for (study, residual), g in agg.groupby(["study", "residual"]):
        g = g.sort_values("depth")
        best = g.loc[g[f"{metric}_mean"].idxmax()]
        values = ", ".join(f"depth {d}: {m:.3f}" + (f" +- {s:.3f}" if s == s and s > 0 else "")
                           for d, m, s in zip(g["depth"], g[f"{metric}_mean"], g[f"{metric}_std"]))
        failed = [str(d) for d in g["depth"] if ok[(study, d, residual)] != "yes"]
        variant = "residual" if residual else "plain"
        line = f"**{study}, {variant}**: {metric.replace('_', ' ')} {values}"
        if len(g) > 1:
            line += f"; best at depth {best['depth']}"
            trend = "deepest is best" if best["depth"] == g["depth"].max() else (
                "shallowest is best" if best["depth"] == g["depth"].min() else "an intermediate depth is best")
            line += f" ({trend})"
            m, sd = f"{metric}_mean", f"{metric}_std"
            tied = [str(d) for d, mean, std in zip(g["depth"], g[m], g[sd])
                    if d != best["depth"] and abs(best[m] - mean) <= best[sd] + std]  # NaN std (one seed): never tied
            if tied:
                line += f", but within the seed spread of depth {', '.join(tied)}"
        if len(g) == 1:
            line += "; it did not train." if failed else "; it trained."
        else:
            line += f"; did not train: depth {', '.join(failed)}." if failed else "; every depth trained."
        lines.append(line)
    return lines


def ranking(df: pd.DataFrame, metric: str = "val_acc", **where: Any) -> pd.DataFrame:
    """Models (study, depth, variant) ordered by the mean of `metric`, best first; `where` filters columns."""
    agg = aggregate(df, metrics=("train_loss", "val_acc", "test_acc"))
    for column, value in where.items():
        agg = agg[agg[column].isin(value if isinstance(value, (list, tuple)) else [value])]
    agg = agg.sort_values(f"{metric}_mean", ascending=False).reset_index(drop=True)
    agg.index += 1
    return agg
