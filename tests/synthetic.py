"""A tiny synthetic dataset for tests; importable by test subprocesses (unlike conftest, it creates nothing)."""
from __future__ import annotations

import torch

from labcore.core.data import Splits
from labcore.core.datasets import CLASSES


CONTENT = "synthetic"  # what a run trained on these splits records as its data's content


def use_splits(monkeypatch, make) -> None:
    """Train on `make(cfg)`'s splits instead of the real data, and check stored runs against them (not LABCORE_DATA)."""
    from labcore.store import training

    monkeypatch.setattr(training, "load_splits", make)
    monkeypatch.setattr(training, "data_content", lambda name: CONTENT)


def synthetic_splits(n: int = 512, shape: tuple[int, int, int] = (1, 8, 8), classes: int = 4, seed: int = 0) -> Splits:
    """A learnable toy dataset: each class lights up its own band of rows, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def make(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (m,), generator=g)
        x = torch.randint(0, 60, (m, *shape), generator=g)
        band = shape[1] // classes
        for c in range(classes):
            x[y == c, :, c * band:(c + 1) * band, :] += 150
        return x.to(torch.uint8), y

    (xtr, ytr), (xva, yva), (xte, yte) = make(n), make(n // 4), make(n // 4)
    return Splits("synthetic", xtr, ytr, xva, yva, xte, yte, classes=tuple(CLASSES["mnist"][:classes]),
                  mean=(0.3,) * shape[0], std=(0.3,) * shape[0], source="synthetic", content=CONTENT)
