"""A planned run: the config a notebook needs trained, the epochs whose weights it reads, and who needs it.

Exercises plan them (labcore.exercises), the analyses read their results (labcore.analysis) and the engine trains
them (labcore.engine): the one shape every layer above the store passes around.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labcore.core.config import RunConfig


@dataclass(frozen=True)
class Planned:
    """One run a notebook needs: its config, the epochs whose weights it needs, and who needs it."""

    cfg: RunConfig
    checkpoints: tuple[int, ...] = ()  # epochs whose weights are kept (0 = initialisation)
    notebooks: tuple[str, ...] = field(default=(), compare=False)
    study: str = field(default="runs", compare=False)  # the group it belongs to in its notebook (W&B's group)

    @property
    def key(self) -> str:
        """The run store's key (the config's hash)."""
        return self.cfg.key()


def every_epoch(cfg: RunConfig) -> tuple[int, ...]:
    """Checkpoints at initialisation and after every epoch (a few kB each for the models that use them)."""
    return tuple(range(cfg.train.epochs + 1))


def flatten(groups: Any) -> list[Planned]:
    """All Planned runs in a nested dict/list structure, in order."""
    if isinstance(groups, Planned):
        return [groups]
    if isinstance(groups, dict):
        return [p for v in groups.values() for p in flatten(v)]
    if isinstance(groups, (list, tuple)):
        return [p for v in groups for p in flatten(v)]
    return []
