"""Batches from in-memory uint8 tensors: a seeded order, crops and flips drawn per epoch, normalised per batch.

Batches are sliced from the decoded tensors (labcore.core.data) with a seeded permutation and normalised on the
device, so there are no per-sample PIL transforms and no worker processes on the hot path.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator

import torch


@functools.lru_cache(maxsize=16)
def _constants(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """The normalisation constants as [1, C, 1, 1] tensors on `device`, made once (not copied to a GPU per batch)."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float32, scaled to [0, 1] then standardised per channel."""
    m, s = _constants(tuple(mean), tuple(std), x.device)
    return (x.float().div_(255) - m) / s


def draw_augmentation(b: int, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Crop offsets and flips for `b` images, drawn from `generator` on the CPU: int64 [3, b] (dy, dx, flip)."""
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.stack([dy, dx, flip.long()])


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop from a zero-padded image and random horizontal flip, on a whole uint8 batch."""
    return apply_augmentation(x, draw_augmentation(len(x), generator, pad).to(x.device), pad)


def apply_augmentation(x: torch.Tensor, draws: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """The crops and flips `draws` ([3, B] from `draw_augmentation`, on x's device) applied to uint8 images x."""
    b, c, h, w = x.shape
    dy, dx, flip = draws[0], draws[1], draws[2].bool()
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # [B, C, H+2p, W+2p]
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B, 1, 1, W]
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]  # [B, C, H, W]


def epoch_draws(n: int, batch_size: int, generator: torch.Generator | None, augmentation: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One epoch's randomness, drawn at once on the CPU in the order a batch-by-batch draw takes it (so batches are
    bit-identical to drawing per batch): the sample order [n], and each batch's crops and flips [3, n] or None."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if not augmentation:
        return order, None
    assert generator is not None, "augmentation needs the training generator"
    draws = [draw_augmentation(min(batch_size, n - start), generator) for start in range(0, n, batch_size)]
    return order, torch.cat(draws, dim=1)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, mean: tuple[float, ...], std: tuple[float, ...],
            generator: torch.Generator | None = None, augmentation: bool = False
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float batches from uint8 tensors; shuffled (seeded) when a generator is given. The epoch's
    order and augmentation reach the device in one copy each, not one per batch (a copy from pageable host
    memory waits for the GPU: a sync per step)."""
    order, draws = epoch_draws(len(y), batch_size, generator, augmentation)
    order = order.to(x.device)
    draws = draws.to(x.device) if draws is not None else None
    for start in range(0, len(y), batch_size):
        idx = order[start:start + batch_size]
        xb = x[idx]
        if draws is not None:
            xb = apply_augmentation(xb, draws[:, start:start + batch_size])
        yield normalize(xb, mean, std), y[idx]
