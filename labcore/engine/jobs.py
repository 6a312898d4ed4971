"""The units both executors train: a job is one run alone, or the seeds of one config fused into one batched
model (labcore.engine.fused) where that pays on the device; a pass's progress (runs done, ETA), outcome and retries;
and the in-process executor (`train_here`), one job after another (Ray's is labcore.engine.raypass)."""
from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from labcore.engine import fused
from labcore.store import runs, training
from labcore.text import human_seconds, count
from labcore.core.config import ConfigError, RunConfig
from labcore.faults import RunLost, advice
from labcore.store.planned import Planned
from labcore.machine import show_progress

MAX_LOST_RETRIES = 1  # times a run the machine stopped (out of memory, a CUDA error, its Ray worker died) is tried again
COMPILE_AFTER_S = 1200.0  # torch.compile a run estimated longer than this (compiling costs 15-30 s)
FUSE_MODES = ("auto", "on", "off")  # fuse seeds where measured to pay on the device, always, never


def check_fuse(fuse: str) -> None:
    """One line for an unknown FUSE, before any planning."""
    if fuse not in FUSE_MODES:
        raise ConfigError(f"FUSE={fuse!r} is unknown; choose one of: {', '.join(FUSE_MODES)}")


def group_jobs(todo: list[Planned], device: torch.device, fuse: str = "auto") -> list[list[Planned]]:
    """`todo` (longest first) as jobs in the same order: runs that differ only in their seed together where fusing
    pays on `device` (fuse 'auto': labcore.engine.fused.pays, on a GPU as `make gpu-check` measured it there), always
    ('on') or never ('off'); every other run alone."""
    check_fuse(fuse)
    groups: dict[str, list[Planned]] = {}
    out: list[list[Planned]] = []
    measured = fused.measured_packing(device) if device.type == "cuda" and todo else None
    for p in todo:
        if fuse == "on" or (fuse == "auto" and fused.pays(p.cfg, device, measured)):
            key = fused.group_key(p.cfg)
            if key in groups:
                groups[key].append(p)
                continue
            groups[key] = [p]
            out.append(groups[key])
        else:
            out.append([p])
    return out


def wandb_group(p: Planned) -> str:
    """W&B group: the first notebook that needs the run, and its study there."""
    return runs.wandb_group(p.notebooks[0] if p.notebooks else None, p.study)


def train_job(job: list[Planned], device: str | torch.device, tracking: str, estimates: dict[str, float],
              profile: str = "", deterministic: bool = False, resume_root: Path | None = None) -> list[runs.Trained]:
    """Train a job: one run alone (compiled when estimated long), or several seeds fused; one Trained per run, in
    order, resumed from `resume_root` where an earlier attempt was interrupted. The machine's faults raise RunLost
    (labcore.store.training.train_runs)."""
    est = estimates.get(job[0].key)
    return training.train_runs([p.cfg for p in job], device, tracking, [p.checkpoints for p in job], est,
                               len(job) == 1 and (est or 0) > COMPILE_AFTER_S, [wandb_group(p) for p in job],
                               profile or None, deterministic, resume_root=resume_root)


def describe_job(job: list[Planned]) -> str:
    """'<label>' for a run alone, '<label> and 2 more seeds, fused' for a fused job."""
    return job[0].cfg.label() + (f" and {count(len(job) - 1, 'more seed')}, fused" if len(job) > 1 else "")


def distinct_labels(cfgs: Sequence[RunConfig], name: Callable[[RunConfig], str] | None = None) -> dict[str, str]:
    """{run key: name} where no two runs read alike: runs that share a label (family, depth, width, variant, seed)
    get every field they differ in, e.g. 'mlp-d2-w16-plain-s0 (train.epochs 3)' (01's long run). `name`: what
    to extend (default the label; runs.html's W&B names)."""
    by: dict[str, dict[str, tuple[RunConfig, dict[str, Any]]]] = {}
    for c in cfgs:
        flat: dict[str, Any] = {}
        for section, fields in c.to_dict().items():  # by dotted name: 'train.epochs', 'seed'
            flat.update({f"{section}.{k}": v for k, v in fields.items()} if isinstance(fields, dict) else {section: fields})
        by.setdefault(c.label(), {})[c.key()] = (c, flat)
    out = {}
    for same in by.values():
        differ = [f for f in dict.fromkeys(f for _, flat in same.values() for f in flat)
                  if len({json.dumps(flat.get(f)) for _, flat in same.values()}) > 1]
        for key, (c, flat) in same.items():
            said = ", ".join(f"{f} {flat.get(f)}" for f in differ)
            out[key] = (name or RunConfig.label)(c) + (f" ({said})" if said else "")
    return out


def overhead_per_run(results: Sequence[runs.RunResult], device: str | None = None) -> tuple[float, int] | None:
    """(seconds a run takes besides what its estimate covers: building it, its test pass, W&B; how many runs say
    so): the median over finished runs (on `device`, a `device_name`, when given) that recorded their wall time,
    resumed ones aside (their `seconds` span every attempt, their wall time the last); None where none did."""
    extra = sorted(r.wall_seconds - r.seconds for r in results if r.ok and r.wall_seconds is not None
                   and not r.resumed and (device is None or r.device == device))
    return (max(extra[len(extra) // 2], 0.0), len(extra)) if extra else None


def makespan(costs: Sequence[float], slots: int) -> float:
    """Wall time to finish `costs` on `slots` parallel workers, longest first (each to the least-loaded slot)."""
    assert slots >= 1, f"need at least one slot, got {slots}"
    loads = [0.0] * slots
    for c in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + c)
    return max(loads)


class Progress:
    """Runs done / total with an ETA from the estimates: a bar on a terminal, a line per run when headless.
    `estimates` are per run (a fused job's runs share a slot: its members' estimates are their shares), of what a
    run records as `seconds`; `overhead`: what each run takes besides (building, testing, W&B: overhead_per_run of
    stored runs, else 0). The ETA is wall time: the estimates scaled as the finished runs' training ran against theirs, plus
    what each took besides, learned from them (most of a smoke run, whose steps take milliseconds)."""

    def __init__(self, estimates: dict[str, float], slots: int, headless: bool | None = None,
                 jobs: list[list[Planned]] | None = None, overhead: float = 0.0) -> None:
        self.remaining = dict(estimates)
        self.overhead, self.seen = overhead, []  # the time besides until runs finish; then the finished runs (seen)
        self.job_of = {p.key: tuple(q.key for q in job) for job in jobs or [] for p in job}
        self.labels = distinct_labels([p.cfg for job in jobs or [] for p in job])  # no two runs' lines read alike
        self.total, self.done, self.slots = len(estimates), 0, slots
        self.measured = self.estimated = 0.0  # training seconds of the runs finished so far: taken, and estimated
        self.headless = (not show_progress()) if headless is None else headless
        self.bar = None if self.headless else tqdm(total=self.total, unit="run", desc="training")

    def besides(self) -> float:
        """Seconds a run takes besides its training: the finished runs' (overhead_per_run), else `overhead`."""
        return (overhead_per_run(self.seen) or (self.overhead,))[0]

    def eta(self) -> float | None:
        """Seconds until every remaining run is done (a fused job takes one slot): the estimates, corrected by how
        long the runs finished so far trained against theirs (a loaded machine, a wrong calibration), plus what
        each run takes besides; None while runs remain that have no estimate (never 0 s with work left)."""
        scale = self.measured / self.estimated if self.estimated > 0 else 1.0
        besides, per_job = self.besides(), {}
        for key, s in self.remaining.items():
            if not s:
                return None
            job = self.job_of.get(key, (key,))
            per_job[job] = per_job.get(job, 0.0) + s * scale + besides
        return makespan(list(per_job.values()), self.slots) if per_job else 0.0

    def eta_text(self) -> str:
        """'ETA 12 min' (with the correction factor and the time besides once runs have finished), or 'ETA
        unknown'."""
        eta = self.eta()
        if eta is None:
            return "ETA unknown (runs without an estimate remain)"
        besides = f", {self.besides():.1f} s a run besides" if self.besides() >= 0.05 else ""
        scale = (f" ({self.measured / self.estimated:.2f}x the estimates so far{besides})"
                 if self.estimated > 0 and eta else "")
        return f"ETA {human_seconds(eta)}{scale}"

    def alone(self, job: list[Planned], alone: dict[str, float]) -> None:
        """A fused job's runs now train one by one: each its own slot and its own (alone) estimate."""
        for p in job:
            self.job_of[p.key] = (p.key,)
            if p.key in self.remaining and alone.get(p.key):
                self.remaining[p.key] = alone[p.key]

    def finished(self, result: runs.RunResult, where: str) -> str:
        """Record one finished run; returns (and shows) its line."""
        self.remaining.pop(result.key, None)
        self.done += 1
        if result.ok and result.estimate_seconds:
            self.measured += result.seconds
            self.estimated += result.estimate_seconds
        self.seen.append(result)
        est = f", estimated {result.estimate_seconds:.1f} s" if result.estimate_seconds else ""
        state = "ok" if result.ok else f"FAILED ({result.error})"
        share = f" (its share of {len(result.fused)} fused seeds)" if len(result.fused) > 1 else ""
        label = self.labels.get(result.key) or result.config.label()
        line = (f"[labcore] run {self.done}/{self.total} {state}: {label} in {result.seconds:.1f} s"
                f"{share}{est} on {where}; {self.eta_text()}")
        if self.bar is None:
            print(line, flush=True)
        else:
            self.bar.set_postfix_str(f"{self.eta_text()}, last on {where}")
            self.bar.update(1)
        return line

    def lost(self, key: str, label: str, why: str) -> None:
        """Record a run that was not trained (it stays pending) and say why, in one line."""
        self.remaining.pop(key, None)
        line = f"[labcore] run {self.labels.get(key) or label} not trained (still pending): {why}"
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

    def lose(self, p: Planned, progress: Progress, resource: str, reason: str, advice: str = "") -> None:
        """Record a run not trained (it stays pending): 'resource: reason' here, and on screen with what to do."""
        progress.lost(p.key, p.cfg.label(), f"{resource} ({reason})" + (f"; {advice}" if advice else ""))
        self.lost.append((p.cfg.label(), f"{resource}: {reason}"))

    @property
    def failed(self) -> list[runs.RunResult]:
        """Runs that failed on their own (stored as failed)."""
        return [r for r in self.trained if not r.ok]


class Retries:
    """The one retry policy of both executors (in this process and on Ray) for a job the machine stopped: each of
    its runs is tried again alone (a fused job's seeds each on their own), up to MAX_LOST_RETRIES times; after that
    it stays pending, lost, with its reason. A run that fails on its own (a NaN loss) is stored as failed, not
    retried; a bug is not retried either. Where a retry goes in the queue is the executor's business: here at
    once, on Ray at the end of the pass (each alone on its device)."""

    def __init__(self, alone: dict[str, float], progress: Progress, limit: int = MAX_LOST_RETRIES) -> None:
        self.alone, self.progress, self.limit = alone, progress, limit  # alone: each run's estimate trained alone
        self.tries: Counter[str] = Counter()  # run key -> times tried again so far

    def again(self, job: list[Planned], what: str, when: str = "") -> tuple[list[list[Planned]], list[Planned]]:
        """(`job`'s runs to try again, each as a job alone; its runs that have had their tries). Says which, in
        one line: `what` stopped it, `when` the retry comes (e.g. ' at the end')."""
        again = [p for p in job if self.tries[p.key] < self.limit]
        keys = {p.key for p in again}
        for p in again:
            self.tries[p.key] += 1
        if again:
            how = "its runs alone" if len(job) > 1 else "it once more"
            print(f"[labcore] {describe_job(job)} lost to {what}; trying {how}{when}", flush=True)
            self.progress.alone(again, self.alone)
        return [[p] for p in again], [p for p in job if p.key not in keys]


# ---------------------------------------------------------------- the in-process executor

def train_here(jobs: list[list[Planned]], estimates: dict[str, float], alone: dict[str, float],
               store: runs.RunStore, device: str, tracking: str, retry_failed: bool, progress: Progress, profile: str,
               deterministic: bool) -> Outcome:
    """Train one job after another here. A job the machine stops (RunLost) is tried again as jobs.Retries says
    (each run alone, at once), with the device's cached memory released; lost again, a run stays pending with its
    reason. After a CUDA error this process cannot use its GPU any more, so the pass stops there and the rest stay
    pending. `estimates`: each run's share of its fused job; `alone`: each run's estimate trained alone."""
    import gc

    out, retries = Outcome(), Retries(alone, progress)
    queue = list(jobs)
    while queue:
        job = queue.pop(0)
        try:
            with contextlib.ExitStack() as held:
                for p in sorted(job, key=lambda p: p.key):  # one order for every process: no deadlock
                    held.enter_context(store.lock(p.cfg))
                job = _still_pending(job, store, retry_failed)
                for t in train_job(job, device, tracking, estimates if len(job) > 1 else alone, profile,
                                   deterministic, store.resume_root) if job else []:
                    store.put_or_lose(t)
                    out.trained.append(t.result)
                    progress.finished(t.result, t.result.node or "this process")
            continue
        except RunLost as exc:
            fault = exc
        fault.__traceback__ = None  # outside the handler, with no traceback holding the job's tensors
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        done = {r.key for r in out.trained}
        job = [p for p in job if p.key not in done]  # a full disk may stop a job after some of its runs were stored
        if fault.fresh_process:
            for p in job:
                out.lose(p, progress, fault.resource, fault.reason, advice(fault))
            for p in (q for j in queue for q in j):
                out.lose(p, progress, "not started", "the GPU context was lost")
            return out
        again, spent = retries.again(job, fault.resource)
        queue[0:0] = again
        for p in spent:
            out.lose(p, progress, fault.resource, fault.reason, advice(fault))
    return out


def _still_pending(job: list[Planned], store: runs.RunStore, retry_failed: bool) -> list[Planned]:
    """The job's runs still to train (another process may have stored some meanwhile), each with the checkpoints
    `runs.to_train` gives it."""
    keep = {p.key: runs.to_train(store, p.cfg, p.checkpoints, retry_failed) for p in job}
    return [dataclasses.replace(p, checkpoints=keep[p.key]) for p in job if keep[p.key] is not None]
