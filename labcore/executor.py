"""Train every pending run of a plan: in this process ('local') or as Ray tasks ('ray').

    python -m labcore.executor --profile quick --executor ray        # make train EXECUTOR=ray

Each run is a pure function of its config, so it can be trained anywhere. With Ray, every run is one
task that asks for its resources (CPU threads, a GPU or a fraction of one); the worker reads its own
node's LABCORE_DATA and sends the finished run (result, weights, checkpoints) back to this process,
which alone writes the run store. Runs start longest first (by the plan's estimates), so the long
ones do not end up alone at the tail. A worker that dies is retried a bounded number of times; a run
that fails on its own (NaN loss, out of memory, a shape error) is stored as failed and not retried.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from . import runs
from .config import ConfigError, RunConfig
from .data import DataNotFoundError
from .data import check as check_data
from .faults import RunLost, advice, refused
from .files import Busy, locked
from .exercise import Planned
from .calibrate import human_seconds
from .plan import choose_profile, describe
from .machine import deterministic_process, pick_device, share_gpu, show_progress

EXECUTORS = ("local", "ray")
MAX_RETRIES = 2  # a task whose worker process or node dies is tried this many more times
MAX_LOST_RETRIES = 1  # a run the machine stopped (out of memory, a CUDA error) is tried this many more times
COMPILE_AFTER_S = 1200.0  # torch.compile a run estimated longer than this (compiling costs 15-30 s)
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


def local_slots(device: str = "auto") -> int:
    """Runs an embedded Ray trains at once here: one per GPU where there is CUDA, else one per CPU core."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return os.cpu_count() or 1


def makespan(costs: Sequence[float], slots: int) -> float:
    """Wall time to finish `costs` on `slots` parallel workers, longest first (each to the least-loaded slot)."""
    assert slots >= 1, f"need at least one slot, got {slots}"
    loads = [0.0] * slots
    for c in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + c)
    return max(loads)


class Progress:
    """Runs done / total with an ETA from the estimates: a bar on a terminal, a line per run when headless."""

    def __init__(self, estimates: dict[str, float], slots: int, headless: bool | None = None) -> None:
        self.remaining = dict(estimates)
        self.total, self.done, self.slots = len(estimates), 0, slots
        self.headless = (not show_progress()) if headless is None else headless
        self.bar = None if self.headless else tqdm(total=self.total, unit="run", desc="training")

    def eta(self) -> float:
        """Seconds until every remaining run is done, if the estimates hold."""
        return makespan(list(self.remaining.values()), self.slots) if self.remaining else 0.0

    def finished(self, result: runs.RunResult, where: str) -> str:
        """Record one finished run; returns (and shows) its line."""
        self.remaining.pop(result.key, None)
        self.done += 1
        est = f", estimated {result.estimate_seconds:.1f} s" if result.estimate_seconds else ""
        state = "ok" if result.ok else f"FAILED ({result.error})"
        line = (f"[labcore] run {self.done}/{self.total} {state}: {result.config.label()} in {result.seconds:.1f} s"
                f"{est} on {where}; ETA {human_seconds(self.eta())}")
        if self.bar is None:
            print(line, flush=True)
        else:
            self.bar.set_postfix_str(f"ETA {human_seconds(self.eta())}, last on {where}")
            self.bar.update(1)
        return line

    def lost(self, key: str, label: str, why: str) -> None:
        """Record a run that was not trained (it stays pending) and say why, in one line."""
        self.remaining.pop(key, None)
        line = f"[labcore] run {label} not trained (still pending): {why}"
        if self.bar is None:
            print(line, flush=True)
        else:
            self.bar.write(line)

    def close(self) -> None:
        """Close the bar (if any)."""
        if self.bar is not None:
            self.bar.close()


@dataclass
class Outcome:
    """What a training pass did: runs trained (ok or failed), and runs lost to crashes (still pending)."""

    trained: list[runs.RunResult] = dataclasses.field(default_factory=list)
    lost: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (label, why)
    seconds: float = 0.0
    executor: str = "local"  # the one that trained them

    @property
    def failed(self) -> list[runs.RunResult]:
        """Runs that failed on their own (stored as failed)."""
        return [r for r in self.trained if not r.ok]


# ---------------------------------------------------------------- in this process

def _train_local(todo: list[Planned], estimates: dict[str, float], store: runs.RunStore, device: str,
                 tracking: str, retry_failed: bool, progress: Progress, profile: str, deterministic: bool) -> Outcome:
    """Train one run after another here. A run the machine stops (RunLost) is tried once more, with the device's
    cached memory released; lost again, it stays pending with its reason. After a CUDA error this process cannot
    use its GPU any more, so the pass stops there and the remaining runs stay pending."""
    import torch

    import gc

    out = Outcome()
    for i, p in enumerate(todo):
        est = estimates.get(p.key)
        for attempt in range(1 + MAX_LOST_RETRIES):
            fault = None
            try:
                r = runs.run(p.cfg, store, device, tracking, checkpoints=p.checkpoints, retry_failed=retry_failed,
                             estimate_seconds=est, compile=(est or 0) > COMPILE_AFTER_S, group=_group(p),
                             profile=profile, deterministic=deterministic)
            except RunLost as exc:
                fault = exc
            if fault is None:
                out.trained.append(r)
                progress.finished(r, r.node or "this process")
                break
            fault.__traceback__ = None  # outside the handler, with no traceback holding the failed run's tensors
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if not fault.fresh_process and attempt < MAX_LOST_RETRIES:
                print(f"[labcore] run {p.cfg.label()} lost to {fault.resource}; trying it once more", flush=True)
                continue
            progress.lost(p.key, p.cfg.label(), f"{fault.resource} ({fault.reason}); {advice(fault)}")
            out.lost.append((p.cfg.label(), f"{fault.resource}: {fault.reason}"))
            if fault.fresh_process:
                out.lost += [(q.cfg.label(), "not started: the GPU context was lost") for q in todo[i + 1:]]
                return out
            break
    return out


# ---------------------------------------------------------------- on Ray

def _group(p: Planned) -> str:
    """W&B group: the first notebook that needs the run, and its study there."""
    return runs.wandb_group(p.notebooks[0] if p.notebooks else None, p.study)


def task_device(gpu_ids: Sequence) -> str:
    """The device a Ray task trains on: the GPU Ray assigned it (Ray makes it the task's only visible one, so it is
    cuda:0 inside the task), or the CPU when it was given none, even on a node that has GPUs."""
    return "cuda" if gpu_ids else "cpu"


def _ray_task(cfg: RunConfig, checkpoints: tuple[int, ...], tracking: str, threads: int,
              estimate: float | None, compile: bool, group: str | None = None, profile: str = "",
              deterministic: bool = False) -> runs.Trained:
    """One run on a Ray worker: train it with `threads` CPU threads, on the GPU Ray assigned (if any)."""
    import ray
    import torch

    if deterministic:
        deterministic_process()
    torch.set_num_threads(threads)
    share_gpu(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))  # a fractional GPU: its memory too
    trained = runs.train_run(cfg, task_device(ray.get_gpu_ids()), tracking, checkpoints, estimate, compile, group,
                             profile or None, deterministic)
    node = f"{trained.result.node} (ray node {ray.get_runtime_context().get_node_id()[:8]})"
    return dataclasses.replace(trained, result=dataclasses.replace(trained.result, node=node))


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail at once, naming the address, when no Ray cluster answers there (never hang)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"RAY_ADDRESS {address!r} is not host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                          "`ray start --head` (README: Scale out) or unset RAY_ADDRESS for a local Ray") from None


def check_cluster(address: str) -> None:
    """Fail at once unless a Ray cluster answers at `address` and this driver would use token authentication."""
    check_address(address)
    if os.environ.get("RAY_AUTH_MODE") != "token":
        raise ConfigError("refusing to send code to a Ray cluster without token authentication: set "
                          "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (the cluster's token; README: Scale out)")


def connect(address: str | None, cpus: int | None, gpus: float | None = None) -> bool:
    """Join the Ray cluster at `address`, or start an embedded one on this machine; True if we started it.

    Token authentication is required (RAY_AUTH_MODE=token): a Ray cluster runs whatever code it is sent.
    The dashboard and its job server stay off. Ray reads these settings when it is first imported, so
    they are set before that.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        check_cluster(address)
    elif os.environ.setdefault("RAY_AUTH_MODE", "token") == "token" and not os.environ.get("RAY_AUTH_TOKEN"):
        # The embedded instance gets a fresh random token that lives only in this process's environment
        # (inherited by the Ray processes it starts), never in a file.
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    import ray

    if address:
        ray.init(address=address, log_to_driver=False, logging_level="warning")
        return False
    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
    return True


def remote_task(cpus_per_run: int, gpus_per_run: float, fn=None):
    """`_ray_task` (or `fn`) as a Ray remote function with its resources set on the function itself: a GPU task gets a fresh
    worker each time (max_calls=1; `.options()` cannot set that), so a worker pinned to one GPU is never reused
    for a run that Ray assigned another, and a CUDA error cannot outlive its run."""
    import ray

    return ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_calls=1 if gpus_per_run else 0,
                      max_retries=MAX_RETRIES, retry_exceptions=False)(fn or _ray_task)


def _train_ray(todo: list[Planned], estimates: dict[str, float], store: runs.RunStore, tracking: str,
               address: str | None, cpus_per_run: int, gpus_per_run: float | None, cpus: int | None,
               progress: Progress, profile: str, deterministic: bool = False) -> Outcome:
    """Train the runs as Ray tasks. A run the machine stops (RunLost, e.g. out of GPU memory beside other runs) is
    tried again at the end, one at a time, with a whole GPU to itself (in a fresh worker); a worker or node that
    dies is retried by Ray; lost after that, a run stays pending with its reason. Any other error is a bug: it
    stops the pass and propagates."""
    started = connect(address, cpus)
    import ray
    from ray.exceptions import RayError, RayTaskError

    out = Outcome()
    inflight: dict[Any, Planned] = {}
    try:
        res, nodes = ray.cluster_resources(), [n for n in ray.nodes() if n.get("Alive")]
        if gpus_per_run is None:  # a whole GPU per run where the cluster (or this machine) has GPUs
            gpus_per_run = 1.0 if res.get("GPU", 0) else 0.0
        print(f"[labcore] Ray cluster: {len(nodes)} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs; "
              f"{cpus_per_run} CPU thread(s) and {gpus_per_run:g} GPU per run", flush=True)
        progress.slots = concurrent_runs(res, cpus_per_run, gpus_per_run)
        task = remote_task(cpus_per_run, gpus_per_run)
        alone = task.options(num_gpus=max(gpus_per_run, 1.0)) if gpus_per_run else task  # a lost run's second try

        def submit(p: Planned, fn) -> None:
            est = estimates.get(p.key)
            inflight[fn.remote(p.cfg, p.checkpoints, tracking, cpus_per_run, est, (est or 0) > COMPILE_AFTER_S,
                               _group(p), profile, deterministic)] = p

        for p in todo:  # already longest first; Ray starts them in submission order as resources free up
            submit(p, task)
        retry: list[Planned] = []
        tried: set[str] = set()
        while inflight or retry:
            if not inflight:  # the main pass is done: lost runs once more, one at a time, each alone on its device
                p = retry.pop(0)
                tried.add(p.key)
                submit(p, alone)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                p = inflight.pop(ref)
                try:
                    trained = ray.get(ref)
                except RayTaskError as exc:
                    if not isinstance(exc.cause, RunLost):
                        raise  # a bug in labcore: stop here (the handler below cancels the rest)
                    if p.key not in tried:
                        print(f"[labcore] run {p.cfg.label()} lost to {exc.cause.resource}; it is tried again at the "
                              "end, alone on its device", flush=True)
                        retry.append(p)
                    else:
                        c = exc.cause
                        progress.lost(p.key, p.cfg.label(), f"{c.resource} ({c.reason}); {advice(c)}")
                        out.lost.append((p.cfg.label(), f"{c.resource}: {c.reason}"))
                    continue
                except RayError as exc:  # its worker or node died MAX_RETRIES + 1 times
                    why = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                    out.lost.append((p.cfg.label(), f"{type(exc).__name__}: {why}"))
                    progress.lost(p.key, p.cfg.label(), f"{type(exc).__name__}: {why}")
                    continue
                try:
                    with store.lock(p.cfg):
                        store.put_or_lose(trained)
                except RunLost as exc:  # this machine cannot write the store (disk full): the run stays pending
                    progress.lost(p.key, p.cfg.label(), f"{exc.resource} ({exc.reason}); {advice(exc)}")
                    out.lost.append((p.cfg.label(), f"{exc.resource}: {exc.reason}"))
                    continue
                out.trained.append(trained.result)
                progress.finished(trained.result, trained.result.node or "ray")
    except BaseException:  # Ctrl-C included: stop what still runs, keep what finished
        for ref in inflight:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
    return out


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


def train(profile: str, only: list[str] | None = None, executor: str = "", address: str | None = None,
          device: str = "auto", tracking: str = "offline", cpus_per_run: int | None = None,
          gpus_per_run: float | None = None, cpus: int | None = None, retry_failed: bool = False,
          store: runs.RunStore | None = None, headless: bool | None = None,
          resolved: dict[str, dict] | None = None, deterministic: bool = False) -> Outcome:
    """Train every pending run of the profile's plan (failed ones too with `retry_failed`); `executor` ''
    picks one (see choose_executor). `resolved`: the notebooks' parameters, when the caller has them.
    `deterministic`: bit-for-bit repeatable numerics on the same device and software (machine.configure)."""
    if executor not in EXECUTORS + ("", "auto"):
        raise ConfigError(f"executor {executor!r} is unknown; choose one of: {', '.join(EXECUTORS)}")
    if address and executor != "local":  # before planning and calibrating: a wrong cluster fails in a second
        check_cluster(address)
    store = store or runs.RunStore()
    start = time.perf_counter()
    with exclusive(store, profile):
        # A Ray run on a CPU trains with cpus_per_run threads, not all of them: estimate (and order) for that.
        # Asked for Ray outright, plan that way at once (a calibration at all threads would be thrown away).
        on_cpu, per_run = pick_device(device).type == "cpu", cpus_per_run or 1
        planned_for = per_run if executor == "ray" and on_cpu else None
        d = describe(profile, only, device, store=store, resolved=resolved, threads=planned_for)
        print(d["summary"], flush=True)
        import importlib.util

        executor, why = choose_executor(executor, d["pending_seconds"], address, local_slots(device),
                                        importlib.util.find_spec("ray") is not None)
        if why:
            print(why, flush=True)
        if executor == "ray" and on_cpu and planned_for is None and d["pending_seconds"]:
            d = describe(profile, only, device, store=store, resolved=resolved, threads=per_run)
        wanted = ("pending", "damaged", "failed") if retry_failed else ("pending", "damaged")
        todo = [p for p, s in zip(d["planned"], d["table"].state) if s in wanted]
        for name in sorted({p.cfg.data.name for p in todo}):  # a missing dataset stops here, not in the first run
            check_data(name)
        estimates = {p.key: d["estimates"].get(p.key, 0.0) for p in todo}
        todo.sort(key=lambda p: -estimates[p.key])  # longest first
        if executor == "local":
            slots = 1
        else:
            cpus_per_run = cpus_per_run or 1
            slots = max(1, (cpus or os.cpu_count() or 1) // cpus_per_run)  # a cluster's: set once connected
        progress = Progress(estimates, slots, headless)
        if todo:
            print(f"[labcore] training {len(todo)} run(s) with the {executor} executor; "
                  f"estimated {human_seconds(progress.eta())} of wall time", flush=True)
        try:
            if not todo:
                out = Outcome()
            elif executor == "local":
                out = _train_local(todo, estimates, store, device, tracking, retry_failed, progress, profile,
                                   deterministic)
            else:
                out = _train_ray(todo, estimates, store, tracking, address, cpus_per_run, gpus_per_run, cpus, progress,
                                profile, deterministic)
        finally:
            progress.close()
    out.seconds, out.executor = time.perf_counter() - start, executor
    return out


def concurrent_runs(resources: dict[str, float], cpus_per_run: int, gpus_per_run: float) -> int:
    """How many runs a cluster with `resources` trains at once (for the ETA)."""
    fit = resources.get("CPU", 0) // cpus_per_run
    if gpus_per_run:
        fit = min(fit, resources.get("GPU", 0) // gpus_per_run)
    return max(1, int(fit))


def main(argv: list[str] | None = None) -> int:
    """`make train`: train what the plan still needs; exit 0 when nothing failed or was lost."""
    parser = argparse.ArgumentParser(description="Train every pending run of a profile's plan.")
    parser.add_argument("--profile", default="", help="smoke, quick or full (default: full with a GPU or Ray cluster, else quick)")
    parser.add_argument("--only", default="", help="comma-separated notebook stems")
    parser.add_argument("--executor", default="", help="local (this process) or ray (default: ray for a cluster, or "
                        "where this machine trains several runs at once and 10 minutes or more are pending; else local)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                        help="a Ray cluster's address (default: $RAY_ADDRESS; none: an embedded local Ray)")
    parser.add_argument("--cpus-per-run", type=int, default=None, help="CPU threads per run with Ray (default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=None,
                        help="GPUs per run with Ray (default: 1 where the cluster has GPUs); 0.25 lets 4 runs share one")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs an embedded Ray may use (default: all)")
    parser.add_argument("--retry-failed", action="store_true", help="train runs stored as failed again")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms, no cuDNN benchmark, "
                        "no TF32: runs repeat bit for bit on the same device and software, more slowly on a GPU")
    parser.add_argument("--tracking", default=os.environ.get("LABCORE_TRACKING") or "offline",
                        help="W&B mode for the runs: offline, online or disabled")
    args = parser.parse_args(argv)
    if args.deterministic:
        deterministic_process()
    try:
        from .params import check_selection, parse_only
        from .tracking import check_mode

        check_mode(args.tracking, "--tracking")
        profile, first = choose_profile(args.profile)
        only = parse_only(args.only)
        check_selection(profile, only)
        if first:
            print(first, flush=True)
        out = train(profile, only, args.executor, args.address, tracking=args.tracking, cpus_per_run=args.cpus_per_run,
                    gpus_per_run=args.gpus_per_run, cpus=args.cpus, retry_failed=args.retry_failed,
                    deterministic=args.deterministic)
    except (ConfigError, DataNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine refused a write: one line naming the path, never a traceback
        return refused(exc)
    except RunLost as exc:
        print(f"error: {exc}; {advice(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n[labcore] interrupted: finished runs are stored; `make train` again trains only the rest",
              file=sys.stderr, flush=True)
        return 130
    print(f"[labcore] trained {len(out.trained)} run(s) in {human_seconds(out.seconds)}; "
          f"{len(out.failed)} failed, {len(out.lost)} lost (still pending: `make train` again retries them)", flush=True)
    return 0 if not out.failed and not out.lost else 1


if __name__ == "__main__":
    sys.exit(main())
