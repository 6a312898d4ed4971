"""Train every pending run of a plan: in this process ('local') or as Ray tasks ('ray').

    python -m labcore train --profile quick --executor ray        # make train EXECUTOR=ray

Each run is a pure function of its config, so it can be trained anywhere. The pending runs become jobs
(labcore.engine.jobs): a run alone, or a config's seeds fused into one batched model where that pays on the device
(labcore.engine.fused). Jobs start longest first (by the plan's estimates), so the long ones do not end up alone at the
tail; on Ray (labcore.engine.raypass) each job is a task. A run that fails on its own (a NaN loss) is stored as failed
and not retried; one the machine stops (out of memory, a CUDA error, a full disk) stays pending with its reason.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch

from labcore.store import runs
from labcore.core.config import ConfigError
from labcore.core.data import check as check_data
from labcore.files import Busy, locked
from labcore.store.planned import Planned
from labcore.text import human_seconds, count
from labcore.engine.jobs import Outcome, Progress, check_fuse, group_jobs, train_here
from labcore.engine.plan import BuildPlan, describe
from labcore.machine import pick_device
from labcore.paths import cache_dir, check_folders, runs_dir

EXECUTORS = ("local", "ray")
RAY_AFTER_S = 600.0  # with no EXECUTOR given, Ray once this much training is pending: its start-up (about 10 s) pays off


def choose_executor(given: str, pending_seconds: float | None, address: str | None, slots: int,
                    ray_installed: bool = True) -> tuple[str, str | None]:
    """EXECUTOR as given; when not given: ray for a cluster (`address`), or where this machine trains `slots` >= 2
    runs at once and enough is pending, else local. Returns the executor and, when it was picked, why."""
    if given in EXECUTORS:
        return given, None
    if given not in ("", "auto"):
        raise ConfigError(f"executor {given!r} is unknown; choose one of: {', '.join(EXECUTORS)} (or leave it unset)")
    if address:
        return "ray", (f"executor ray: picked because RAY_ADDRESS is set ({address}); EXECUTOR=local trains in this "
                       "process instead")
    if ray_installed and slots >= 2 and (pending_seconds or 0) >= RAY_AFTER_S:
        return "ray", (f"executor ray: picked because about {human_seconds(pending_seconds)} of training is pending and "
                       f"this machine trains {slots} runs at a time that way (an embedded Ray, one CPU thread or GPU per "
                       "run); EXECUTOR=local trains them one after another in this process")
    return "local", None


def job_device(executor: str, device: str, gpus_per_run: float | None) -> torch.device:
    """The kind of device the jobs will train on (what decides where fusing pays): this process's for local; for
    Ray a GPU when runs are given one (by default where this machine has one), else the CPU."""
    if executor == "local":
        return pick_device(device)
    return torch.device("cuda" if (gpus_per_run if gpus_per_run is not None else torch.cuda.is_available()) else "cpu")


def local_slots(device: str = "auto") -> int:
    """Runs an embedded Ray trains at once here: one per GPU where there is CUDA, else one per CPU core."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return os.cpu_count() or 1


# ---------------------------------------------------------------- the pass

@contextlib.contextmanager
def exclusive(store: runs.RunStore, profile: str) -> Iterator[None]:
    """One `make train` per profile and store at a time; a second one is refused, naming the first."""
    try:
        with locked(store.root / ".locks" / f"train-{profile}.lock", wait=False):
            yield
    except Busy as busy:
        raise ConfigError(f"another `make train` or `make report` of profile {profile} is training (pid "
                          f"{busy.holder}) on this run store; wait for it to finish") from None


def _plan_as_trained(built: BuildPlan, executor: str, address: str | None, device: str, store: runs.RunStore,
                     cpus_per_run: int | None, gpus_per_run: float | None, fuse: str,
                     retry_failed: bool) -> tuple[dict, str, torch.device]:
    """The build plan estimated for the executor that will train it (labcore.engine.plan.describe), that executor
    (picked when not given, and said), and the device kind its jobs train on (what decides fusing)."""
    import importlib.util

    # A Ray run on a CPU trains with cpus_per_run threads, not all of them: estimate (and order) for that.
    # Asked for Ray outright, plan that way at once (a calibration at all threads would be thrown away).
    on_cpu, per_run = pick_device(device).type == "cpu", cpus_per_run or 1
    planned_for = per_run if executor == "ray" and on_cpu else None
    runs_on = job_device(executor or "local", device, gpus_per_run)
    d = describe(built, device, store=store, threads=planned_for, fuse=fuse, fuse_device=runs_on,
                 retry_failed=retry_failed)
    print(d["summary"], flush=True)
    executor, why = choose_executor(executor, d["pending_seconds"], address, local_slots(device),
                                    importlib.util.find_spec("ray") is not None)
    if why:
        print(why, flush=True)
    cpu_ray = executor == "ray" and on_cpu and planned_for is None
    if d["pending_seconds"] and (cpu_ray or job_device(executor, device, gpus_per_run) != runs_on):
        runs_on = job_device(executor, device, gpus_per_run)  # picked other than planned: estimate again for it
        d = describe(built, device, store=store, threads=per_run if cpu_ray else planned_for, fuse=fuse,
                     fuse_device=runs_on, retry_failed=retry_failed)
    return d, executor, runs_on


def _announce(todo: list[Planned], jobs: list[list[Planned]], executor: str, progress: Progress) -> None:
    """One line before training: how many runs, how many fused, which executor, the estimated wall time."""
    if todo:
        n_fused = sum(len(j) for j in jobs if len(j) > 1)
        fusing = f" ({n_fused} of them as {sum(len(j) > 1 for j in jobs)} fused groups of seeds)" if n_fused else ""
        what = ("of wall time" if progress.overhead else "of training (each run's setup and test pass come on top: "
                "the ETA learns them from the first runs)")
        print(f"[labcore] training {count(len(todo), 'run')}{fusing} with the {executor} executor; "
              f"{progress.eta_text().replace('ETA', 'estimated', 1)} {what}", flush=True)


def train(built: BuildPlan, executor: str = "", address: str | None = None, device: str = "auto",
          tracking: str = "offline", cpus_per_run: int | None = None, gpus_per_run: float | None = None,
          cpus: int | None = None, retry_failed: bool = False, store: runs.RunStore | None = None,
          headless: bool | None = None, deterministic: bool = False, fuse: str = "auto") -> Outcome:
    """Train every pending run of the build plan `built` (labcore.engine.plan.build_plan; failed ones too with
    `retry_failed`); `executor` '' picks one (see choose_executor).
    `deterministic`: bit-for-bit repeatable numerics on the same device and software (machine.configure).
    `fuse`: train a config's seeds as one batched model where that pays on the device ('auto'; labcore.engine.fused),
    always ('on') or never ('off')."""
    if executor not in EXECUTORS + ("", "auto"):
        raise ConfigError(f"executor {executor!r} is unknown; choose one of: {', '.join(EXECUTORS)}")
    check_fuse(fuse)  # an unknown FUSE fails now, in one line, before any planning
    check_folders({"LABCORE_RUNS": (store.root if store else runs_dir()), "LABCORE_CACHE": cache_dir()})
    if address and executor != "local":  # before planning and calibrating: a wrong cluster fails in a second
        from labcore.engine.raypass import check_cluster

        check_cluster(address)
    store = store or runs.RunStore()
    start = time.perf_counter()
    profile = built.profile
    with exclusive(store, profile):
        d, executor, runs_on = _plan_as_trained(built, executor, address, device, store, cpus_per_run, gpus_per_run,
                                                fuse, retry_failed)
        todo = [p for p, s in zip(d["planned"], d["table"].state) if s in runs.to_train_states(retry_failed)]
        for name in sorted({p.cfg.data.name for p in todo}):  # a missing dataset stops here, not in the first run
            check_data(name)
        # Per run: its share when its job is fused, and what it takes alone (if that job is retried run by run).
        estimates = {p.key: d["estimates"].get(p.key, 0.0) for p in todo}
        alone = {p.key: d["alone_estimates"].get(p.key, 0.0) for p in todo}
        cpus_per_run = cpus_per_run or 1
        slots = 1 if executor == "local" else max(1, (cpus or os.cpu_count() or 1) // cpus_per_run)  # a cluster's: set once connected
        jobs = sorted(group_jobs(todo, runs_on, fuse), key=lambda job: -sum(estimates[p.key] for p in job))  # longest first
        progress = Progress(estimates, slots, headless, jobs, d.get("overhead") or 0.0)
        _announce(todo, jobs, executor, progress)
        try:
            if not todo:
                out = Outcome()
            elif executor == "local":
                out = train_here(jobs, estimates, alone, store, device, tracking, retry_failed, progress, profile,
                                 deterministic)
            else:
                from labcore.engine.raypass import train_ray

                out = train_ray(jobs, estimates, alone, store, tracking, address, cpus_per_run, gpus_per_run, cpus,
                                progress, profile, deterministic)
        finally:
            progress.close()
    out.seconds, out.executor = time.perf_counter() - start, executor
    return out
