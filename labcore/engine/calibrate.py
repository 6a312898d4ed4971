"""Cost estimates for planned runs, from a few real training steps of each distinct architecture.

A run's cost is (training steps x seconds per step) + (validation batches x seconds per forward pass),
both measured here on the current device with random images of the dataset's shape (the cost of a
step does not depend on the pixels). Measurements are cached per device in
`.cache/labcore/calibration-<device>.json`, so `make plan` is instant after its first call on a machine.
Peak memory is measured on CUDA; elsewhere it is counted: weights, gradients and optimiser state, the
activations autograd keeps for the backward pass (measured with saved-tensor hooks), and the dataset.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from labcore.core.config import ConfigError, RunConfig
from labcore.faults import classify
from labcore.core.batches import batches
from labcore.core.data import sizes
from labcore.core.datasets import CLASSES, DATASETS, SHAPES
from labcore.core.models import build_model
from labcore.files import replacing
from labcore.paths import cache_dir
from labcore.machine import configure, device_info, flush_denormals, pick_device, resolve_precision, show_progress
from labcore.machine import threads as machine_threads
from labcore.core.step import learner, memory_format
from labcore.store import identity
from labcore.text import count

CALIBRATION_VERSION = 4  # bump when what is measured changes (2: batch making timed, CPU time on one thread;
# 3: the training loop's own step object, and the forward pass in fp32 as validation runs it; 4: load seen while
# timing, the training code in the key, training's numeric settings: v3 kept timings taken under load for good)
WARMUP_STEPS = 1  # the first step allocates and picks kernels: never timed
WAITED_BUSY = 0.2  # share of a timing its threads spent waiting for a CPU, above which it is busy (each thread
# counted: here 0.015 idle, 0.5 beside two busy processes on 2 cores)
MAX_STEPS = 5  # timed steps per architecture (their median) ...
BUDGET_S = 2.0  # ... or fewer, once this many seconds are spent (large models on a CPU) ...
MIN_S = 0.2  # ... or more (up to 100), until this many are: a millisecond step needs many for a stable median


def check_device(text: str, option: str = "--device") -> str:
    """The device a verb was asked for, checked: one line naming the devices this machine has where it is not one."""
    if text in ("auto", "cpu"):
        return text
    have = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        have.append("mps")
    try:
        wanted = torch.device(text)
    except RuntimeError:
        wanted = None
    index = 0 if wanted is None or wanted.index is None else wanted.index
    if wanted is None or (wanted.type == "cuda" and index >= torch.cuda.device_count()) or \
            (wanted.type not in ("cpu", "cuda") and wanted.type not in have):
        raise ConfigError(f"{option} {text}: no such device here; this machine has: {', '.join(have)} (or auto)")
    return text


def device_name(device: str = "auto") -> str:
    """The device calibration is for, e.g. 'cpu: 2 threads, x86_64' or 'cuda: NVIDIA H100 80GB HBM3'."""
    return device_info(pick_device(device))


def _cache_path(device: str) -> Any:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{device_name(device)}-torch{torch.__version__}").strip("-")
    return cache_dir() / f"calibration-v{CALIBRATION_VERSION}-{slug}.json"


def arch_key(cfg: RunConfig, members: int = 1) -> str:
    """What a step's cost depends on: the model, the image shape, the batch and the step's settings (and how many
    seeds train fused, when more than one: then the cost is the whole group's)."""
    t = cfg.train
    blob = json.dumps([cfg.model.__dict__, cfg.data.name, t.batch_size, t.optimizer, t.augment, t.precision,
                       t.channels_last, _code("fused" if members > 1 else "alone", cfg.model.family)],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16] + (f"x{members}" if members > 1 else "")


@functools.lru_cache(maxsize=None)
def _code(kind: str, family: str) -> str:
    """The fingerprint of the code that trains `family` (labcore.store.identity): a timing of other step or model
    code is another architecture's."""
    return identity.digest_of(identity.code_fingerprint(kind, family))


def _waited() -> float | None:
    """Seconds this process's threads have spent ready to run but waiting for a CPU (Linux's schedstat: another
    process's load, seen while it lasts, not by a look before or after); None where the kernel does not say."""
    total = None
    for f in glob.glob("/proc/self/task/*/schedstat"):
        try:
            total = (total or 0.0) + int(open(f, encoding="ascii").read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            continue
    return total


@contextlib.contextmanager
def _as_training(dev: torch.device) -> Iterator[None]:
    """The numeric settings training sets (machine.configure: on a GPU cuDNN's benchmark mode and TF32), restored
    after: a step is timed as it will run, and planning leaves the process as it found it."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark, matmul.allow_tf32, cudnn.allow_tf32)
    configure(dev)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark, matmul.allow_tf32, cudnn.allow_tf32 = saved[2:]


def _saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of one step (the activations' share of peak memory)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return total


def _feed(cfg: RunConfig, dev: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless training batches made as `fit` makes them (indexing uint8 images on the device, augmenting,
    normalising) from random images of the dataset's shape: that work is part of a step's cost (for the MLPs,
    as long as the step's arithmetic)."""
    d, bs = DATASETS[cfg.data.name], cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4 * bs, *d.shape), dtype=torch.uint8, generator=g).to(dev)
    y = torch.randint(0, len(d.classes), (4 * bs,), generator=g).to(dev)
    while True:
        yield from batches(x, y, bs, d.mean, d.std, generator=g, augmentation=cfg.train.augment)


def _median_time(fn: Callable[[], None], clock: Callable[[], float], sync: Callable[[], None]) -> tuple[float, int]:
    """(median seconds of `fn` by `clock`, how many timed): MAX_STEPS calls, fewer once BUDGET_S is spent, more
    (up to 100) until MIN_S is."""
    times, spent = [], 0.0
    while (len(times) < MAX_STEPS or spent < MIN_S) and spent < BUDGET_S and len(times) < 100:
        t0, w0 = clock(), time.perf_counter()
        fn()
        sync()
        times.append(clock() - t0)
        spent += time.perf_counter() - w0
    return sorted(times)[len(times) // 2], len(times)


def _step_fns(cfg: RunConfig, dev: torch.device, members: int) -> tuple[Callable, Callable, nn.Module, torch.Tensor,
                                                                       torch.Tensor]:
    """(a training step, a forward pass, the model, a batch x, y) of `cfg` on `dev`: the very step that trains its
    runs (labcore.core.step: the model alone, or `members` seeds stacked, each on its own batch), and the forward
    pass that validates them."""
    shape, n_classes = SHAPES[cfg.data.name], len(CLASSES[cfg.data.name])
    torch.manual_seed(0)
    feed = _feed(cfg, dev)
    x, y = next(feed)
    models = [build_model(cfg.model, shape, n_classes).to(dev) for _ in range(members)]
    learn = learner(models, cfg.train, total_steps=10**6, precision=resolve_precision(cfg.train.precision, dev))
    alive = torch.ones(members, dtype=torch.bool, device=dev)
    fmt = memory_format(models[0], cfg.train) if members == 1 else torch.contiguous_format

    def step() -> None:
        learn.step([next(feed) for _ in range(members)], alive)

    def forward() -> None:
        learn.forward(x)

    return step, forward, models[0], x.contiguous(memory_format=fmt), y


def measure(cfg: RunConfig, device: str = "auto", loaded: bool = False, members: int = 1) -> dict[str, float]:
    """Time real training steps (batch making included) and forward passes of `cfg`'s model on `device` (of
    `members` seeds fused, when more than 1: the whole group's step); count its peak memory.

    On a CPU the timings resist other work on the machine (measured here with both cores kept busy: wall-clock
    step times 1.5-2.3x high with one thread, 4-30x with two): a one-thread step is timed by the CPU time of
    this thread (within 10 % of an idle machine's wall time; one family 1.4x), and when `loaded`, a step with
    more threads is taken as no slower than one thread's (its wall-clock time is what load distorts most)."""
    dev = pick_device(device)
    flush_denormals(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with _as_training(dev):
        step, forward, model, x, y = _step_fns(cfg, dev, members)
        for _ in range(WARMUP_STEPS):
            step()
        sync()
        one_thread = dev.type == "cpu" and torch.get_num_threads() == 1
        clock = time.thread_time if one_thread else time.perf_counter  # a thread's CPU time: what load cannot stretch
        waited, start = _waited(), time.perf_counter()
        step_s, n = _median_time(step, clock, sync)
        forward_s, _ = _median_time(forward, clock, sync)
        after = _waited()
    spent = (time.perf_counter() - start) * torch.get_num_threads()  # thread-seconds the timing could have run
    out = {"step_s": step_s, "forward_s": forward_s, "timed_steps": n,
           "waited": None if waited is None or after is None else (after - waited) / spent}
    if loaded and dev.type == "cpu" and not one_thread:
        with machine_threads(1):
            alone, _ = _median_time(step, time.thread_time, sync)
            alone_fwd, _ = _median_time(forward, time.thread_time, sync)
        out.update(step_s=min(step_s, alone), forward_s=min(forward_s, alone_fwd), one_thread_step_s=alone)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    state_copies = 4 if cfg.train.optimizer == "adam" else 3  # weights, gradients, Adam's 2 moments / momentum
    if dev.type == "cuda":
        peak = float(torch.cuda.max_memory_allocated(dev))
    else:
        peak = float(n_params * 4 * state_copies + _saved_bytes(model, x, y)) * members
    return {**out, "peak_model_bytes": peak, "n_params": n_params}


def other_load() -> float:
    """How many threads other than this one are ready to run right now (the fewest of 5 looks over 0.2 s, from
    /proc/loadavg); elsewhere the 1-minute load average."""
    try:
        looks = []
        for _ in range(5):
            running = open("/proc/loadavg", encoding="ascii").read().split()[3].split("/")[0]
            looks.append(int(running) - 1)
            time.sleep(0.05)
        return float(min(looks))
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def busy() -> bool:
    """Whether other work keeps this machine's cores busy (3/4 of them or more), so that step timings taken now
    would run high (measured here: 20x with both cores taken)."""
    return other_load() >= 0.75 * (os.cpu_count() or 1)


def timed_now(cfg: RunConfig, device: str, members: int = 1, loaded: bool = False) -> dict[str, Any]:
    """`measure` of `cfg`, flagged "busy" when other work kept the cores busy (`loaded`: calibrate's look before it
    began) or while it was timed (its threads waited for a CPU; where the kernel does not say, a look after it):
    load that starts after the first look (two processes calibrating at once, a test suite) stretches a two-thread
    step 4-40x, and a timing flagged so is taken again once the machine is idle instead of kept for good."""
    out = measure(cfg, device, loaded=loaded, members=members)
    waited = out.pop("waited", None)
    return {**out, "busy": loaded or (busy() if waited is None else waited > WAITED_BUSY)}


def calibrate(cfgs: list[RunConfig], device: str = "auto", progress: bool = True,
              cached_only: bool = False, members: int = 1) -> dict[str, dict]:
    """Measurements for every distinct architecture among `cfgs` (trained `members` seeds fused, when more than
    1), from the per-device cache or measured now; `cached_only`: measure nothing, and return {} unless the cache
    has them all."""
    path = _cache_path(device)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    idle = not busy()
    # A timing taken while the machine was busy is kept only until it can be taken again on an idle machine.
    archs = {arch_key(c, members): c for c in cfgs}
    todo = {k: c for k, c in archs.items() if k not in cache or (idle and cache[k].get("busy"))}
    if todo and cached_only:
        return {} if any(k not in cache for k in archs) else {k: cache[k] for k in archs}
    if todo and not idle and progress and members == 1:  # said with the runs' own timings, not again for groups
        print(f"[labcore] this machine is busy ({other_load():.0f} other threads ready to run on {os.cpu_count()} "
              "cores): steps are timed by CPU time on one thread, which load stretches least; they are timed again "
              "once it is idle, and finished runs correct them", flush=True)
    if todo and progress:
        fused = f" with {members} seeds fused" if members > 1 else ""
        print(f"[labcore] calibrating {count(len(todo), 'architecture')}{fused} on {device_name(device)} "
              f"(a few real training steps each; cached in {path})", flush=True)
    untimed = []
    for key, cfg in tqdm(todo.items(), desc="calibrating", unit="architecture", disable=not (progress and show_progress())):
        try:
            cache[key] = {**timed_now(cfg, device, members, loaded=not idle),
                          "label": f"{cfg.data.name}/{cfg.model.family}-d{cfg.model.depth}-w{cfg.model.width}"
                                   + (f" x{members} fused" if members > 1 else "")}
        except Exception as exc:  # out of memory on the device: estimate it from the others, never crash the plan
            kind = classify(exc)
            if kind is None:
                raise
            untimed.append(key)
            print(f"[labcore] could not time {cfg.label()} on {device_name(device)} ({kind[0]}); its cost is "
                  "estimated from its FLOPs instead", flush=True)
    if todo:
        with replacing(path) as tmp:
            tmp.write_text(json.dumps(cache, indent=1))
    timed = {k: cache[k] for k in archs if k in cache}
    return from_flops(cfgs, timed, members=members) if untimed else timed


def size(cfg: RunConfig) -> tuple[float, int]:
    """(floating-point operations of one training batch's forward pass, parameters) of `cfg`'s model, counted on
    the meta device (no memory, no compute: shapes only)."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = SHAPES[cfg.data.name]
    with torch.device("meta"):
        model = build_model(cfg.model, shape, len(CLASSES[cfg.data.name]))
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(cfg.train.batch_size, *shape))
    return float(counter.get_total_flops()), sum(p.numel() for p in model.parameters())


COARSE_TIMED = 4  # architectures a coarse estimate times for real, to fit its cost model


def coarse(cfgs: list[RunConfig], device: str = "auto", progress: bool = True, members: int = 1) -> dict[str, dict]:
    """Costs for every architecture among `cfgs` in seconds rather than minutes: the cached measurements, plus a
    few cheap architectures timed now (COARSE_TIMED, cached as usual), and for the rest an overhead plus a rate
    times their FLOPs, fitted to every measured one, marked 'coarse' (on 2 CPU cores the rate varied 25-45 ms per
    forward GFLOP across families: expect about +-30 %). `calibrate` replaces them with measurements."""
    archs = {arch_key(c, members): c for c in cfgs}
    known = calibrate(cfgs, device, progress=False, cached_only=True, members=members) or {}
    missing = [k for k in archs if k not in known]
    if not missing:
        return known
    if len(missing) <= COARSE_TIMED + 1:  # a small plan (the lab profile's): timing every architecture costs seconds
        return {**known, **calibrate([archs[k] for k in missing], device, progress=progress, members=members)}
    sizes_ = {k: size(archs[k]) for k in archs}
    counted = {k: f for k, (f, _) in sizes_.items()}
    cheap = sorted(missing, key=counted.get)[: max(1, (3 * len(missing)) // 4)]  # the costliest quarter is never timed
    m = min(COARSE_TIMED, len(cheap))  # spread over the cheap ones' FLOPs, the cheapest and the dearest of them included
    picks = {cheap[round(i * (len(cheap) - 1) / max(m - 1, 1))] for i in range(m)}
    measured = calibrate([archs[k] for k in picks], device, progress=progress, members=members)
    return from_flops(cfgs, {**known, **measured}, sizes_, members)


def from_flops(cfgs: list[RunConfig], costs: dict[str, dict], sizes_: dict[str, tuple[float, int]] | None = None,
               members: int = 1) -> dict[str, dict]:
    """`costs` completed for every architecture among `cfgs` it lacks: an overhead plus a rate times its FLOPs,
    fitted to the measured ones, marked 'coarse'."""
    archs = {arch_key(c, members): c for c in cfgs}
    sizes_ = sizes_ or {k: size(c) for k, c in archs.items()}
    counted = {k: f for k, (f, _) in sizes_.items()}
    # Measured here: above about 0.1 GFLOP per batch every family costs 25-45 ms per forward GFLOP on a CPU, so a
    # step is an overhead plus a rate times the FLOPs; the rate comes from the larger timed architectures.
    points = [(counted[k], v["step_s"]) for k, v in costs.items() if counted.get(k, 0) > 0]
    if not points:
        raise ConfigError("no architecture of the plan could be timed here, so nothing can be estimated; "
                          "free the device (memory) and try again")
    large = [s / f for f, s in points if f >= 0.1 * max(f for f, _ in points)]
    rate = sorted(large)[len(large) // 2]
    overhead = sorted(max(s - rate * f, 0.0) for f, s in points)[len(points) // 2]
    out = dict(costs)
    for k in archs:
        if k not in out:
            step, n_params = overhead + rate * counted[k], sizes_[k][1]
            out[k] = {"step_s": step, "forward_s": step / 3, "n_params": n_params, "timed_steps": 0, "coarse": True,
                      "peak_model_bytes": float(n_params * 16 * members)}  # weights, gradients, Adam's moments
    return out


def learned(results: list, device: str) -> dict[str, dict]:
    """Step times that finished runs (labcore.store.runs.RunResult) trained on `device` (a `device_name`) actually took,
    per architecture (the median over its runs): `estimate_seconds` solved for the step time, each validation
    forward pass counted as a third of a step. They replace the calibration's for runs still to train."""
    per_arch: dict[str, list[float]] = {}
    for r in results:
        if r.ok and r.device == device and r.seconds > 0:
            n_train, n_val, _ = sizes(r.config.data)
            t = r.config.train
            steps = t.epochs * (math.ceil(n_train / t.batch_size) + math.ceil(n_val / t.batch_size) / 3)
            fused = max(len(r.fused), 1)  # a fused run's seconds are its share: the group's step is `fused` times that
            per_arch.setdefault(arch_key(r.config, fused), []).append(r.seconds * fused / steps)
    return {k: {"step_s": sorted(v)[len(v) // 2], "forward_s": sorted(v)[len(v) // 2] / 3, "learned_from": len(v)}
            for k, v in per_arch.items()}


def estimate_seconds(cfg: RunConfig, costs: dict[str, dict], members: int = 1) -> float:
    """Estimated training time of `cfg` (what the run store records as `seconds`: training steps plus the
    validation pass after every epoch), from its architecture's measured costs; trained with `members` seeds
    fused, its share of the group's time."""
    c = costs[arch_key(cfg, members)]
    n_train, n_val, _ = sizes(cfg.data)
    steps = cfg.train.epochs * math.ceil(n_train / cfg.train.batch_size)
    forwards = cfg.train.epochs * math.ceil(n_val / cfg.train.batch_size)
    return (steps * c["step_s"] + forwards * c["forward_s"]) / members


def peak_bytes(cfg: RunConfig, costs: dict[str, dict], members: int = 1) -> float:
    """Peak memory of training `cfg` (with `members` seeds fused: the group's): the model's share (measured or
    counted) plus its dataset as uint8."""
    n_train, n_val, n_test = sizes(cfg.data)
    return costs[arch_key(cfg, members)]["peak_model_bytes"] + (n_train + n_val + n_test) * math.prod(SHAPES[cfg.data.name])
