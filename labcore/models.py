"""Model families. Plain and residual variants are one class with a `residual` flag.

A residual block computes x + f(x) where its plain twin computes f(x), with the same f and so
the same parameters; where the shape changes, a shortcut projection is added (the only extra
parameters). Model code never picks a device: callers move the model.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import ConfigError, ModelConfig


def _norm1d(norm: str, n: int) -> nn.Module:
    return nn.BatchNorm1d(n) if norm == "batch" else nn.Identity()


class DenseBlock(nn.Module):
    """f(x) = relu(norm(W x + b)); the MLP's hidden layer."""

    def __init__(self, width: int, norm: str) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = _norm1d(norm, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.linear(x)))


class MLP(nn.Module):
    """flatten -> linear(in, width) -> ReLU -> `depth` x DenseBlock -> linear(width, classes) (the lab's MLP)."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int, depth: int,
                 residual: bool = False, norm: str = "none") -> None:
        super().__init__()
        self.residual = residual
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU())
        self.blocks = nn.ModuleList(DenseBlock(width, norm) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # [B, C, H, W] -> [B, width]
        for block in self.blocks:
            h = h + block(h) if self.residual else block(h)
        return self.head(h)


def build_model(cfg: ModelConfig, in_shape: tuple[int, int, int], num_classes: int = 10) -> nn.Module:
    """The network that `cfg` names, for images of shape (C, H, W); impossible shapes raise ConfigError."""
    builder = _BUILDERS.get(cfg.family)
    if builder is None:
        raise ConfigError(f"model.family {cfg.family!r} is not built yet; available: {', '.join(_BUILDERS)}")
    return builder(cfg, tuple(in_shape), num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


_BUILDERS = {
    "mlp": lambda c, s, k: MLP(s, k, c.width, c.depth, c.residual, c.norm),
}
