"""The run store: train a `RunConfig` once, keep its result and weights under the config's key.

A run is a pure function of its config (the seed included), so its result can be reused by any
report that asks for the same config: re-rendering a report retrains nothing, and a changed
config retrains only the runs it changes. Each run is independent and self-contained on disk
(`<store>/v<N>/<key>/result.json` and `model.pt`), so runs could be spread across processes.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data as data_mod
from .config import DataConfig, RunConfig
from .models import build_model, count_parameters
from .paths import runs_dir
from .provenance import device_info
from .tracking import Tracker
from .train import evaluate, fit, pick_device, seed_everything

# Bump when training or evaluation semantics change, so stored results from older code are not reused.
STORE_VERSION = 1


@dataclass(frozen=True)
class RunResult:
    """Everything a report needs from one training run."""

    config: RunConfig
    history: list[dict]  # one dict per epoch, as returned by `fit`
    test: dict  # `evaluate` on the test split
    n_params: int
    seconds: float  # training wall time (the run that produced it, not this process)
    device: str
    data_source: str
    cached: bool = False  # True when loaded from the store instead of trained now

    @property
    def key(self) -> str:
        """The run store's key of this run."""
        return self.config.key()

    def final(self, metric: str) -> float:
        """The last epoch's value of a history metric, e.g. final('val_acc')."""
        return self.history[-1][metric]

    def summary(self) -> dict[str, Any]:
        """Flat scalars for tables: config labels, final metrics, test accuracy, size and time."""
        m = self.config.model
        return {"family": m.family, "depth": m.depth, "width": m.width, "residual": m.residual,
                "seed": self.config.seed, "train_loss": self.final("train_loss"),
                "train_acc": self.final("train_acc"), "val_loss": self.final("val_loss"),
                "val_acc": self.final("val_acc"), "test_acc": self.test["accuracy"],
                "n_params": self.n_params, "seconds": self.seconds, "cached": self.cached,
                "device": self.device, "data_source": self.data_source}


class RunStore:
    """Directory of finished runs keyed by `RunConfig.key()`."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root or runs_dir()) / f"v{STORE_VERSION}"

    def path(self, cfg: RunConfig) -> Path:
        """Folder of the run for `cfg` (present only once the run finished)."""
        return self.root / cfg.key()

    def get(self, cfg: RunConfig) -> RunResult | None:
        """The stored result for `cfg`, or None."""
        f = self.path(cfg) / "result.json"
        if not f.is_file():
            return None
        raw = json.loads(f.read_text())
        return RunResult(config=cfg, **{k: raw[k] for k in ("history", "test", "n_params", "seconds",
                                                             "device", "data_source")}, cached=True)

    def checkpoint_epochs(self, cfg: RunConfig) -> set[int]:
        """Epochs for which the stored run of `cfg` has weights (empty when it has none or is not stored)."""
        return {int(f.stem.removeprefix("epoch_")) for f in (self.path(cfg) / "checkpoints").glob("epoch_*.pt")}

    def has_checkpoints(self, cfg: RunConfig, epochs: tuple[int, ...]) -> bool:
        """Whether the stored run of `cfg` has weights for all `epochs`."""
        return set(epochs) <= self.checkpoint_epochs(cfg)

    def put(self, result: RunResult, model: nn.Module, checkpoints: dict[int, dict] | None = None) -> None:
        """Store a finished run atomically (written to a temporary folder, then renamed)."""
        final = self.path(result.config)
        tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        record = {k: v for k, v in dataclasses.asdict(result).items() if k not in ("config", "cached")}
        record["config"] = result.config.to_dict()
        (tmp / "result.json").write_text(json.dumps(record))
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
        if checkpoints:
            (tmp / "checkpoints").mkdir()
            for epoch, state in checkpoints.items():
                torch.save(state, tmp / "checkpoints" / f"epoch_{epoch}.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)

    def load_model(self, cfg: RunConfig, in_shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                   epoch: int | None = None) -> nn.Module:
        """The model of a stored run on the CPU, in eval mode: trained, or at checkpoint `epoch` (0 = init).
        The input shape and class count default to those of the config's dataset."""
        model = build_model(cfg.model, *_shape(cfg, in_shape, num_classes))
        f = self.path(cfg) / ("model.pt" if epoch is None else f"checkpoints/epoch_{epoch}.pt")
        if not f.is_file():
            raise FileNotFoundError(f"run {cfg.label()} ({cfg.key()}) has no {f.name}; run it with checkpoints=({epoch},)")
        state = torch.load(f, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()


@functools.lru_cache(maxsize=4)
def load_splits(cfg: DataConfig) -> data_mod.Splits:
    """Splits for `cfg`, decoded once per process (many runs share one dataset)."""
    return data_mod.load(cfg)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _shape(cfg: RunConfig, in_shape: tuple[int, int, int] | None, num_classes: int | None) -> tuple[tuple, int]:
    """The model's input shape and class count: as given, else those of the config's dataset (no data is loaded)."""
    return in_shape or data_mod.SHAPES[cfg.data.name], num_classes or len(data_mod.CLASSES[cfg.data.name])


def init_model(cfg: RunConfig, device: str | torch.device = "cpu", in_shape: tuple[int, int, int] | None = None,
               num_classes: int | None = None) -> nn.Module:
    """The untrained model a run of `cfg` starts from (same seed, same weights as its epoch-0 checkpoint)."""
    seed_everything(cfg.seed)
    return build_model(cfg.model, *_shape(cfg, in_shape, num_classes)).to(device)


def train_run(cfg: RunConfig, device: str | torch.device = "auto", tracking: str = "offline",
              checkpoints: tuple[int, ...] = ()) -> tuple[RunResult, nn.Module, dict[int, dict]]:
    """Train one run from scratch; return its result, its model (on its device) and the weights at the
    requested `checkpoints` epochs (0 = at initialisation)."""
    device = pick_device(str(device))
    splits = load_splits(cfg.data).to(device)
    model = init_model(cfg, device, splits.input_shape, len(splits.classes))
    states = {0: _cpu_state(model)} if 0 in checkpoints else {}

    def on_epoch(epoch: int, row: dict, m: nn.Module) -> None:
        tracker.log(row)
        if epoch in checkpoints:
            states[epoch] = _cpu_state(m)

    tracker = Tracker(tracking, name=cfg.label(), config={**cfg.to_dict(), "key": cfg.key()},
                      group=f"{cfg.data.name}-{cfg.model.family}")
    start = time.perf_counter()
    try:
        history = fit(model, splits, cfg.train, cfg.seed, on_epoch=on_epoch)
        seconds = time.perf_counter() - start
        test = evaluate(model, splits.x_test, splits.y_test, splits)
        tracker.finish({"test_acc": test["accuracy"], "test_loss": test["loss"], "seconds": seconds})
    finally:
        tracker.finish()  # no-op after a normal finish; closes the W&B run if training raised
    result = RunResult(cfg, history, test, count_parameters(model), seconds, device_info(device), splits.source)
    return result, model, states


def run(cfg: RunConfig, store: RunStore | None = None, device: str | torch.device = "auto",
        tracking: str = "offline", refresh: bool = False, checkpoints: tuple[int, ...] = ()) -> RunResult:
    """The result for `cfg`: from the store when present (unless `refresh`), else trained and stored.

    `checkpoints` asks for the weights at those epochs too (0 = initialisation). A stored run without
    them is trained again with them: the same config and seed reproduce the same run.
    """
    store = store or RunStore()
    checkpoints = tuple(sorted({e for e in checkpoints if e <= cfg.train.epochs}))
    if not refresh and (hit := store.get(cfg)) is not None and store.has_checkpoints(cfg, checkpoints):
        return hit
    keep = tuple(sorted(set(checkpoints) | store.checkpoint_epochs(cfg)))  # retraining must not lose any
    result, model, states = train_run(cfg, device, tracking, keep)
    store.put(result, model, states)
    return result


def run_many(cfgs: list[RunConfig], store: RunStore | None = None, device: str | torch.device = "auto",
             tracking: str = "offline", checkpoints: tuple[int, ...] = ()) -> list[RunResult]:
    """`run` each config in order (each independent; trained ones are stored as soon as they finish)."""
    store = store or RunStore()
    return [run(cfg, store, device, tracking, checkpoints=checkpoints) for cfg in cfgs]
