"""Sweeps: studies of families x depths x residual x seeds (x any field), run through the run store.

A study is a mapping like

    {"model": {"family": "convnet", "width": 8}, "sweep": {"model.depth": [1, 3, 8]}}

with optional "data" and "train" sections (merged over the notebook's shared ones), "seeds" and
"residual" lists (default: the notebook's), and "sweep": dotted field -> list of values. `expand`
turns studies into RunConfigs and checks every field, so a bad sweep fails before any training;
`plan_studies` turns them into the runs a notebook fetches (labcore.exercises.exercise builds each model on the meta
device before anything trains).
"""
from __future__ import annotations

import itertools
from typing import Any

import pandas as pd
import torch

from labcore.analysis import claims, plots, reference
from labcore.store import provenance, runs
from labcore.core.config import READ_ONLY_BY, SECTIONS, ConfigError, DataConfig, RunConfig, _check_type, check_read
from labcore.store.planned import Planned
from labcore.store import training
from labcore.store.runs import RunResult

STUDY_KEYS = ("data", "model", "train", "sweep", "seeds", "residual")


def distinct(values: Any, where: str) -> Any:
    """`values`, checked to name each value once: a list that stands for a set (seeds, a sweep's values) with a
    repeat would train or average one run as if it were two ('mean of 2 seeds' with no spread)."""
    seen: list = []
    for v in values or []:
        if v in seen:
            raise ConfigError(f"{where} lists {v!r} twice; each value names its own runs, so give it once")
        seen.append(v)
    return values


def _set(cfg: RunConfig, dotted: str, value: Any, where: str) -> RunConfig:
    """`cfg` with one dotted field ("model.depth", "train.lr", "seed") replaced."""
    if dotted == "seed":
        return cfg.replace(seed=value)
    section, _, field = dotted.partition(".")
    if section not in SECTIONS or not field:
        raise ConfigError(f"{where}: sweep field {dotted!r} must be 'seed' or '<data|model|train>.<field>'")
    update = {field: value}
    for (kind, name), (decides, readers) in READ_ONLY_BY.items():
        if kind == section and decides == field and value not in readers:  # e.g. optimizer adam: momentum unread
            update[name] = SECTIONS[section].__dataclass_fields__[name].default  # so it keys as an Adam run written alone
    return cfg.replace(**{section: update})


def _values(spec: dict, key: str, default: list, kind: Any, where: str) -> list:
    """A study's `key` list (its own, else the notebook's `default`), type-checked, each value once and at least one:
    an empty list would plan no run of the study and say nothing."""
    name = f"{where}.{key}" if key in spec else key
    values = distinct(_check_type(spec.get(key, default), kind, name), name)
    if not values:
        raise ConfigError(f"{name} is empty, so {where} plans no run; give at least one value"
                          + (" (false: plain, true: residual)" if key == "residual" else ", e.g. [0]"))
    return values


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
            for section in ("model", "train"):  # what the study writes must be read by its runs
                check_read(getattr(base, section), section, spec.get(section) or ())
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        grid = {"model.residual": _values(spec, "residual", residual, tuple[bool, ...], where),
                "seed": _values(spec, "seeds", seeds, tuple[int, ...], where)}
        for field, values in (spec.get("sweep") or {}).items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}.sweep.{field} must be a non-empty list of values")
            grid[field] = distinct(values, f"{where}.sweep.{field}")
        configs = []
        for combo in itertools.product(*grid.values()):
            cfg = base
            for field, value in zip(grid, combo):
                try:
                    cfg = _set(cfg, field, value, where)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
            configs.append(cfg)
        plan[name] = configs
    return plan


def plan_studies(studies: dict, data: dict, train: dict, seeds: list[int], residual: list[bool]
                 ) -> dict[str, list[Planned]]:
    """The runs of exercises 02 and 03: every study x sweep x residual flag x seed, grouped by study."""
    if not seeds:
        raise ConfigError("seeds is empty; give at least one seed, e.g. seeds: [0]")
    distinct(seeds, "seeds")
    distinct(residual, "residual")
    return {name: [Planned(c, study=name) for c in cfgs]
            for name, cfgs in expand(studies, data, train, seeds, residual).items()}


# What a study's tables show in columns of their own; any other field its runs differ in names a configuration.
SHOWN = ("model.depth", "model.residual", "seed")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'width': 8}} -> {'model.width': 8}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def settings(results: list[RunResult]) -> list[str]:
    """Per run, the fields its study's runs differ in beyond depth, variant and seed, as 'width=8, lr=0.01'
    ('' where they differ in nothing else): what tells one configuration of a sweep from another."""
    flats = [_flat(r.config.to_dict()) for r in results]
    varying = [f for f in (flats[0] if flats else {}) if f not in SHOWN and len({repr(x.get(f)) for x in flats}) > 1]
    leaf = {f: f.rsplit(".", 1)[-1] for f in varying}
    names = {f: leaf[f] if list(leaf.values()).count(leaf[f]) == 1 else f for f in varying}
    return [", ".join(f"{names[f]}={x.get(f)}" for f in varying) for x in flats]


def by_setting(results: dict[str, list[RunResult]]) -> dict[str, list[RunResult]]:
    """Each study split into its configurations: a study swept over model.width (or train.lr, ...) becomes
    'mlp (width=8)', 'mlp (width=16)', so that no table, order or curve pools them as seeds of one."""
    out: dict[str, list[RunResult]] = {}
    for name, rs in results.items():
        for r, setting in zip(rs, settings(rs)):
            out.setdefault(f"{name} ({setting})" if setting else name, []).append(r)
    return out


def guess_accuracy(data: DataConfig) -> float:
    """The validation accuracy of always answering the most frequent class of `data`'s validation images: the
    chance level a seed must beat (a few hundred CIFAR-10 images are not 10 % of each class). The splits are
    cached (training.load_splits)."""
    y = training.load_splits(data).y_val
    return float(torch.bincount(y).max()) / len(y)


def table(results: dict[str, list[RunResult]]) -> pd.DataFrame:
    """One row per run: its study (with the configuration's setting where the study sweeps more than depth:
    by_setting) plus `RunResult.summary()`."""
    return pd.DataFrame([{"study": name, **r.summary(), "guess_acc": guess_accuracy(r.config.data)}
                         for name, rs in by_setting(results).items() for r in rs])


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


def overview(df: pd.DataFrame) -> pd.DataFrame:
    """The aggregate table as a person reads it: one row per study, depth and variant, each metric as
    'mean ± standard deviation' over seeds (the mean alone with one seed), parameters and seconds per run."""
    agg = aggregate(df)

    def spread(m: float, s: float) -> str:
        return "failed" if pd.isna(m) else f"{m:.3f}" if pd.isna(s) else f"{m:.3f} ± {s:.3f}"

    return pd.DataFrame({"study": agg["study"], "depth": agg["depth"],
                         "variant": agg["residual"].map({True: "residual", False: "plain"}),
                         **{name: [spread(m, s) for m, s in zip(agg[f"{k}_mean"], agg[f"{k}_std"])]
                            for k, name in (("train_loss", "train loss"), ("val_acc", "val acc"), ("test_acc", "test acc"))},
                         "seeds": agg["seeds"], "parameters": [f"{int(n):,}" for n in agg["n_params"]],
                         "seconds per run": agg["seconds"].round(1)})


def trainability(df: pd.DataFrame) -> pd.DataFrame:
    """Did each (study, depth, variant) train, seed by seed? A seed trained when its final validation accuracy
    beats chance, its validation images' best constant guess (`guess_acc`), beyond sampling noise
    (claims.seed_trained); a failed seed (NaN) is named, not averaged. `trained`: 'yes' (every seed), 'partly',
    'no' (no seed) or 'failed' (every seed failed)."""
    keys = ["study", "family", "depth", "residual"]
    agg = aggregate(df)
    rows = []
    for key, g in df.groupby(keys, sort=True):
        flags = [claims.seed_trained(v, n, guess) for v, n, guess in zip(g["val_acc"], g["n_val"], g["guess_acc"])]
        ok, failed = sum(f is True for f in flags), sum(f is None for f in flags)
        trained = "failed" if failed == len(flags) else "yes" if ok == len(flags) else "no" if ok == 0 else "partly"
        rows.append({**dict(zip(keys, key)), "chance_acc": g["guess_acc"].max(),  # what its seeds had to beat
                     "seeds_trained": claims.seeds_phrase(flags, list(g["seed"])), "trained": trained})
    out = agg.merge(pd.DataFrame(rows), on=keys)
    return out[[*keys, "train_loss_mean", "val_acc_mean", "chance_acc", "test_acc_mean", "seeds_trained", "trained"]]


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


def fetch(planned: dict[str, list[Planned]], device: str, tracking: str, notebook: str,
          profile: str | None, train_missing: bool | None = None) -> dict[str, list[RunResult]]:
    """The results of every study of a plan (labcore.store.runs.fetch: from the store, or trained now if missing
    and `train_missing`)."""
    return {name: runs.fetch(ps, device=device, tracking=tracking, notebook=notebook, profile=profile,
                             train_missing=train_missing) for name, ps in planned.items()}


def run_metrics(df: pd.DataFrame) -> dict[str, Any]:
    """What every depth-study report publishes about its runs: how many, their training time (whenever they were
    trained), how many this build trained, and the aggregate table."""
    return {"runs": len(df), "training_seconds": float(df["seconds"].sum()), "trained_now": int((~df["cached"]).sum()),
            "results": aggregate(df).to_dict(orient="records")}


def provenance_of(results: dict[str, list[RunResult]], device: str, tracking: str) -> dict[str, Any]:
    """The provenance of a depth-study report: its runs' (keys by study) with the seeds they cover."""
    flat = runs.all_results(results)
    return provenance.of_runs(flat, device, tracking, seeds=sorted({r.config.seed for r in flat}),
                              run_keys={n: [r.key for r in rs] for n, rs in results.items()})


def counts_sentence(results: dict[str, list[RunResult]]) -> str:
    """How many runs in how many studies, how many were trained now and how many came from the run store."""
    flat = runs.all_results(results)
    reused = sum(r.cached for r in flat)
    studies = f"{len(results)} stud{'y' if len(results) == 1 else 'ies'}"
    return (f"{len(flat)} run{'' if len(flat) == 1 else 's'} in {studies} ("
            + ", ".join(f"{name}: {len(rs)}" for name, rs in results.items())
            + f"); {len(flat) - reused} trained now, {reused} loaded from the run store.")


def study(df: pd.DataFrame, *names: str) -> pd.DataFrame:
    """The rows of a runs table that belong to the named studies (each of its configurations: 'mlp (width=8)')."""
    return df[[s in names or s.split(" (", 1)[0] in names for s in df["study"]]]


def with_twins(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the studies that trained both variants, plain and residual (the twins 03 compares)."""
    return df.groupby("study").filter(lambda g: g["residual"].nunique() == 2)


def depth_figures(results: dict[str, list[RunResult]], title: str) -> list:
    """One `plots.depth_study` figure per study, titled '<study>: <title>'."""
    return [plots.depth_study(rs, title=f"{name}: {title}") for name, rs in by_setting(results).items()]


def twin_figures(results: dict[str, list[RunResult]], title: str) -> list:
    """One `plots.twins` figure per study that trained both variants, titled '<study>: <title>'."""
    return [plots.twins(rs, title=f"{name}: {title}") for name, rs in by_setting(results).items()
            if len({r.config.model.residual for r in rs}) == 2]


def at_lab_depth(results: list[RunResult], experiment: str) -> list[RunResult]:
    """The runs of a study at the lab's own depth (and variant) for `experiment` (reference.LAB_SETTINGS), e.g.
    the lab CNN's 3 convolutions per block out of a sweep over 1, 3 and 5."""
    lab = reference.LAB_SETTINGS[experiment]
    return [r for r in results if r.config.model.depth == lab["model.depth"]
            and r.config.model.residual == lab.get("model.residual", False)]


def _model_names(df: pd.DataFrame) -> list[str]:
    """VGG16, ResNet34, ... with a configuration's setting where its study has several ('VGG16 (width=8)')."""
    return [model_name(f, d) + (f" ({s.split(' (', 1)[1]}" if " (" in s else "")
            for f, d, s in zip(df["family"], df["depth"], df["study"])]


def model_order(df: pd.DataFrame, metric: str = "val_acc", higher_is_better: bool = True) -> str:
    """The order of the models in a runs table by `metric`, tested over seeds (claims.order), named as the
    write-ups name them (VGG16, ResNet34)."""
    named = df.assign(model=_model_names(df))
    return claims.order({m: list(g[metric]) for m, g in named.groupby("model")}, higher_is_better)[0]


def by_model(df: pd.DataFrame, metric: str) -> dict[str, list[float]]:
    """`metric` of a runs table's rows by model, named as the write-ups name them: {model: one value per seed}."""
    named = df.assign(model=_model_names(df))
    return {m: list(g[metric]) for m, g in named.groupby("model")}
