"""Training one run from scratch: its data on the device, its model from its seed, the training loop, the test
evaluation, its W&B run, and the record of what computed it (code, data and numeric settings).

The store (labcore.store.runs) decides whether a run must train; this module only trains it.
"""
from __future__ import annotations

import functools
import platform
import time
from dataclasses import dataclass

import torch
from torch import nn

from labcore.core import data as data_mod
from labcore.core.config import ConfigError, DataConfig, RunConfig
from labcore.core.models import count_parameters
from labcore.core.train import RunFailed, evaluate, fit, init_model
from labcore.faults import lost
from labcore.machine import configure, device_info, numerics, pick_device, resolve_precision
from labcore.store import identity
from labcore.store.result import RunResult
from labcore.store.tracking import Tracker, run_name

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
              deterministic: bool = False, precision: str | None = None) -> Trained:
    """Train one run from scratch (`group` and `profile` only name it in W&B). A failure of the config itself
    (RUN_ERRORS: a loss that became NaN) becomes a result with status 'failed', its error and the epochs it
    finished; the machine's faults anywhere in it (moving the data to the device, building the model, training)
    raise RunLost (labcore.faults); anything else propagates as the bug it is. `precision`: train in this
    precision ('fp32' or 'bf16', as `make verify` re-derives a record) instead of resolving the config's here."""
    try:
        return _train_run(cfg, device, tracking, checkpoints, estimate_seconds, compile, group, profile, deterministic,
                          precision)
    except Exception as exc:
        fault = lost(cfg.label(), exc)
        if fault is None:
            raise
        raise fault from exc


def _train_run(cfg: RunConfig, device: str | torch.device, tracking: str, checkpoints: tuple[int, ...],
               estimate_seconds: float | None, compile: bool, group: str | None, profile: str | None,
               deterministic: bool, precision: str | None) -> Trained:
    """`train_run` without the translation of the machine's faults."""
    device = pick_device(str(device))
    precision = precision or resolve_precision(cfg.train.precision, device)
    configure(device, deterministic)
    splits = load_splits(cfg.data).to(device)
    model = init_model(cfg, device, splits.input_shape, len(splits.classes))
    states = {0: cpu_state(model)} if 0 in checkpoints else {}
    history: list[dict] = []

    steps_per_epoch = -(-len(splits.y_train) // cfg.train.batch_size)

    def on_epoch(epoch: int, row: dict, m: nn.Module) -> None:
        history.append(row)
        tracker.log(row, step=epoch * steps_per_epoch)
        if epoch in checkpoints:
            states[epoch] = cpu_state(m)

    tracker = new_tracker(cfg, tracking, group, profile)
    start = time.perf_counter()
    info = {"n_params": count_parameters(model), "device": device_info(device), "data_source": splits.source,
            "estimate_seconds": estimate_seconds, "node": platform.node(), "compiled": compile,
            "numerics": numerics(device, precision), **identity_of(cfg, splits, "alone")}
    try:
        if not compile:  # W&B's hooks on every parameter would break a compiled graph into pieces
            tracker.watch(model)
        fit(model, splits, cfg.train, cfg.seed, on_epoch=on_epoch, compile=compile, on_step=tracker.log_step,
            precision=precision)
        seconds = time.perf_counter() - start
        test = evaluate(model, splits.x_test, splits.y_test, splits)
        tracker.finish({"test_acc": test["accuracy"], "test_loss": test["loss"], "seconds": seconds})
    except RUN_ERRORS as exc:
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500]
        result = RunResult(cfg, history, {}, seconds=time.perf_counter() - start, status="failed", error=error, **info)
        return Trained(result, None, {})
    finally:
        tracker.finish()  # no-op after a normal finish; closes the W&B run if training raised
    return Trained(RunResult(cfg, history, test, seconds=seconds, **info), cpu_state(model), states)
