"""Training and evaluation loops over in-memory splits. Everything returns values; nothing is only printed."""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import classification_report, confusion_matrix
from torch import nn
from tqdm.auto import tqdm

from labcore.core.config import RunConfig, TrainConfig
from labcore.core.batches import batches
from labcore.core.data import Splits
from labcore.core.datasets import CLASSES, SHAPES
from labcore.core.models import build_model
from labcore.machine import flush_denormals, resolve_precision, show_progress

EpochCallback = Callable[[int, dict, nn.Module], None]
StepCallback = Callable[[int, torch.Tensor], None]  # (global step, the batch's loss, still on the device)


class RunFailed(RuntimeError):
    """Training stopped because the run itself failed (its loss became NaN or infinite)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_shape(cfg: RunConfig, in_shape: tuple[int, int, int] | None, num_classes: int | None) -> tuple[tuple, int]:
    """The model's input shape and class count: as given, else those of the config's dataset (no data is loaded)."""
    return in_shape or SHAPES[cfg.data.name], num_classes or len(CLASSES[cfg.data.name])


def init_model(cfg: RunConfig, device: str | torch.device = "cpu", in_shape: tuple[int, int, int] | None = None,
               num_classes: int | None = None) -> nn.Module:
    """The untrained model a run of `cfg` starts from (same seed, same weights as its epoch-0 checkpoint)."""
    seed_everything(cfg.seed)
    return build_model(cfg.model, *model_shape(cfg, in_shape, num_classes)).to(device)


def make_optimizer(model: nn.Module | list[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD with momentum, with the config's weight decay, over a model's parameters (or these tensors)."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else list(model)
    fused = params[0].device.type == "cuda"  # one kernel for all parameters on a GPU; CPUs unchanged
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               fused=fused or None)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step learning-rate schedule: constant, cosine to zero, or /10 at the milestone fractions."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    if cfg.schedule == "multistep":
        steps = [int(m * total_steps) for m in cfg.milestones]
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=steps, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, splits: Splits, batch_size: int = 1000) -> torch.Tensor:
    """Logits [N, classes] for uint8 images `x`, in eval mode (restores the previous mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(xb.to(device)) for xb, _ in batches(x, torch.zeros(len(x), device=x.device), batch_size, splits.mean, splits.std)]
    model.train(was_training)
    return torch.cat(out).float().cpu()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, splits: Splits) -> dict:
    """Accuracy, mean cross-entropy, per-class precision/recall/F1 (scikit-learn) and confusion matrix."""
    logits = predict(model, x, splits)
    y = y.cpu()
    pred = logits.argmax(1)
    labels = list(range(len(splits.classes)))
    return {
        "accuracy": (pred == y).float().mean().item(),
        "loss": nn.functional.cross_entropy(logits, y).item(),
        "report": classification_report(y, pred, labels=labels, target_names=list(splits.classes),
                                        digits=3, output_dict=True, zero_division=0),
        "report_text": classification_report(y, pred, labels=labels, target_names=list(splits.classes),
                                             digits=3, zero_division=0),
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "predictions": pred.tolist(),
    }


def epoch_row(epoch: int, loss_sum: float, correct: int, n_train: int, val_logits: torch.Tensor, y_val: torch.Tensor,
              lr: float, seconds: float) -> dict:
    """One epoch of a run's history (what `fit` returns per epoch): training loss and accuracy averaged over the
    epoch's `n_train` images, validation loss and accuracy from `val_logits` [V, K] (CPU), the learning rate."""
    return {"epoch": epoch, "train_loss": loss_sum / n_train, "train_acc": correct / n_train,
            "val_loss": nn.functional.cross_entropy(val_logits, y_val).item(),
            "val_acc": (val_logits.argmax(1) == y_val).float().mean().item(), "lr": lr, "seconds": seconds}


def memory_format(model: nn.Module, cfg: TrainConfig) -> torch.memory_format:
    """channels_last for convolutional models when `cfg.channels_last`, else the default layout.

    Only where every convolution has at least 8 output channels: with fewer, PyTorch's channels-last CPU
    kernels can be far slower (seen here: a width-4 ResNet34 stalled for minutes on its second step).
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if cfg.channels_last and convs and min(c.out_channels for c in convs) >= 8:
        return torch.channels_last
    return torch.contiguous_format


def fit(model: nn.Module, splits: Splits, cfg: TrainConfig, seed: int,
        on_epoch: EpochCallback | None = None, progress: bool | None = None, compile: bool = False,
        on_step: StepCallback | None = None, step_every: int = 20, precision: str | None = None) -> list[dict]:
    """Train `model` (already on its device) and return one dict per epoch.

    Each dict has epoch, train_loss and train_acc (averaged over the epoch's batches, in training
    mode, as the lab reported them), val_loss and val_acc (eval mode), lr and seconds. A loss that
    becomes NaN or infinite stops training with RunFailed (after the epoch's callback has seen it).
    `compile` runs the training steps through torch.compile (worth it only for long runs: the first
    step compiles for 15-30 s). `on_step` sees every `step_every`-th batch's loss (W&B's per-step curve);
    reading it forces a device sync, hence not every step. `precision`: 'fp32' or 'bf16' as resolved for this
    device (default: `cfg.precision` resolved here, machine.resolve_precision).
    """
    device = next(model.parameters()).device
    flush_denormals(device)
    fmt = memory_format(model, cfg)
    model.to(memory_format=fmt)  # parameters only; the state dict's values are unchanged
    # On CUDA, CUDA graphs (reduce-overhead) also remove the per-kernel launch cost these small networks are bound by.
    step_model = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None) if compile else model
    precision = precision or resolve_precision(cfg.precision, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    gen = torch.Generator().manual_seed(seed)  # batch order and augmentation, independent of init
    steps_per_epoch = -(-len(splits.y_train) // cfg.batch_size)
    opt = make_optimizer(model, cfg)
    sched = make_schedule(opt, cfg, cfg.epochs * steps_per_epoch)
    show = show_progress() if progress is None else progress
    history, step = [], 0
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="epochs", disable=not show, leave=False):
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for xb, yb in batches(splits.x_train, splits.y_train, cfg.batch_size, splits.mean, splits.std,
                              generator=gen, augmentation=cfg.augment):
            xb, yb = xb.to(device, non_blocking=True).contiguous(memory_format=fmt), yb.to(device, non_blocking=True)
            # The compiled step only ever sees full batches, so it never recompiles (nor records a second CUDA
            # graph) for the epoch's shorter last batch, which runs eagerly on the same parameters.
            net = step_model if len(yb) == cfg.batch_size else model
            with autocast:
                logits = net(xb)
                loss = nn.functional.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if on_step is not None and step % step_every == 0:
                on_step(step, loss.detach())
            # Accumulate on the device: no host sync per step.
            loss_sum += loss.detach() * len(yb)
            correct += (logits.argmax(1) == yb).sum()
        n = len(splits.y_train)
        row = epoch_row(epoch, loss_sum.item(), correct.item(), n, predict(model, splits.x_val, splits),
                        splits.y_val.cpu(), opt.param_groups[0]["lr"], time.perf_counter() - start)
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row, model)
        if not math.isfinite(row["train_loss"]):
            raise RunFailed(f"training loss became {row['train_loss']} in epoch {epoch}")
    return history




def report_table(test: dict) -> pd.DataFrame:
    """`evaluate`'s per-class precision, recall and F1 as a table (3 digits), one row per class and average."""
    return pd.DataFrame(test["report"]).T.round(3)
