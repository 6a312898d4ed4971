"""Weights & Biases logging, offline by default: never prompts for a login, never touches the network.

Local files (the run store and the reports) stay the source of truth; W&B is a mirror for people
who like its dashboards. Mode: the `tracking` parameter ("offline", "online" or "disabled"),
overridden by the environment variable LABCORE_TRACKING when it is set.
"""
from __future__ import annotations

import os
from typing import Any

from .config import ConfigError
from .paths import PROJECT_ROOT

MODES = ("offline", "online", "disabled")


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


class Tracker:
    """One W&B run (or nothing, when disabled): `log` per epoch, `finish` with a summary."""

    def __init__(self, mode: str, name: str, config: dict[str, Any], group: str | None = None) -> None:
        self.mode = resolve_mode(mode)
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        wandb_dir = os.environ.get("WANDB_DIR") or str(PROJECT_ROOT / ".cache")
        os.makedirs(wandb_dir, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "labcore"), name=name, group=group,
                              config=config, mode=self.mode, dir=wandb_dir, reinit="finish_previous")

    def log(self, row: dict[str, Any]) -> None:
        """Log one epoch's metrics."""
        if self.run is not None:
            self.run.log(row)

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Store the summary and close the run."""
        if self.run is not None:
            self.run.summary.update(summary or {})
            self.run.finish()
            self.run = None
