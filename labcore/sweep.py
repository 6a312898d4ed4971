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
from typing import Any

import numpy as np
import pandas as pd

from . import claims
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


def trainability(df: pd.DataFrame, num_classes: int = 10) -> pd.DataFrame:
    """Did each (study, depth, variant) train, seed by seed? A seed trained when its final validation accuracy
    beats chance beyond sampling noise (claims.seed_trained); a failed seed (NaN) is named, not averaged.
    `trained`: 'yes' (every seed), 'partly', 'no' (no seed) or 'failed' (every seed failed)."""
    keys = ["study", "family", "depth", "residual"]
    agg = aggregate(df)
    rows = []
    for key, g in df.groupby(keys, sort=True):
        flags = [claims.seed_trained(v, n, num_classes) for v, n in zip(g["val_acc"], g["n_val"])]
        ok, failed = sum(f is True for f in flags), sum(f is None for f in flags)
        trained = "failed" if failed == len(flags) else "yes" if ok == len(flags) else "no" if ok == 0 else "partly"
        rows.append({**dict(zip(keys, key)), "seeds_trained": claims.seeds_phrase(flags, list(g["seed"])),
                     "trained": trained})
    out = agg.merge(pd.DataFrame(rows), on=keys)
    return out[[*keys, "train_loss_mean", "val_acc_mean", "test_acc_mean", "seeds_trained", "trained"]]


def depth_effect_sentences(df: pd.DataFrame, metric: str = "test_acc") -> list[str]:
    """For each study and variant: the depth with the best mean, whether a test over seeds separates it from the
    other depths, and which depths did not train (computed, for markdown)."""
    ok = trainability(df).set_index(["study", "depth", "residual"])
    lines = []
    for (study, residual), g in df.groupby(["study", "residual"]):
        per_depth = {d: list(gd[metric]) for d, gd in sorted(g.groupby("depth"))}
        means = {d: np.nanmean(v) if np.isfinite(v).any() else -np.inf for d, v in per_depth.items()}
        values = ", ".join(f"depth {d}: {m:.3f}" for d, m in means.items())
        variant = "residual" if residual else "plain"
        line = f"**{study}, {variant}**: {metric.replace('_', ' ')} {values}"
        if len(per_depth) > 1:
            best = max(means, key=means.get)
            tests = {d: claims.compare(per_depth[best], v) for d, v in per_depth.items() if d != best}
            where = ("the deepest" if best == max(per_depth) else "the shallowest" if best == min(per_depth)
                     else "an intermediate depth")
            beaten = [d for d, c in tests.items() if c.verdict == "greater"]
            tied = [str(d) for d, c in tests.items() if c.verdict != "greater"]
            if len(beaten) == len(tests):
                line += f"; {where} ({best}) is best, ahead of every other depth beyond the seed spread"
            elif any(c.verdict == "one seed" for c in tests.values()):
                line += f"; the highest single run is at depth {best} ({where}), but one seed cannot rank depths"
            else:
                line += (f"; the highest mean is at depth {best} ({where}), but it is not distinguishable from "
                         f"depth {', '.join(tied)} with {next(iter(tests.values())).seeds}")
        phrases = [f"depth {d} {ok.loc[(study, d, residual), 'seeds_trained']}" for d in per_depth
                   if ok.loc[(study, d, residual), "trained"] != "yes"]
        line += ("; " + "; ".join(phrases) + "." if phrases else
                 "; every depth trained in every seed." if len(per_depth) > 1 else "; it trained in every seed.")
        lines.append(line)
    return lines


def deepest_trained_sentence(df: pd.DataFrame, study: str, metric: str = "test_acc") -> str:
    """The lab's remaining ConvNet claim, per variant: does the deepest network that still trains (in every seed)
    beat the shallowest one? Tested over seeds."""
    ok = trainability(df).set_index(["study", "depth", "residual"])["trained"]
    lines = []
    for residual, g in df[df["study"] == study].groupby("residual"):
        depths = sorted(set(g["depth"]))
        trained = [d for d in depths if ok[(study, d, residual)] == "yes"]
        variant = "residual" if residual else "plain"
        if len(trained) < 2 or trained[-1] == depths[0]:
            lines.append(f"**{study}, {variant}**: fewer than two depths trained in every seed, so there is no deeper "
                         "trained network to compare with the shallowest.")
            continue
        deep, shallow = trained[-1], depths[0]
        c = claims.compare(list(g[g.depth == deep][metric]), list(g[g.depth == shallow][metric]))
        reading = {"greater": "it does beat the shallowest", "less": "it is worse than the shallowest",
                   "indistinguishable": f"the two are not distinguishable with {c.seeds}",
                   "one seed": "one seed cannot tell"}[c.verdict]
        lines.append(f"**{study}, {variant}**: the deepest network that trains in every seed has depth {deep} "
                     f"({metric.replace('_', ' ')} {c.mean_a:.3f}) against {c.mean_b:.3f} at depth {shallow}: {reading}.")
    return "\n\n".join(lines)


def model_name(family: str, depth: int) -> str:
    """The name the write-ups use: VGG16, ResNet34; other families as 'convnet-8'."""
    return {"vgg": f"VGG{depth}", "resnet": f"ResNet{depth}"}.get(family, f"{family}-{depth}")


def ranking(df: pd.DataFrame, metric: str = "val_acc", **where: Any) -> pd.DataFrame:
    """Models (study, depth, variant) ordered by the mean of `metric`, best first; `where` filters columns."""
    agg = aggregate(df, metrics=("train_loss", "val_acc", "test_acc"))
    for column, value in where.items():
        agg = agg[agg[column].isin(value if isinstance(value, (list, tuple)) else [value])]
    agg = agg.sort_values(f"{metric}_mean", ascending=False).reset_index(drop=True)
    agg.index += 1
    return agg
