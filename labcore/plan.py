"""Plans: every run a profile's notebooks need, derived from the parameter files without executing a notebook.

Each exercise has one function here that turns its parameters into the runs it trains. The notebook
calls it (and fetches the results from the run store), and so does the planner behind `make plan` and
`make train`, so what is planned is exactly what the notebook will ask for:

    python -m labcore.plan --profile quick [--only 02_cnn_depth]

Runs two notebooks share are planned once (`merge`): 03 contains all of 02's runs (03's parameter files
include 02's), and 04 trains nothing of its own: it declares the notebooks whose runs it reads (its `upstream`
parameter: 03's plain and residual ConvNet twins, which it gives per-epoch weights, 01's first MLP run, 03's VGG
and ResNet ranking), and they are planned from those notebooks' own parameters in the same profile.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from . import sweep
from .config import ConfigError, ModelConfig, RunConfig, from_dict
from .data import CLASSES, SHAPES, DataNotFoundError
from .models import check_buildable
from .params import check_probe, check_selection, notebook_defaults, notebook_stems, parse_only, resolve_parameters
from .paths import runs_dir


@dataclass(frozen=True)
class Planned:
    """One run a notebook needs: its config, the epochs whose weights it needs, and who needs it."""

    cfg: RunConfig
    checkpoints: tuple[int, ...] = ()  # epochs whose weights are kept (0 = initialisation)
    notebooks: tuple[str, ...] = field(default=(), compare=False)
    study: str = field(default="runs", compare=False)  # the group it belongs to in its notebook (W&B's group)

    @property
    def key(self) -> str:
        """The run store's key (the config's hash)."""
        return self.cfg.key()


def every_epoch(cfg: RunConfig) -> tuple[int, ...]:
    """Checkpoints at initialisation and after every epoch (a few kB each for the models that use them)."""
    return tuple(range(cfg.train.epochs + 1))


# ---------------------------------------------------------------- one function per exercise

def mlp_baseline(data: dict, model: dict, train: dict, seeds: list[int], long_epochs: int) -> dict[str, list[Planned]]:
    """Exercise 01: the lab's MLP once per seed (weights after every epoch, for 04), and a longer run per seed."""
    if not seeds:
        raise ConfigError("seeds is empty; give at least one seed, e.g. seeds: [0]")
    configs = [RunConfig.build(data, model, train, seed=s) for s in seeds]
    return {"runs": [Planned(c, every_epoch(c), study="runs") for c in configs],
            "long": [Planned(c.replace(train={"epochs": long_epochs}), study="long") for c in configs]}


def depth_studies(studies: dict, data: dict, train: dict, seeds: list[int], residual: list[bool]) -> dict[str, list[Planned]]:
    """Exercises 02 and 03: every study x sweep x residual flag x seed (see labcore.sweep)."""
    if not seeds:
        raise ConfigError("seeds is empty; give at least one seed, e.g. seeds: [0]")
    return {name: [Planned(c, study=name) for c in cfgs]
            for name, cfgs in sweep.expand(studies, data, train, seeds, residual).items()}


UPSTREAM_KEYS = {"mlp": "exercise 01's MLP (its first seed, with per-epoch weights)",
                 "ranking": "the VGG16/19/24 and ResNet18/34 runs of the ranking (studies 'vgg' and 'resnet')",
                 "deep": "the plain and residual twins of study `deep_study` at `deep_depths` (given per-epoch weights)"}


def _upstream_plan(key: str, stem: str, profile: str) -> dict[str, Any]:
    """The runs notebook `stem` plans in `profile`, from its own parameters (for 04's `upstream.<key>`)."""
    if stem not in EXERCISES:
        raise ConfigError(f"upstream.{key}: no exercise notebook {stem!r}; choose one of: {', '.join(EXERCISES)}")
    if "upstream" in notebook_defaults(stem):  # it reads runs itself: planning from it would go round in circles
        raise ConfigError(f"upstream.{key}: {stem} reads other notebooks' runs itself; name the notebook that trains them")
    params = resolve_parameters(stem, profile)
    return EXERCISES[stem](**{n: params[n] for n in inspect.signature(EXERCISES[stem]).parameters})


def _deep_twins(study: list[Planned], name: str, stem: str, depths: list[int]) -> dict[tuple[int, bool], list[Planned]]:
    """The plain and residual runs of `study` at `depths`, every seed, with weights after every epoch."""
    found: dict[tuple[int, bool], list[Planned]] = {}
    for p in study:
        found.setdefault((p.cfg.model.depth, p.cfg.model.residual), []).append(p)
    for d in depths:
        for res in (False, True):
            if (d, res) not in found:
                have = sorted({f"{dd} ({'residual' if r else 'plain'})" for dd, r in found})
                raise ConfigError(f"deep_depths: {stem}'s study {name!r} has no {'residual' if res else 'plain'} run at "
                                  f"depth {d}; it has {', '.join(have)}. Add {d} to that study's sweep, or probe one of those")
    return {(d, res): [Planned(p.cfg, every_epoch(p.cfg), study=p.study) for p in found[(d, res)]]
            for d in depths for res in (False, True)}


def gradient_flow(deep_study: str, deep_depths: list[int], short_epochs: int, lab_plain_model: dict,
                  lab_residual_model: dict, init_seeds: list[int], probe: dict, profile: str,
                  upstream: dict[str, str]) -> dict[str, Any]:
    """Exercise 04: it trains nothing of its own. It reads, as declared in `upstream`, plain and residual twins
    from a depth study (probed over training: they get weights after every epoch), exercise 01's first MLP run
    and the ranking's VGG/ResNet runs, all planned from those notebooks' own parameters in `profile`.
    Also returned, never trained: the lab's two models at initialisation ('lab_pair', one config per init seed),
    on the twins' data, which is also where the probe's images come from."""
    unknown = sorted(set(upstream) - set(UPSTREAM_KEYS))
    if unknown:
        raise ConfigError(f"upstream: unknown key {unknown[0]!r}; valid: {', '.join(UPSTREAM_KEYS)}")
    absent = [k for k in UPSTREAM_KEYS if k not in upstream]
    if absent:
        raise ConfigError(f"upstream: name the notebook for {absent[0]!r} ({UPSTREAM_KEYS[absent[0]]})")
    if not deep_depths or not init_seeds:
        raise ConfigError("deep_depths and init_seeds must each name at least one value")
    source = {key: _upstream_plan(key, stem, profile) for key, stem in upstream.items()}
    if "runs" not in source["mlp"]:
        raise ConfigError(f"upstream.mlp: {upstream['mlp']} plans no MLP runs; name 01_mlp_baseline")
    if not {"vgg", "resnet"} <= set(source["ranking"]):
        raise ConfigError(f"upstream.ranking: {upstream['ranking']} has no 'vgg' and 'resnet' studies; name 03_residual")
    if deep_study not in source["deep"]:
        raise ConfigError(f"deep_study: {upstream['deep']} has no study {deep_study!r}; "
                          f"its studies: {', '.join(source['deep'])}")
    deep = _deep_twins(source["deep"][deep_study], deep_study, upstream["deep"], deep_depths)
    base = next(iter(deep.values()))[0].cfg  # the twins' data: the probe's images and the lab pair's inputs
    epochs = base.train.epochs
    if not 1 <= short_epochs <= epochs:
        raise ConfigError(f"short_epochs={short_epochs}: must be between 1 and the twins' {epochs} epochs")
    check_probe(probe, dataclasses.asdict(base.data))
    lab_pair = {}
    for name, model in (("plain", lab_plain_model), ("residual", lab_residual_model)):
        cfgs = [RunConfig(base.data, from_dict(ModelConfig, model, f"lab_{name}_model"), base.train, s) for s in init_seeds]
        check_buildable(cfgs[0].model, SHAPES[base.data.name], len(CLASSES[base.data.name]), f"lab_{name}_model")
        lab_pair[name] = cfgs
    return {"deep": deep, "mlp": [source["mlp"]["runs"][0]],
            "ranking": source["ranking"]["vgg"] + [p for p in source["ranking"]["resnet"] if p.cfg.model.residual],
            "lab_pair": lab_pair}


EXERCISES: dict[str, Callable[..., dict]] = {
    "01_mlp_baseline": mlp_baseline,
    "02_cnn_depth": depth_studies,
    "03_residual": depth_studies,
    "04_gradient_flow": gradient_flow,
}


def flatten(groups: Any) -> list[Planned]:
    """All Planned runs in a nested dict/list structure, in order."""
    if isinstance(groups, Planned):
        return [groups]
    if isinstance(groups, dict):
        return [p for v in groups.values() for p in flatten(v)]
    if isinstance(groups, (list, tuple)):
        return [p for v in groups for p in flatten(v)]
    return []


def notebook_runs(stem: str, params: dict[str, Any]) -> list[Planned]:
    """Every run notebook `stem` trains with `params`; each model is built on the meta device first,
    so an impossible one fails now, as a ConfigError, not mid-training."""
    fn = EXERCISES.get(stem)
    if fn is None:
        return []
    names = inspect.signature(fn).parameters
    missing = [n for n in names if n not in params]
    if missing:
        raise ConfigError(f"{stem} needs parameter {missing[0]!r} to plan its runs")
    planned = flatten(fn(**{n: params[n] for n in names}))
    for p in planned:
        check_buildable(p.cfg.model, SHAPES[p.cfg.data.name], len(CLASSES[p.cfg.data.name]), p.cfg.label())
    return [Planned(p.cfg, p.checkpoints, (stem,), p.study) for p in planned]


def merge(planned: Iterable[Planned]) -> list[Planned]:
    """One entry per run key, in first-seen order: checkpoints and notebooks are united."""
    out: dict[str, Planned] = {}
    for p in planned:
        if p.key in out:
            q = out[p.key]
            p = Planned(q.cfg, tuple(sorted(set(q.checkpoints) | set(p.checkpoints))),
                        tuple(dict.fromkeys(q.notebooks + p.notebooks)), q.study)
        out[p.key] = p
    return list(out.values())


def profile_runs(profile: str, only: list[str] | None = None,
                 resolved: dict[str, dict] | None = None) -> list[Planned]:
    """Every distinct run the profile's notebooks (or `only` those) need, validated; `resolved` maps
    stems to parameters already resolved (so a caller that has them does not resolve them again)."""
    resolved = resolved or {stem: resolve_parameters(stem, profile) for stem in only or notebook_stems()}
    return merge(p for stem, params in resolved.items() for p in notebook_runs(stem, params))


def default_profile() -> tuple[str, str]:
    """(profile, why) for a user who named none: `full` with a CUDA GPU or a Ray cluster, else `quick`."""
    import torch

    if torch.cuda.is_available():
        return "full", f"a CUDA GPU is available ({torch.cuda.get_device_name(0)})"
    if os.environ.get("RAY_ADDRESS"):
        return "full", f"RAY_ADDRESS names a Ray cluster ({os.environ['RAY_ADDRESS']})"
    return "quick", "no CUDA GPU and no RAY_ADDRESS here"


def choose_profile(given: str, device: str = "auto") -> tuple[str, str | None]:
    """The profile to use and, when the user named none, the first line to print: which one was
    picked and why, how to ask for the other, and what the other would cost here (estimate)."""
    if given:
        return given, None
    profile, why = default_profile()
    other = "quick" if profile == "full" else "full"
    cost = describe(other, device=device)
    cost = f"about {human_seconds(cost['pending_seconds'])} of compute here (estimate)" if cost["pending_seconds"] else "nothing left to train"
    return profile, (f"profile {profile}: picked because {why}. PROFILE={other} would need {cost}; "
                     f"ask for it with PROFILE={other} (PROFILE=smoke checks the pipeline in seconds)")


# ---------------------------------------------------------------- status and estimates

STATUS_COLUMNS = ("key", "label", "dataset", "family", "depth", "residual", "seed", "epochs", "notebooks", "state")


def status_table(planned: list[Planned], store=None) -> pd.DataFrame:
    """One row per planned run: family, depth, variant, seed, notebooks, and its state in the store
    ('stored', 'pending', 'failed' or 'damaged')."""
    from .runs import RunStore

    store = store or RunStore()
    rows = []
    for p in planned:
        m = p.cfg.model
        rows.append({"key": p.key, "label": p.cfg.label(), "dataset": p.cfg.data.name, "family": m.family,
                     "depth": m.depth, "residual": m.residual, "seed": p.cfg.seed, "epochs": p.cfg.train.epochs,
                     "notebooks": ",".join(p.notebooks), "state": store.state(p.cfg, p.checkpoints)})
    return pd.DataFrame(rows, columns=list(STATUS_COLUMNS))


def summary_line(profile: str, table: pd.DataFrame, pending_seconds: float | None, device: str) -> str:
    """The plan in one line: runs in total, stored, pending (and failed), and the estimated compute."""
    counts = table["state"].value_counts() if len(table) else pd.Series(dtype=int)
    pending = int(counts.get("pending", 0) + counts.get("damaged", 0))
    line = f"plan {profile}: {len(table)} runs, {int(counts.get('stored', 0))} stored, {pending} pending"
    if counts.get("failed", 0):
        line += f", {int(counts['failed'])} failed (retry with RETRY_FAILED=1)"
    if pending and pending_seconds is not None:
        line += f"; about {human_seconds(pending_seconds)} of compute on {device} (estimate)"
    return line


def human_seconds(s: float) -> str:
    """12 s, 3.4 min, 2.1 h or 3.2 days."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def by_family(table: pd.DataFrame, estimates: dict[str, float] | None = None) -> pd.DataFrame:
    """Counts per dataset, family, depth and variant: runs, stored, pending, and pending compute (estimate)."""
    t = table.assign(variant=table.residual.map({True: "residual", False: "plain"}),
                     stored=table.state.eq("stored"), pending=table.state.isin(["pending", "damaged"]),
                     failed=table.state.eq("failed"))
    t["pending_s"] = [estimates.get(k, float("nan")) if (estimates and p) else 0.0 for k, p in zip(t.key, t.pending)]
    out = t.groupby(["dataset", "family", "depth", "variant"]).agg(
        runs=("key", "size"), stored=("stored", "sum"), pending=("pending", "sum"), failed=("failed", "sum"),
        pending_min=("pending_s", lambda s: s.sum() / 60)).reset_index()
    return out


def describe(profile: str, only: list[str] | None = None, device: str = "auto", calibrate: bool = True,
             store=None, resolved: dict[str, dict] | None = None, threads: int | None = None) -> dict[str, Any]:
    """The plan of a profile: its runs with their state, estimates for every run not stored (failed ones
    too, for RETRY_FAILED) on `device` from a cached calibration, the estimated compute of the pending
    ones, and the peak memory of the largest pending run. `threads`: estimate for runs that train with
    that many CPU threads (a Ray task's), not all of this process's."""
    from . import calibrate as cal
    from .runs import RunStore

    store = store or RunStore()
    planned = profile_runs(profile, only, resolved)
    table = status_table(planned, store)
    unstored = [p for p, s in zip(planned, table.state) if s != "stored"]
    pending = [p for p, s in zip(planned, table.state) if s in ("pending", "damaged")]
    with cal.threads(threads):  # the device's name and its step times, both at the threads a run will get
        estimates, peak, total, dev = {}, None, None, cal.device_name(device)
        costs = cal.calibrate([p.cfg for p in unstored], device) if calibrate and unstored else {}
    if costs:
        estimates = {p.key: cal.estimate_seconds(p.cfg, costs) for p in unstored}
        total = sum(estimates[p.key] for p in pending) if pending else None
        if pending:
            largest = max(pending, key=lambda p: cal.peak_bytes(p.cfg, costs))
            peak = (largest.cfg.label(), cal.peak_bytes(largest.cfg, costs))
    return {"profile": profile, "planned": planned, "table": table, "estimates": estimates,
            "pending_seconds": total, "peak": peak, "device": dev, "store": store,
            "summary": summary_line(profile, table, total, dev)}


def print_plan(d: dict[str, Any], file=sys.stdout) -> None:
    """The plan as `make plan` prints it: the summary line, the table by family, the largest run."""
    print(d["summary"], file=file)
    if len(d["table"]):
        fam = by_family(d["table"], d["estimates"])
        print(fam.to_string(index=False, float_format=lambda v: f"{v:.1f}"), file=file)
    if d["peak"]:
        label, nbytes = d["peak"]
        print(f"largest pending run: {label}, peak memory about {nbytes / 2**20:.0f} MiB (estimate)", file=file)
    acc = d["store"].estimate_accuracy([p.cfg for p in d["planned"]])
    if acc is not None:
        print(f"calibration so far: {acc['runs']} finished runs took {acc['median_ratio']:.2f}x their estimate "
              f"(median; range {acc['min_ratio']:.2f}-{acc['max_ratio']:.2f}x)", file=file)


def main(argv: list[str] | None = None) -> int:
    """`make plan`: print what a profile would train, without training."""
    parser = argparse.ArgumentParser(description="Print the runs a profile needs, what is stored, and what the rest would cost.")
    parser.add_argument("--profile", default="", help="smoke, quick or full (default: full with a GPU or Ray cluster, else quick)")
    parser.add_argument("--only", default="", help="comma-separated notebook stems")
    parser.add_argument("--device", default="auto", help="device to estimate for: cpu, cuda, ... (default: auto)")
    parser.add_argument("--no-calibrate", action="store_true", help="skip the step timing (counts only)")
    args = parser.parse_args(argv)
    try:
        profile, first = choose_profile(args.profile, args.device)
        only = parse_only(args.only)
        check_selection(profile, only)
        if first:
            print(first)
        print_plan(describe(profile, only, args.device, calibrate=not args.no_calibrate))
        print(f"run store: {runs_dir()}")
        sys.stdout.flush()  # a closed pipe fails here, inside the try, rather than at exit
    except (ConfigError, DataNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `make plan | head`: the reader has what it wanted; no traceback, no second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
