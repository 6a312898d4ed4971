"""Plans of whole profiles: every run a profile's notebooks need, merged, with its state in the run store and the
estimated cost of what is pending; which profile to use when none is named; `make plan`.

    python -m labcore plan --profile quick [--only 02_cnn_depth]

Each exercise's own plan lives in its module (labcore.exercises.exercise, labcore/exercises/); the notebook calls it too,
so what is planned here is exactly what the notebook will ask for. Runs several notebooks share are planned
once (`merge`): 03 contains all of 02's runs (03's parameter files write out 02's), and 04 trains nothing of its
own: it reads 01's and 03's runs, declared as its UPSTREAM.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labcore.exercises import exercise
from labcore import machine
from labcore.text import human_seconds, count
from labcore.core.config import ConfigError
from labcore.store.planned import Planned
from labcore.exercises.exercise import PagePlan
from labcore.exercises.params import PROFILES, notebook_stems
from labcore.store.runs import TO_TRAIN, RunStore, to_train_states


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


def check_selection(profile: str, only: list[str] | None) -> None:
    """A one-line ConfigError for an unknown profile or notebook name."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    stems = notebook_stems()
    for name in only or []:
        if name not in stems:
            raise ConfigError(f"no notebook named {name!r}; available: {', '.join(stems)}")


@dataclass(frozen=True)
class BuildPlan:
    """A build worked out once (`build_plan`): each page's plan (its validated parameters, the runs its notebook
    trains or reads, upstream ones included, the sections it keeps, the data it reads) and every distinct run of the
    build, merged (with the checkpoints any page needs). Training, page reuse, the pages' sections and the notebooks'
    kernels read it; `to_json` is reports/<profile>/plan.json."""

    profile: str
    pages: dict[str, PagePlan]  # stem -> its page's plan, in build order
    runs: list[Planned]  # every distinct run

    def to_json(self, states: dict[str, str] | None = None) -> dict[str, Any]:
        """The plan for people and tools: pages (parameters, run keys, the sections their runs fill, the datasets
        they read) and runs (key, label, config, checkpoints; with `states`, each run's state in the store, as
        `make plan JSON=1` prints it)."""
        return {"profile": self.profile,
                "pages": {stem: {"parameters": page.params, "runs": [p.key for p in page.runs],
                                 "sections": list(page.present), "datasets": list(page.datasets)}
                          for stem, page in self.pages.items()},
                "runs": [{"key": p.key, "label": p.cfg.label(), "notebooks": list(p.notebooks), "study": p.study,
                          "checkpoints": list(p.checkpoints), "config": p.cfg.to_dict()}
                         | ({"state": states[p.key]} if states else {}) for p in self.runs]}


def build_plan(profile: str, only: list[str] | None = None, studies: list[str] | None = None) -> BuildPlan:
    """The one place a build plans: every selected notebook's page (labcore.exercises.exercise.plan_page: parameters
    validated, runs planned and checked), each parameter file read once, then every distinct run of the build
    (labcore.report.build computes it once and passes it on; `make train`, `make plan`, `make verify` and the
    estimates read the same value). With `only`, each run also keeps the checkpoints the profile's other notebooks
    need of it, so that building them later retrains nothing (04 probes 01's and 03's runs at every epoch).
    `studies`: only those studies' runs, and only the pages that plan any of them."""
    check_selection(profile, only)
    loaded: dict[str, dict[str, Any]] = {}  # each notebook's parameters, read once for every page that needs them
    pages = {stem: exercise.plan_page(stem, profile, studies, loaded) for stem in only or notebook_stems()}
    if studies is not None:  # first: a page STUDIES leaves out is one of the "other" notebooks below
        pages = exercise.with_studies(pages, studies, profile)
    wanted: dict[str, set[str]] = {}
    for stem in [s for s in notebook_stems() if s not in pages] if only else []:
        try:  # where another notebook's parameters do not plan, this build goes on; building that one says why
            others = exercise.plan_page(stem, profile, None, loaded).runs
        except ConfigError as exc:
            print(f"[labcore] {stem} not planned, so its checkpoints are not kept: {exc}", file=sys.stderr)
            continue
        for p in others:
            wanted.setdefault(p.key, set()).update(p.checkpoints)
    runs = [Planned(p.cfg, tuple(sorted(set(p.checkpoints) | wanted.get(p.key, set()))), p.notebooks, p.study)
            for p in merge(p for page in pages.values() for p in page.runs)]
    return BuildPlan(profile, pages, runs)


def plan_json(built: BuildPlan, store: RunStore) -> dict[str, Any]:
    """`built` as plan.json holds it, each run with its state in `store` (`make plan JSON=1`)."""
    return built.to_json(dict(zip([p.key for p in built.runs], status_table(built.runs, store).state)))


def profile_runs(profile: str, only: list[str] | None = None, studies: list[str] | None = None) -> list[Planned]:
    """Every distinct run the profile's notebooks (or `only` those) need: the runs of its build plan."""
    return build_plan(profile, only, studies).runs


def default_profile() -> tuple[str, str]:
    """(profile, why) for a user who named none: `full` with a CUDA GPU or a Ray cluster, else `quick`."""
    import torch

    if torch.cuda.is_available():
        return "full", f"a CUDA GPU is available ({torch.cuda.get_device_name(0)})"
    if os.environ.get("RAY_ADDRESS"):
        return "full", f"RAY_ADDRESS names a Ray cluster ({os.environ['RAY_ADDRESS']})"
    return "quick", "no CUDA GPU and no RAY_ADDRESS here"


def choose_profile(given: str) -> tuple[str, str | None]:
    """The profile to use and, when the user named none, the first line to print (at once, before any planning):
    which one was picked, why, and how to ask for the others."""
    if given:
        return given, None
    profile, why = default_profile()
    other = "quick" if profile == "full" else "full"
    return profile, (f"profile {profile}: picked because {why}; PROFILE={other} for "
                     f"{'the lab' + chr(39) + 's settings' if other == 'full' else 'a laptop-sized run'}, "
                     "PROFILE=smoke to check the pipeline in seconds")


def other_cost(profile: str, device: str = "auto") -> str:
    """One line on what the profile not picked would cost here: from the cached calibration if it covers every
    architecture (measuring nothing), else how to ask for it."""
    other = "quick" if profile == "full" else "full"
    d = describe(build_plan(other), device=device, calibrate="cached")
    if d["pending_seconds"] is None and any(d["table"]["state"].isin(TO_TRAIN)):
        return f"PROFILE={other}: `make plan PROFILE={other}` estimates what it would cost here"
    if d["pending_seconds"] is None:
        return f"PROFILE={other}: every run is stored already"
    return f"PROFILE={other} would need about {human_seconds(d['pending_seconds'])} of compute here (estimate)"


# ---------------------------------------------------------------- status and estimates

STATUS_COLUMNS = ("key", "label", "dataset", "family", "depth", "residual", "seed", "epochs", "notebooks", "state")


def status_table(planned: list[Planned], store=None) -> pd.DataFrame:
    """One row per planned run: family, depth, variant, seed, notebooks, and its state in the store
    ('stored', 'pending', 'failed' or 'damaged')."""
    store = store or RunStore()
    rows = []
    for p in planned:
        m = p.cfg.model
        rows.append({"key": p.key, "label": p.cfg.label(), "dataset": p.cfg.data.name, "family": m.family,
                     "depth": m.depth, "residual": m.residual, "seed": p.cfg.seed, "epochs": p.cfg.train.epochs,
                     "notebooks": ",".join(p.notebooks), "state": store.state(p.cfg, p.checkpoints)})
    return pd.DataFrame(rows, columns=list(STATUS_COLUMNS))


def summary_line(profile: str, table: pd.DataFrame, pending_seconds: float | None, device: str,
                 stale: str = "") -> str:
    """The plan in one line: runs in total, stored, pending, stale (with `stale`: what changed) and failed, and the
    estimated compute of what `make train` would train."""
    counts = table["state"].value_counts() if len(table) else pd.Series(dtype=int)
    pending = int(counts.get("pending", 0))
    line = f"plan {profile}: {count(len(table), 'run')}, {int(counts.get('stored', 0))} stored, {pending} pending"
    if counts.get("stale", 0):
        line += f", {int(counts['stale'])} stale ({stale})"
    if counts.get("damaged", 0):
        line += f", {int(counts['damaged'])} damaged (files changed after training; `make train` retrains them)"
    pending += int(counts.get("stale", 0) + counts.get("damaged", 0))
    if counts.get("failed", 0):
        line += f", {int(counts['failed'])} failed (retry with RETRY_FAILED=1)"
    if pending and pending_seconds is not None:
        line += f"; about {human_seconds(pending_seconds)} of compute on {device} (estimate)"
    return line


def stale_summary(planned: list[Planned], table: pd.DataFrame, store) -> str:
    """What made the stale runs stale, each reason once with its count: '3 trained by other code
    (labcore/core/models.py)'."""
    reasons: dict[str, int] = {}
    for p, s in zip(planned, table.state):
        if s == "stale":
            for why in (store.staleness(p.cfg) or "").split("; "):
                reasons[why] = reasons.get(why, 0) + 1
    return "; ".join(f"{n} {why}" if n != len(table[table.state == "stale"]) else why for why, n in reasons.items())


def by_family(table: pd.DataFrame, estimates: dict[str, float] | None = None) -> pd.DataFrame:
    """Counts per dataset, family, depth and variant: runs, stored, pending, stale, damaged, failed, and the compute
    of what `make train` would train (estimate)."""
    t = table.assign(variant=table.residual.map({True: "residual", False: "plain"}),
                     stored=table.state.eq("stored"), pending=table.state.eq("pending"),
                     stale=table.state.eq("stale"), damaged=table.state.eq("damaged"), failed=table.state.eq("failed"))
    t["pending_s"] = [estimates.get(k, float("nan")) if (estimates and p) else 0.0
                      for k, p in zip(t.key, t.pending | t.stale | t.damaged)]
    out = t.groupby(["dataset", "family", "depth", "variant"]).agg(
        runs=("key", "size"), stored=("stored", "sum"), pending=("pending", "sum"), stale=("stale", "sum"),
        damaged=("damaged", "sum"), failed=("failed", "sum"),
        pending_min=("pending_s", lambda s: s.sum() / 60)).reset_index()
    return out


def _step_costs(unstored: list[Planned], members: dict[str, int], device: str, calibrate: bool | str,
                threads: int | None) -> tuple[dict[str, dict], str]:
    """The calibrated step costs of the architectures not stored (labcore.engine.calibrate), alone and for each
    size of fused group, at the threads a run will get; and the device's name. Empty when `calibrate` is
    "cached" and the cache does not cover them all, or False."""
    from labcore.engine import calibrate as cal

    sizes = sorted({n for n in members.values() if n > 1})
    with machine.threads(threads):  # the device's name and its step times, both at the threads a run will get
        dev = cal.device_name(device)
        costs: dict[str, dict] = {}
        for n in [1] + sizes:  # each run alone, and the fused groups of each size
            cfgs = [p.cfg for p in unstored] if n == 1 else [p.cfg for p in unstored if members[p.key] == n]
            if not (calibrate and cfgs):
                continue
            got = cal.coarse(cfgs, device, members=n) if calibrate == "coarse" else \
                cal.calibrate(cfgs, device, cached_only=calibrate == "cached", members=n)
            if not got:  # "cached" and not all of them are: no estimate at all
                return {}, dev
            costs.update(got)
    return costs, dev


def describe(built: BuildPlan, device: str = "auto", calibrate: bool | str = True, store=None,
             threads: int | None = None, fuse: str = "auto", fuse_device: Any = None,
             retry_failed: bool = False) -> dict[str, Any]:
    """The build plan `built` with each run's state, estimates for every run not stored (failed ones too, for
    RETRY_FAILED) on `device` from a cached calibration, the estimated compute of the pending ones, and the peak
    memory of the largest pending run. `threads`: estimate for runs that train with that many CPU threads (a Ray
    task's), not all of this process's. `calibrate`: True times every architecture not timed yet (cached),
    "coarse" only a few (calibrate.coarse), "cached" none (estimates only where the cache covers every
    architecture), False none at all (counts only). `fuse`, `fuse_device` (default: `device`'s) and
    `retry_failed`: the runs are grouped as `make train` will (labcore.engine.jobs): a fused run's estimate is its
    share of its group's; `alone_estimates` and `alone_seconds` are what training each alone would take;
    `overhead`: the seconds a run takes besides (setup, test pass), as stored runs here took (None: none told)."""
    from labcore.engine import calibrate as cal
    from labcore.engine.jobs import group_jobs, overhead_per_run

    store = store or RunStore()
    profile, planned = built.profile, built.runs
    table = status_table(planned, store)
    unstored = [p for p, s in zip(planned, table.state) if s != "stored"]
    pending = [p for p, s in zip(planned, table.state) if s in TO_TRAIN]
    todo = [p for p, s in zip(planned, table.state) if s in to_train_states(retry_failed)]
    members = {p.key: 1 for p in unstored}
    members.update({p.key: len(job) for job in group_jobs(todo, fuse_device or machine.pick_device(device), fuse)
                    for p in job})
    costs, dev = _step_costs(unstored, members, device, calibrate, threads)
    estimates, alone_estimates, peak, total, alone, extra = {}, {}, None, None, None, None
    if costs:  # what finished runs of the same architectures took here beats a few timed steps
        done = [r for r in (store.get(p.cfg) for p, s in zip(planned, table.state) if s == "stored") if r is not None]
        extra = overhead_per_run(done, dev)
        for key, seen in cal.learned(done, dev).items():
            if key in costs:
                costs[key] = {**costs[key], **seen, "coarse": False}
        estimates = {p.key: cal.estimate_seconds(p.cfg, costs, members[p.key]) for p in unstored}
        alone_estimates = {p.key: cal.estimate_seconds(p.cfg, costs) for p in unstored}
        total = sum(estimates[p.key] for p in pending) if pending else None
        alone = sum(alone_estimates[p.key] for p in pending) if pending else None
        if pending:
            largest = max(pending, key=lambda p: cal.peak_bytes(p.cfg, costs, members[p.key]))
            peak = (largest.cfg.label() + (f" with {members[largest.key]} seeds fused" if members[largest.key] > 1
                                           else ""), cal.peak_bytes(largest.cfg, costs, members[largest.key]))
    n_coarse = sum(bool(c.get("coarse")) for c in costs.values())
    summary = summary_line(profile, table, total, dev, stale_summary(planned, table, store))
    if extra and pending and total is not None:
        summary += (f", and about {human_seconds(extra[0] * len(pending))} of setting up and testing them "
                    f"({extra[0]:.1f} s a run, as {count(extra[1], 'stored run')} here took)")
    n_fused = sum(members[p.key] > 1 for p in pending)
    if n_fused and total is not None:
        summary += f", {n_fused} of them fused with their other seeds ({human_seconds(alone)} one by one: FUSE=off)"
    if n_coarse and total is not None:
        summary += (f"; coarse: {n_coarse} of {len(costs)} architectures estimated from their FLOPs, not timed "
                    "(`make train` times each first; `make plan EXACT=1` now)")
    summary += precision_note(pending, estimates, total, device, calibrate if costs else False)
    summary += "".join(f"\n[labcore] damaged: {p.cfg.label()} ({p.key}): {store.damage(p.cfg)}"
                       for p, s in zip(planned, table.state) if s == "damaged")
    return {"profile": profile, "planned": planned, "table": table, "estimates": estimates,
            "alone_estimates": alone_estimates,
            "pending_seconds": total, "alone_seconds": alone, "peak": peak, "device": dev, "store": store,
            "summary": summary, "members": members, "overhead": extra[0] if extra else None}


def precision_note(pending: list[Planned], estimates: dict[str, float], total: float | None, device: str,
                   calibrate: bool | str) -> str:
    """What train.precision 'auto' means for the pending runs here: bf16 autocast or fp32, why, and (where bf16)
    about how long they would take in fp32 (each of their architectures timed in fp32 too)."""
    from labcore.engine import calibrate as cal

    auto = [p for p in pending if p.cfg.train.precision == "auto"]
    if not auto:
        return ""
    native, why = machine.native_bf16(machine.pick_device(device))
    note = (f"; precision auto: {count(len(auto), 'run')} in {'bfloat16 autocast' if native else 'fp32'} here ({why})")
    if not (native and calibrate and total is not None and all(p.key in estimates for p in auto)):
        return note
    fp32 = [p.cfg.replace(train={"precision": "fp32"}) for p in auto]
    costs = (cal.coarse(fp32, device, progress=False) if calibrate == "coarse" else
             cal.calibrate(fp32, device, progress=False, cached_only=calibrate == "cached"))
    if not costs:
        return note
    without = total - sum(estimates[p.key] for p in auto) + sum(cal.estimate_seconds(c, costs) for c in fp32)
    return note + f"; all in fp32 about {human_seconds(without)}"


def _data_line(name: str, unchecked: str | None) -> str | None:
    """A line about a dataset the plan reads: where it is missing altogether, what `make train` will say about it
    (found by looking at folders only, nothing decoded); where the store could not check its content
    (`unchecked`: why), that the stored runs were counted by their code alone; else None."""
    from labcore.core.data import DataNotFoundError, check_available

    try:
        check_available(name)
    except DataNotFoundError as missing:
        return f"[labcore] {missing} (`make train` stops there); stored runs are counted by their code alone"
    if unchecked is None:
        return None
    return (f"[labcore] the data could not be checked ({unchecked}): runs counted by their code alone; `make train` "
            "reads it and retrains what it changes")


def print_plan(d: dict[str, Any], file=sys.stdout) -> None:
    """The plan as `make plan` prints it: the summary line, the table by family, the largest run."""
    print(d["summary"], file=file)
    for name in sorted({p.cfg.data.name for p in d["planned"]} | set(d["store"].unchecked)):
        line = _data_line(name, d["store"].unchecked.get(name))
        if line:
            print(line, file=file)
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
