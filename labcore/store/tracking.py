"""Weights & Biases logging, offline by default: never prompts for a login, never touches the network.

Local files (the run store and the reports) stay the source of truth; W&B is a mirror for people
who like its dashboards. Mode: the `tracking` parameter ("offline", "online" or "disabled"),
overridden by the environment variable LABCORE_TRACKING when it is set.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from labcore.core.config import ConfigError
from labcore.paths import PROJECT_ROOT
from labcore.text import count

MODES = ("offline", "online", "disabled")
WATCH_EVERY = 100  # steps between W&B's gradient and parameter histograms (each costs a pass over all weights)
# On a GPU each histogram is read back to the host (a sync per tensor: about 340 for ResNet-56, some 20 ms in all),
# while a step takes a few ms: every 1000 steps keeps that under 1 % (every 100 would cost 5-10 %).
WATCH_EVERY_GPU = 1000


def check_mode(mode: str, where: str = "parameter 'tracking'") -> str:
    """`mode` if it is one of MODES, else a one-line ConfigError naming where it came from."""
    if mode not in MODES:
        raise ConfigError(f"tracking mode is {mode!r} ({where}); choose one of: {', '.join(MODES)}")
    return mode


def resolve_mode(mode: str = "offline") -> str:
    """The effective mode: $LABCORE_TRACKING, when set, wins over the (valid) parameter."""
    check_mode(mode)
    env = os.environ.get("LABCORE_TRACKING")
    return check_mode(env, "env LABCORE_TRACKING") if env else mode


def wandb_dirs() -> dict[str, Path]:
    """Every place W&B writes (runs, cache and its debug logs, config, data, artifacts), all under one folder:
    $WANDB_DIR or <project>/.cache/wandb. Nothing goes to ~/.cache/wandb or ~/.config/wandb."""
    base = Path(os.environ.get("WANDB_DIR") or PROJECT_ROOT / ".cache" / "wandb").expanduser().resolve()
    return {"WANDB_DIR": base, "WANDB_CACHE_DIR": base / "cache", "WANDB_CONFIG_DIR": base / "config",
            "WANDB_DATA_DIR": base / "data", "WANDB_ARTIFACT_DIR": base / "artifacts"}


def keep_wandb_in_project() -> Path:
    """Point W&B's locations into the project (unless the user set one) before wandb starts; returns the runs' dir."""
    for var, path in wandb_dirs().items():
        os.environ.setdefault(var, str(path))
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    return Path(os.environ["WANDB_DIR"])


def unsynced_runs() -> list[Path]:
    """Offline runs never uploaded with `wandb sync` (which leaves a *.wandb.synced file in the run's folder)."""
    runs = sorted((wandb_dirs()["WANDB_DIR"] / "wandb").glob("offline-run-*"))
    return [r for r in runs if r.is_dir() and not any(r.glob("*.synced"))]


def unsynced_message() -> str | None:
    """What `make clean` would lose, in one line naming the runs and how to keep them; None when nothing."""
    runs = unsynced_runs()
    if not runs:
        return None
    shown = ", ".join(r.name for r in runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
    return (f"make clean would delete {count(len(runs), 'W&B offline run')} never synced ({shown}); upload them with "
            f"`wandb sync {runs[0].parent}/offline-run-*`, or delete them anyway with `make clean FORCE=1`")


def run_name(label: str, key: str) -> str:
    """A W&B run name that finds the run again: the config's label (family, depth, width, variant, seed)
    and the first 8 characters of its run-store key (labels alone repeat across datasets and settings)."""
    return f"{label}-{key[:8]}"


class Tracker:
    """One W&B run (or nothing, when disabled): `log` per epoch, `finish` with a summary. A new one finishes any
    run this process left open (a notebook cell interrupted mid-training), unless it is opened `alongside` others
    (the members of fused seeds, each its own W&B run, all open at once)."""

    def __init__(self, mode: str, name: str, config: dict[str, Any], group: str | None = None,
                 tags: tuple[str, ...] = (), alongside: bool = False) -> None:
        self.mode = resolve_mode(mode)
        self.run = None
        self._steps: list[tuple[int, Any]] = []  # (step, loss tensor) of this epoch, sent with the epoch's row
        if self.mode == "disabled":
            return
        # W&B reads its settings from the environment when it is imported and when a run starts (not after): set
        # here for this `wandb.init`, and `finish` removes the ones this run set, and only those. Fused seeds start
        # their runs one after another and finish them in any order: the first sets them, a later one finds them set
        # and leaves them (putting back what it found would leave the first run's settings behind for good).
        self._set = [var for var in [*wandb_dirs(), "WANDB_SILENT"] if var not in os.environ]
        os.environ.setdefault("WANDB_SILENT", "true")
        wandb_dir = keep_wandb_in_project()  # before `import wandb`: it reads the locations at import and init
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "labcore"), name=name, group=group,
                              tags=list(tags), config=config, mode=self.mode, dir=str(wandb_dir),
                              reinit="create_new" if alongside else "finish_previous")

    def log(self, row: dict[str, Any], step: int | None = None) -> None:
        """Log one epoch's metrics (at training step `step`, so epochs and batches share W&B's x-axis), after the
        epoch's per-step losses."""
        if self.run is not None:
            self._flush_steps()
            self.run.log(row, step=step)

    def log_step(self, step: int, loss: Any) -> None:
        """The training loss of one batch, the per-step curve the lab looked at. Kept on its device until the epoch
        ends: reading it now would make the host wait for the GPU at every logged step."""
        if self.run is not None:
            self._steps.append((step, loss))

    def _flush_steps(self) -> None:
        """Send the buffered per-step losses, read from the device in one transfer."""
        if self._steps:
            import torch

            values = torch.stack([loss.float() for _, loss in self._steps]).tolist()
            for (step, _), value in zip(self._steps, values):
                self.run.log({"batch/train_loss": value}, step=step)
            self._steps = []

    def watch(self, model: Any, every: int | None = None) -> None:
        """Gradient and parameter histograms of every layer, every `every` steps (what wandb.watch logs; default
        WATCH_EVERY, or WATCH_EVERY_GPU for a model on a GPU)."""
        if self.run is not None:
            on_gpu = next(model.parameters()).device.type != "cpu"
            self.run.watch(model, log="all", log_freq=every or (WATCH_EVERY_GPU if on_gpu else WATCH_EVERY))

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Store the summary and close the run."""
        if self.run is not None:
            self._flush_steps()
            self.run.summary.update(summary or {})
            self.run.finish()
            self.run = None
            for var in self._set:
                os.environ.pop(var, None)
