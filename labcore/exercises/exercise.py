"""Exercises: a notebook `notebooks/NN_name.ipynb` and the module `labcore/exercises/name.py` that owns what is
particular to it. Adding an exercise touches those two files and its parameter files, nothing else.

The module defines:

- `plan(...)`: the runs the exercise needs, as {group: [Planned]}. Its arguments are bound by name to the
  notebook's parameters: every argument must be a name that the notebook's `parameters` cell defines (checked
  when the exercise is loaded, with a one-line error naming the missing one), except `upstream`.
- `UPSTREAM` (optional): the notebooks whose runs it reads, e.g. ("01_mlp_baseline", "03_residual"). `plan`
  then takes `upstream`, {stem: that notebook's plan}, each planned from that notebook's own parameters in the
  same profile (and from its parameters cell outside a profile). Upstream exercises may have upstream of their own.
- the analyses and sentences only that exercise uses, which its notebook calls.

Exercises are discovered from the notebooks: a notebook without a module, or a module that does not fit its
notebook, fails loudly before anything runs.
"""
from __future__ import annotations

import copy
import functools
import importlib
import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from labcore.core.config import ConfigError, RunConfig
from labcore.store.planned import Planned, flatten
from labcore.core.datasets import CLASSES, SHAPES
from labcore.core.models import check_buildable
from labcore.exercises import params as _params
from labcore.exercises.params import check_probe, datasets_needed, merged_parameters, notebook_defaults, parameter_file


def _configs(groups: Any, where: str = "") -> list[tuple[str, RunConfig]]:
    """(where, config) for every RunConfig in a plan, whether planned for training (Planned) or only built (04's
    untrained models); `where` is its group in the plan, e.g. 'vgg' or 'lab_pair.plain'."""
    if isinstance(groups, Planned):
        return [(where, groups.cfg)]
    if isinstance(groups, RunConfig):
        return [(where, groups)]
    if isinstance(groups, dict):
        return [c for k, v in groups.items() for c in _configs(v, f"{where}.{k}" if where else str(k))]
    if isinstance(groups, (list, tuple)):
        return [c for v in groups for c in _configs(v, where)]
    return []


# Modules of labcore/exercises/ that are machinery, not a notebook's exercise.
RESERVED = ("exercise", "params")


@dataclass(frozen=True)
class Exercise:
    """A notebook and its module, checked to fit each other."""

    stem: str  # the notebook's name, e.g. "01_mlp_baseline"
    module: ModuleType  # labcore.exercises.<name>
    arguments: tuple[str, ...]  # the notebook parameters its plan reads, in the plan's order
    upstream: tuple[str, ...]  # the notebooks whose runs it reads


def module_name(stem: str) -> str:
    """'01_mlp_baseline' -> 'labcore.exercises.mlp_baseline' (a module name cannot start with a digit)."""
    prefix, _, name = stem.partition("_")
    if not (prefix.isdigit() and name.isidentifier()):
        raise ConfigError(f"notebook {stem!r} is not named NN_name (two digits, an underscore, a Python name); rename it")
    if name in RESERVED:
        raise ConfigError(f"notebook {stem!r} would share labcore/exercises/{name}.py with the exercise machinery; "
                          "rename the notebook")
    return f"labcore.exercises.{name}"


@functools.lru_cache(maxsize=None)
def load(stem: str) -> Exercise:
    """The exercise of notebook `stem`, with its plan's arguments checked against the notebook's parameters."""
    name = module_name(stem)
    path = f"labcore/exercises/{name.rsplit('.', 1)[1]}.py"
    if not (_params.NOTEBOOKS / f"{stem}.ipynb").is_file():
        raise ConfigError(f"no notebook notebooks/{stem}.ipynb for exercise module {path}")
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise ConfigError(f"notebooks/{stem}.ipynb has no exercise module: create {path} with a plan(...) function "
                          "(README: Adding an exercise)") from None
    plan = getattr(module, "plan", None)
    if not callable(plan):
        raise ConfigError(f"{path} has no plan(...) function; define one returning {{group: [Planned, ...]}}")
    upstream = tuple(getattr(module, "UPSTREAM", ()))
    arguments = tuple(inspect.signature(plan).parameters)
    if upstream and "upstream" not in arguments:
        raise ConfigError(f"{path} declares UPSTREAM {list(upstream)} but its plan(...) takes no `upstream` argument")
    if "upstream" in arguments and not upstream:
        raise ConfigError(f"{path}: plan(...) takes `upstream`, but the module declares no UPSTREAM notebooks")
    defaults = notebook_defaults(stem)
    for arg in arguments:
        if arg != "upstream" and arg not in defaults:
            raise ConfigError(f"{path}: plan(...) takes {arg!r}, which the parameters cell of notebooks/{stem}.ipynb "
                              f"does not define; add `{arg} = ...` there or rename the argument")
    for u in upstream:
        if not (_params.NOTEBOOKS / f"{u}.ipynb").is_file():
            raise ConfigError(f"{path}: UPSTREAM names {u!r}, which is not a notebook in notebooks/")
    return Exercise(stem, module, tuple(a for a in arguments if a != "upstream"), upstream)


def upstream_plans(stem: str, profile: str | None, _seen: tuple[str, ...] = (),
                   loaded: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """{stem: plan} of every notebook exercise `stem` declares in UPSTREAM, each planned from its own parameters in
    `profile` (from its parameters cell when `profile` is None). `loaded`: parameters already read in this build,
    {stem: parameters}, filled as it goes, so that each parameter file is read once."""
    out = {}
    for u in load(stem).upstream:
        if u in (*_seen, stem):
            raise ConfigError(f"upstream cycle: {' -> '.join((*_seen, stem, u))}; an exercise cannot read its own runs")
        out[u] = plan(u, _parameters_of(u, profile, loaded), profile, (*_seen, stem), loaded)
    return out


def _parameters_of(stem: str, profile: str | None, loaded: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Notebook `stem`'s parameters in `profile` (its parameters cell's without one), read once per `loaded`."""
    if profile is None:
        return notebook_defaults(stem)
    loaded = {} if loaded is None else loaded
    if stem not in loaded:
        loaded[stem] = merged_parameters(stem, profile)
    return copy.deepcopy(loaded[stem])  # a copy: nothing one page sets (`selected`) reaches another's parameters


def plan(stem: str, params: dict[str, Any], profile: str | None = None, _seen: tuple[str, ...] = (),
         loaded: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The plan of exercise `stem` with `params` (and, where it declares any, its upstream in `profile`)."""
    ex = load(stem)
    missing = [a for a in ex.arguments if a not in params]
    if missing:
        raise ConfigError(f"{stem} needs parameter {missing[0]!r} to plan its runs")
    kwargs = {a: params[a] for a in ex.arguments}
    if ex.upstream:
        kwargs["upstream"] = upstream_plans(stem, profile, _seen, loaded)
    return ex.module.plan(**kwargs)


def select(groups: Any, studies: list[str] | tuple[str, ...] | None) -> Any:
    """A plan with only the runs of `studies` (Planned.study; None: all). Every group keeps its place, emptied where
    none of its runs is selected; configs that are never trained (04's models at initialisation) stay."""
    if studies is None:
        return groups
    if isinstance(groups, Planned):
        return groups if groups.study in studies else None
    if isinstance(groups, dict):
        return {k: select(v, studies) for k, v in groups.items()}
    if isinstance(groups, (list, tuple)):
        kept = [select(v, studies) for v in groups]
        return type(groups)(v for v in kept if v is not None)
    return groups


def present(groups: dict[str, Any]) -> list[str]:
    """The groups of a plan that hold at least one run or config, and 'twins' where a group plans plain and residual
    twins of one model (a page's sections that need an absent group are left out: labcore.report.sections)."""
    names = [k for k, v in groups.items() if _configs(v)]
    twins = any(len({c.model.residual for _, c in _configs(v)}) == 2 for v in groups.values())
    return names + (["twins"] if twins else [])


def studies_of(groups: Any) -> list[str]:
    """The study names of every planned run in a plan, in order, once each."""
    return list(dict.fromkeys(p.study for p in flatten(groups)))


def checked(groups: Any, selected: list[str] | None = None, build_runs: list[str] | None = None) -> Any:
    """A plan, returned once every model in it is built on the meta device (here, the one place that checks), so an
    impossible one fails now, as a ConfigError, not mid-training; with `selected`, only those studies' runs
    (`select`: make report STUDIES=...). Notebooks wrap their plan in it. `build_runs`: the run keys `make report`
    planned for this page (its build plan, injected): the kernel must read exactly those, or it stops here."""
    for where, cfg in _configs(groups):
        check_buildable(cfg.model, SHAPES[cfg.data.name], len(CLASSES[cfg.data.name]), f"{where} ({cfg.label()})")
    out = select(groups, selected)
    if build_runs is not None:
        mine = {p.key for p in flatten(out)}
        if mine != set(build_runs):
            extra, lacking = sorted(mine - set(build_runs)), sorted(set(build_runs) - mine)
            raise ConfigError(f"this notebook plans other runs than its build planned ({len(extra)} more: "
                              f"{', '.join(extra[:3]) or '-'}; {len(lacking)} fewer: {', '.join(lacking[:3]) or '-'}); "
                              "a parameter was edited after the build planned: run `make report` again")
    return out


def planned_runs(stem: str, params: dict[str, Any], profile: str | None = None) -> list[Planned]:
    """Every run notebook `stem` trains or reads with `params` (only those of `params["selected"]` studies, where
    set), every model checked (`checked`)."""
    groups = checked(plan(stem, params, profile), params.get("selected"))
    return [Planned(p.cfg, p.checkpoints, (stem,), p.study) for p in flatten(groups)]


@dataclass(frozen=True)
class PagePlan:
    """One notebook's part of a build, planned once (`plan_page`): what its kernel is given and what its page reads."""

    params: dict[str, Any]  # its parameters in the profile, validated (with `selected` where STUDIES is set)
    runs: list[Planned]  # the runs it trains or reads (upstream ones included), each model checked
    present: tuple[str, ...]  # its plan's groups that hold runs or models (`present`): sections about others go
    studies: tuple[str, ...]  # every study its plan names, before any selection
    datasets: tuple[str, ...]  # every dataset it reads: its runs' and its parameters' data sections'


def plan_page(stem: str, profile: str, studies: list[str] | None = None,
              loaded: dict[str, dict[str, Any]] | None = None) -> PagePlan:
    """Notebook `stem`'s page in `profile`: its parameters merged and type-checked (labcore.exercises.params), its plan
    made with them, every model in it built on the meta device (`checked`); errors name the parameter file.
    `studies`: only those studies' runs (set as the notebook's `selected` parameter, which its plan passes to
    `checked`). `loaded`: parameters already read in this build (`upstream_plans`)."""
    loaded = {} if loaded is None else loaded
    params = _parameters_of(stem, profile, loaded)
    if studies is not None:
        params["selected"] = list(studies)
    try:
        groups = plan(stem, params, profile, loaded=loaded)
        chosen = checked(groups, params.get("selected"))
        if isinstance(params.get("probe"), dict) and isinstance(params.get("data"), dict):
            check_probe(params["probe"], params["data"])
    except ConfigError as exc:
        raise ConfigError(f"{parameter_file(stem, profile)}: {exc}") from None
    runs = [Planned(p.cfg, p.checkpoints, (stem,), p.study) for p in flatten(chosen)]
    datasets = {p.cfg.data.name for p in runs} | datasets_needed(params)
    return PagePlan(params, runs, tuple(present(chosen)), tuple(studies_of(groups)), tuple(sorted(datasets)))


def with_studies(pages: dict[str, PagePlan], studies: list[str], profile: str) -> dict[str, PagePlan]:
    """The pages that plan runs or models of `studies` (the others are named in one line); an unknown study is a
    ConfigError naming the known."""
    unknown = sorted(set(studies) - {s for page in pages.values() for s in page.studies})
    if unknown:
        raise ConfigError(f"STUDIES: no study {unknown[0]!r} in profile {profile}; its studies: "
                          + "; ".join(f"{stem}: {', '.join(page.studies)}" for stem, page in pages.items()))
    left = [stem for stem, page in pages.items() if not page.present]
    if left:
        print(f"[labcore] STUDIES={','.join(studies)}: {', '.join(left)} left out (none of their runs is selected)",
              flush=True)
    return {stem: page for stem, page in pages.items() if page.present}


def parameters(stem: str, profile: str, studies: list[str] | None = None) -> dict[str, Any]:
    """Notebook `stem`'s parameters in `profile`, validated, its plan checked with them (`plan_page`)."""
    return plan_page(stem, profile, studies).params


def profile_parameters(stem: str, profile: str | None, current: dict[str, Any]) -> dict[str, Any]:
    """For a notebook opened in JupyterLab with its `profile` parameter set: that profile's parameters, exactly as
    `make report` gives them (validated), for every parameter whose `current` value is still the parameters cell's
    default. A value set otherwise wins: one the user edited, or one `make report` injected. {} when `profile` is
    None, and in a kernel `make report` started (`build_runs` set): the build injected every parameter of its plan,
    so the page's own parameter file is not read again there (04's kernel still reads its upstream's, to plan the
    runs it checks against `build_runs`)."""
    if profile is None or current.get("build_runs") is not None:
        return {}
    from labcore.exercises.params import PROFILES

    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r}: choose one of {', '.join(PROFILES)}, or None for this notebook's "
                          "own small defaults")
    defaults = notebook_defaults(stem)
    out = {}
    for k, v in parameters(stem, profile).items():
        if k == "profile":
            continue
        if isinstance(v, dict) and isinstance(current.get(k), dict) and isinstance(defaults.get(k), dict):
            out[k] = _merge_edited(v, current[k], defaults[k])  # key by key: one edited key keeps the others
        elif current.get(k) == defaults.get(k):
            out[k] = v
    edited = [k for k in defaults if k != "profile" and current.get(k) != defaults[k]]
    lacking = ("trained here (train_missing = True)" if current.get("train_missing") else
               f"named with the command that trains them (`make train PROFILE={profile}`)")
    print(f"[labcore] profile {profile}: {parameter_file(stem, profile)} applied"
          + (f" (yours kept where you edited {', '.join(edited)})" if edited else "")
          + f"; runs are read from the run store, those it lacks {lacking}", flush=True)
    return out


def _merge_edited(profile: dict[str, Any], current: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """A dict parameter under a profile: the profile's value of every key still at the parameters cell's default,
    the current value of every key the user edited (or added), nested dicts likewise."""
    out = dict(profile)
    for key, value in current.items():
        if isinstance(value, dict) and isinstance(profile.get(key), dict) and isinstance(default.get(key), dict):
            out[key] = _merge_edited(profile[key], value, default[key])
        elif key not in default or value != default[key]:
            out[key] = value
    return out


def step_that_trained(results: list) -> tuple[Any, str]:
    """(the step method that trained `results`, why a page shows it): the seeds stacked into one model
    (labcore.core.step.Stacked, how MLP seeds train on a CPU) where any of them trained fused, else a model alone."""
    from labcore.core.step import Alone, Stacked

    fused = [r for r in results if len(r.fused) > 1]
    if fused:
        return Stacked.step, (f"the step that trained these runs: their {len(fused[0].fused)} seeds stacked into one "
                              "model, each on its own batch (vmap), then one loss, backward and optimizer step")
    return Alone.step, "the step that trained these runs: forward, loss, backward, optimizer step"
