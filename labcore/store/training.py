"""Training one run from scratch: its data on the device, its model from its seed, the training loop, the test
evaluation, its W&B run, and the record of what computed it (code, data and numeric settings).

The store (labcore.store.runs) decides whether a run must train; this module only trains it.
"""
from __future__ import annotations

import dataclasses

import functools
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from labcore.core import data as data_mod
from labcore.core.config import ConfigError, DataConfig, RunConfig
from labcore.core.models import count_parameters
from labcore.core.train import EpochCallback, RunFailed, evaluate, fit_members, init_model
from labcore.faults import lost
from labcore.machine import configure, device_info, numerics, pick_device, resolve_precision
from labcore.store import identity, resume_state
from labcore.store.resume_state import resume_folder
from labcore.store.result import RunResult
from labcore.store.tracking import Tracker, run_name
from labcore.text import count

# Errors that belong to the config (a loss that became NaN, a model that cannot be built): the run is stored as
# failed with its error and not retried on its own. The machine's faults (memory, a CUDA error, disk space,
# permissions) make it lost instead: nothing is stored (labcore.faults). Anything else is a bug and propagates.
RUN_ERRORS = (RunFailed, ConfigError)


@functools.lru_cache(maxsize=4)
def load_splits(cfg: DataConfig) -> data_mod.Splits:
    """Splits for `cfg`, decoded once per process (many runs share one dataset)."""
    return data_mod.load(cfg)


def data_content(name: str) -> str:
    """SHA-256 of dataset `name`'s decoded content as LABCORE_DATA holds it now (what a stored run is checked against)."""
    return data_mod.fingerprint(name)["sha256"]


def identity_of(cfg: RunConfig, splits: data_mod.Splits, kind: str) -> dict:
    """What a run's record keeps of what computed it besides its config: the code (trained `kind`: alone or fused)
    and the data's content (labcore.store.identity)."""
    return {"code": identity.code_fingerprint(kind, cfg.model.family), "commit": identity.git_state()["commit"],
            "data": {"name": cfg.data.name, "sha256": splits.content}}


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights and statistics on the CPU (for the store and checkpoints)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def new_tracker(cfg: RunConfig, tracking: str, group: str | None, profile: str | None,
                alongside: bool = False) -> Tracker:
    """The run's W&B run: a name that finds it again, grouped by notebook and study, tagged with the profile;
    `alongside` other open runs (fused seeds)."""
    return Tracker(tracking, name=run_name(cfg.label(), cfg.key()), config={**cfg.to_dict(), "key": cfg.key()},
                   group=group or f"{cfg.data.name}-{cfg.model.family}",
                   tags=(profile or "interactive", cfg.data.name, cfg.model.family,
                         "residual" if cfg.model.residual else "plain"), alongside=alongside)


@dataclass
class Trained:
    """What training one run produces: its result, final weights and the requested checkpoints (CPU tensors)."""

    result: RunResult
    model_state: dict[str, torch.Tensor] | None
    checkpoints: dict[int, dict]


def train_run(cfg: RunConfig, device: str | torch.device = "auto", tracking: str = "offline",
              checkpoints: tuple[int, ...] = (), estimate_seconds: float | None = None,
              compile: bool = False, group: str | None = None, profile: str | None = None,
              deterministic: bool = False, precision: str | None = None, resume_root: Path | None = None) -> Trained:
    """Train one run from scratch (or from its resume state): `train_runs` with one config."""
    return train_runs([cfg], device, tracking, [checkpoints], estimate_seconds, compile, [group], profile,
                      deterministic, precision, resume_root)[0]


def train_runs(cfgs: list[RunConfig], device: str | torch.device = "auto", tracking: str = "offline",
               checkpoints: list[tuple[int, ...]] | None = None, estimate_seconds: float | None = None,
               compile: bool = False, groups: list[str | None] | None = None, profile: str | None = None,
               deterministic: bool = False, precision: str | None = None,
               resume_root: Path | None = None) -> list[Trained]:
    """Train runs: one alone, or the seeds of one config stacked into one model (labcore.core.step); one Trained
    per config, in order. `estimate_seconds`: each run's share; `groups` and `profile` only name them in W&B.

    A member whose loss becomes non-finite (a failure of the config itself, RUN_ERRORS) becomes a result with status
    'failed', its error and the epochs it finished; the machine's faults anywhere (moving the data to the device,
    building the models, training) raise RunLost for all of them (labcore.faults); anything else propagates as the
    bug it is. `precision`: train in this precision ('fp32' or 'bf16', as `make verify` re-derives a record) instead
    of resolving the config's here. `resume_root`: where the runs keep their state after every epoch
    (`resume_folder`), and continue from it when an earlier attempt was interrupted; None: from scratch."""
    assert len({c.replace(seed=0).key() for c in cfgs}) == 1, "runs trained together must differ in their seed only"
    assert not (compile and len(cfgs) > 1), "stacked runs are never compiled"
    try:
        return _train(cfgs, device, tracking, checkpoints or [() for _ in cfgs], estimate_seconds, compile,
                      groups or [None for _ in cfgs], profile, deterministic, precision, resume_root)
    except Exception as exc:
        what = cfgs[0].label() + (f" and {count(len(cfgs) - 1, 'fused seed')}" if len(cfgs) > 1 else "")
        fault = lost(what, exc)
        if fault is None:
            raise
        raise fault from exc


def _train(cfgs: list[RunConfig], device: str | torch.device, tracking: str, checkpoints: list[tuple[int, ...]],
           estimate_seconds: float | None, compile: bool, groups: list[str | None], profile: str | None,
           deterministic: bool, precision: str | None, resume_root: Path | None) -> list[Trained]:
    """`train_runs` without the translation of the machine's faults."""
    device = pick_device(str(device))
    precision = precision or resolve_precision(cfgs[0].train.precision, device)
    configure(device, deterministic)
    splits = load_splits(cfgs[0].data).to(device)
    begun = time.perf_counter()  # a run's wall time: from its models' building to its test (the data's loading aside)
    models = [init_model(c, device, splits.input_shape, len(splits.classes)) for c in cfgs]
    kind = identity.kind_of(tuple(c.seed for c in cfgs) if len(cfgs) > 1 else None)
    info = {"n_params": count_parameters(models[0]), "device": device_info(device), "data_source": splits.source,
            "estimate_seconds": estimate_seconds, "node": platform.node(), "compiled": compile,
            "numerics": numerics(device, precision), **identity_of(cfgs[0], splits, kind),
            **({"fused": tuple(c.seed for c in cfgs)} if len(cfgs) > 1 else {})}
    resume = resume_state.Resume(resume_folder(resume_root, cfgs), cfgs, info, checkpoints) if resume_root else None
    saved = resume.load() if resume else None
    states = saved["checkpoints"] if saved else [{0: cpu_state(m)} if 0 in ck else {} for m, ck in zip(models, checkpoints)]
    steps_per_epoch = -(-len(splits.y_train) // cfgs[0].train.batch_size)
    trackers = [new_tracker(c, tracking, g, profile, alongside=len(cfgs) > 1) for c, g in zip(cfgs, groups)]

    def saver(i: int) -> EpochCallback:
        def on_epoch(epoch: int, row: dict, m: nn.Module) -> None:
            trackers[i].log(row, step=epoch * steps_per_epoch)
            if epoch in checkpoints[i]:
                states[i][epoch] = cpu_state(m)
        return on_epoch

    def on_step(step: int, losses: torch.Tensor) -> None:  # losses [N], still on the device
        for i, t in enumerate(trackers):
            t.log_step(step, losses[i])

    start = time.perf_counter() - (saved["seconds"] if saved else 0.0)
    try:
        if len(cfgs) == 1 and not compile:  # W&B's hooks on every parameter would break a compiled graph into pieces
            trackers[0].watch(models[0])
        histories, failed = _fit(models, splits, cfgs, [saver(i) for i in range(len(cfgs))], on_step, compile,
                                 precision, saved, resume and resume.saver(states, start))
        seconds = (time.perf_counter() - start) / len(cfgs)  # each member's share of the group's wall time
        resumed = resume.record() if saved else None
        out = [_finish(c, m, histories[i], failed.get(i), states[i], trackers[i], splits,
                       {**info, "seconds": seconds, "resumed": resumed}) for i, (c, m) in enumerate(zip(cfgs, models))]
    finally:
        for t in trackers:
            t.finish()  # no-op after a normal finish; closes the W&B runs if training raised
    if resume:
        resume.clear()  # finished: the store keeps what downstream notebooks need, the resume state goes
    wall = (time.perf_counter() - begun) / len(cfgs)  # each member's share, as `seconds` is
    return [dataclasses.replace(t, result=dataclasses.replace(t.result, wall_seconds=wall)) for t in out]


def _fit(models: list[nn.Module], splits: data_mod.Splits, cfgs: list[RunConfig], on_epoch: list, on_step,
         compile: bool, precision: str, saved: dict | None, on_state) -> tuple[list[list[dict]], dict[int, str]]:
    """`fit_members`, with a failure of the config itself (RUN_ERRORS) failing every member with its one line."""
    try:
        histories, failed = fit_members(models, splits, cfgs[0].train, [c.seed for c in cfgs], on_epoch=on_epoch,
                                        on_step=on_step, compile=compile, precision=precision,
                                        resume_from=saved["loop"] if saved else None, on_state=on_state)
        return histories, {i: f"RunFailed: {why}" for i, why in failed.items()}
    except RUN_ERRORS as exc:
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        return [[] for _ in models], {i: error for i in range(len(models))}


def _finish(cfg: RunConfig, model: nn.Module, history: list[dict], failure: str | None, states: dict,
            tracker: Tracker, splits: data_mod.Splits, info: dict) -> Trained:
    """One member's Trained: tested and with its weights, or failed with its error and the epochs it finished."""
    if failure is not None:
        tracker.finish()
        return Trained(RunResult(cfg, history, {}, status="failed", error=failure[:500], **info), None, {})
    test = evaluate(model, splits.x_test, splits.y_test, splits)
    tracker.finish({"test_acc": test["accuracy"], "test_loss": test["loss"], "seconds": info["seconds"]})
    return Trained(RunResult(cfg, history, test, **info), cpu_state(model), states)
