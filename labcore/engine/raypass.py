"""Training a plan's jobs as Ray tasks, on an embedded Ray or a cluster (`make train EXECUTOR=ray`).

Every job (one run, or fused seeds: labcore.engine.jobs) is one task that asks for its resources (CPU threads, a GPU or
a fraction of one); the worker reads its own node's LABCORE_DATA and sends the finished runs (results, weights,
checkpoints) back to the driver, which alone writes the run store. A job the machine stops (RunLost), or whose
worker or node dies, is tried again at the end, each run alone on its device (jobs.Retries: the one retry policy).
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import socket
from collections.abc import Sequence
from typing import Any

from labcore.store import identity, runs, training
from labcore.core.config import ConfigError
from labcore.store.planned import Planned
from labcore.faults import RunLost, advice
from labcore.engine.jobs import Outcome, Progress, Retries, train_job
from labcore.machine import deterministic_process, share_gpu
from labcore.text import count

RAY_NODE = "ray node"  # a run a Ray task trained names its node "<host> (ray node <id>)"


def task_device(gpu_ids: Sequence) -> str:
    """The device a Ray task trains on: the GPU Ray assigned it (Ray makes it the task's only visible one, so it is
    cuda:0 inside the task), or the CPU when it was given none, even on a node that has GPUs."""
    return "cuda" if gpu_ids else "cpu"


class OtherCode(ConfigError):
    """A Ray node would train with other labcore code, or other data, than the driver's: its results would not be
    what this checkout computes."""


def check_same_code(expected: dict[str, dict[str, str]] | None, node: str) -> None:
    """Refuse, in one line naming the node and the files, a worker whose labcore code differs from the driver's
    (`expected`: the driver's code fingerprints, labcore.store.identity)."""
    if not expected:
        return
    differ = sorted({f for kind, code in expected.items() for f in identity.changed_code(code, kind)})
    if differ:
        raise OtherCode(f"Ray node {node} has other labcore code than this driver ({', '.join(differ)} differ); "
                        "install this checkout there (pip install -e . from the same commit), then `make train` again")


def check_same_data(result: runs.RunResult) -> None:
    """Refuse a run a node trained on other data than the driver's LABCORE_DATA holds (one line naming the node)."""
    seen = (result.data or {}).get("sha256")
    if seen is not None and seen != training.data_content(result.config.data.name):
        raise OtherCode(f"Ray node {result.node} trained {result.config.label()} on other {result.config.data.name} "
                        "data than this driver's LABCORE_DATA holds; give every node the same copy, then `make train` "
                        "again")


def ray_task(job: list[Planned], tracking: str, threads: int, estimates: dict[str, float], profile: str = "",
             deterministic: bool = False, code: dict[str, dict[str, str]] | None = None,
             resume_root: str | None = None) -> list[runs.Trained]:
    """One job on a Ray worker: train it with `threads` CPU threads, on the GPU Ray assigned (if any), once its
    labcore code is checked to be the driver's (`code`); resumable where the node sees the driver's run store
    (`resume_root` is its .resume folder: a retried task continues from the last epoch its run finished)."""
    from pathlib import Path

    import platform

    import ray
    import torch

    check_same_code(code, f"{ray.get_runtime_context().get_node_id()[:8]} ({platform.node()})")

    if deterministic:
        deterministic_process()
    torch.set_num_threads(threads)
    share_gpu(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))  # a fractional GPU: its memory too
    shared = resume_root is not None and Path(resume_root).parent.is_dir()  # this node sees the store
    trained = train_job(job, task_device(ray.get_gpu_ids()), tracking, estimates, profile, deterministic,
                        Path(resume_root) if shared else None)
    node_id = ray.get_runtime_context().get_node_id()[:8]
    return [dataclasses.replace(t, result=dataclasses.replace(t.result, node=f"{t.result.node} ({RAY_NODE} {node_id})"))
            for t in trained]


def executor_of(node: str | None) -> str | None:
    """How a stored run was trained, read from its node as this pass tags it: 'ray' or 'local' (None: unknown)."""
    return None if not node else "ray" if f"({RAY_NODE} " in node else "local"


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
    they are set before that, in this process's environment: the one place labcore edits its own (Ray's driver has
    no other way in, and its core caches the token for the life of the process, so it stays for a later pass).
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
    """`ray_task` (or `fn`) as a Ray remote function with its resources set on the function itself: a GPU task gets a fresh
    worker each time (max_calls=1; `.options()` cannot set that), so a worker pinned to one GPU is never reused
    for a run that Ray assigned another, and a CUDA error cannot outlive its run. Ray retries nothing itself: a task
    whose worker or node died is retried by labcore's one policy (jobs.Retries), as a run lost in this process is."""
    import ray

    return ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_calls=1 if gpus_per_run else 0,
                      max_retries=0, retry_exceptions=False)(fn or ray_task)


class _Pass:
    """One Ray pass's bookkeeping: the tasks in flight, the runs to try again alone, and what came of each."""

    def __init__(self, estimates: dict[str, float], alone: dict[str, float], store: runs.RunStore,
                 progress: Progress, submit_args: tuple) -> None:
        self.estimates, self.alone, self.store, self.progress = estimates, alone, store, progress
        self.args = submit_args  # (tracking, cpus_per_run, profile, deterministic, code): the same for every task
        self.inflight: dict[Any, list[Planned]] = {}
        self.retry: list[list[Planned]] = []  # jobs of one run each, tried at the end of the pass
        self.retries = Retries(alone, progress)
        self.out = Outcome()

    def submit(self, job: list[Planned], fn: Any) -> None:
        """Start one job as a task of `fn`, with each run's estimate (its share when fused, else alone)."""
        tracking, cpus_per_run, profile, deterministic, code = self.args
        per_run = self.estimates if len(job) > 1 else self.alone
        self.inflight[fn.remote(job, tracking, cpus_per_run, {p.key: per_run.get(p.key) for p in job}, profile,
                                deterministic, code, str(self.store.resume_root))] = job

    def lost(self, job: list[Planned], resource: str, reason: str, advice_line: str = "") -> None:
        """A job the machine stopped: its runs tried again at the end, each alone (jobs.Retries), or lost."""
        again, spent = self.retries.again(job, resource, " at the end, each alone on its device")
        self.retry.extend(again)
        for p in spent:
            self.out.lose(p, self.progress, resource, reason, advice_line)

    def settle(self, ref: Any) -> None:
        """A finished task: its runs stored, or retried alone, or lost with the reason; a bug propagates."""
        import ray
        from ray.exceptions import RayError, RayTaskError

        job = self.inflight.pop(ref)
        try:
            trained = ray.get(ref)
        except RayTaskError as exc:
            if isinstance(exc.cause, OtherCode):
                raise exc.cause from None  # one line: which node, which files
            if not isinstance(exc.cause, RunLost):
                raise  # a bug in labcore: stop here (train_ray cancels the rest)
            self.lost(job, exc.cause.resource, exc.cause.reason, advice(exc.cause))
            return
        except RayError as exc:  # its worker or node died (e.g. Ray's out-of-memory killer, a node that left)
            why = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            self.lost(job, type(exc).__name__, why)
            return
        for p, t in zip(job, trained):
            self.keep(p, t)

    def keep(self, p: Planned, t: Any) -> None:
        """Store one trained run (after checking it trained on this driver's data)."""
        check_same_data(t.result)
        try:
            with self.store.lock(p.cfg):
                self.store.put_or_lose(t)
        except RunLost as exc:  # this machine cannot write the store (disk full): the run stays pending
            self.out.lose(p, self.progress, exc.resource, exc.reason, advice(exc))
            return
        self.out.trained.append(t.result)
        self.progress.finished(t.result, t.result.node or "ray")


def train_ray(jobs: list[list[Planned]], estimates: dict[str, float], alone: dict[str, float],
              store: runs.RunStore, tracking: str,
              address: str | None, cpus_per_run: int, gpus_per_run: float | None, cpus: int | None,
              progress: Progress, profile: str, deterministic: bool = False) -> Outcome:
    """Train the jobs as Ray tasks. A job the machine stops (RunLost, e.g. out of GPU memory beside other runs) is
    tried again at the end, each of its runs alone, one at a time, with a whole GPU to itself (in a fresh worker),
    as is one whose worker or node died (jobs.Retries, the policy of both executors); lost after that, its runs
    stay pending with the reason. Any
    other error is a bug: it stops the pass and propagates. `estimates`: each run's share of its fused job;
    `alone`: each run's estimate trained alone."""
    started = connect(address, cpus)
    import ray

    state = _Pass(estimates, alone, store, progress, (tracking, cpus_per_run, profile, deterministic, None))
    try:
        code = {kind: identity.code_fingerprint(kind) for kind in identity.ROOTS}  # each worker checks it has these
        state.args = (tracking, cpus_per_run, profile, deterministic, code)
        res, nodes = ray.cluster_resources(), [n for n in ray.nodes() if n.get("Alive")]
        if gpus_per_run is None:  # a whole GPU per run where the cluster (or this machine) has GPUs
            gpus_per_run = 1.0 if res.get("GPU", 0) else 0.0
        print(f"[labcore] Ray cluster: {count(len(nodes), 'node')}, {res.get('CPU', 0):g} CPUs, "
              f"{res.get('GPU', 0):g} GPUs; {count(cpus_per_run, 'CPU thread')} and {gpus_per_run:g} GPU per job",
              flush=True)
        progress.slots = concurrent_runs(res, cpus_per_run, gpus_per_run)
        task = remote_task(cpus_per_run, gpus_per_run)
        alone_task = task.options(num_gpus=max(gpus_per_run, 1.0)) if gpus_per_run else task  # a lost run's second try
        for job in jobs:  # already longest first; Ray starts them in submission order as resources free up
            state.submit(job, task)
        while state.inflight or state.retry:
            if not state.inflight:  # the main pass is done: lost runs once more, one at a time, each alone
                state.submit(state.retry.pop(0), alone_task)
            ready, _ = ray.wait(list(state.inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                state.settle(ref)
    except BaseException:  # Ctrl-C included: stop what still runs, keep what finished
        for ref in state.inflight:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
    return state.out


def concurrent_runs(resources: dict[str, float], cpus_per_run: int, gpus_per_run: float) -> int:
    """How many runs a cluster with `resources` trains at once (for the ETA)."""
    fit = resources.get("CPU", 0) // cpus_per_run
    if gpus_per_run:
        fit = min(fit, resources.get("GPU", 0) // gpus_per_run)
    return max(1, int(fit))
