"""The training loop (one, for a model alone or several stacked: labcore.core.step) and evaluation over in-memory
splits. Everything returns values; nothing is only printed."""
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
from labcore.core.step import Learner, learner, make_optimizer, make_schedule, memory_format  # noqa: F401 - the step's home
from labcore.machine import flush_denormals, resolve_precision, show_progress

EpochCallback = Callable[[int, dict, nn.Module], None]
StepCallback = Callable[[int, torch.Tensor], None]  # (global step, the batch's loss, still on the device)
StateCallback = Callable[[dict], None]  # what a resumed run continues from, after every epoch


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


def fit(model: nn.Module, splits: Splits, cfg: TrainConfig, seed: int,
        on_epoch: EpochCallback | None = None, progress: bool | None = None, compile: bool = False,
        on_step: StepCallback | None = None, step_every: int = 20, precision: str | None = None) -> list[dict]:
    """Train one `model` (already on its device) and return one dict per epoch: `fit_members` with one member.

    A loss that becomes NaN or infinite stops training with RunFailed (after the epoch's callback has seen it).
    `on_step(step, loss)` sees every `step_every`-th batch's loss, still on the device.
    """
    steps = (lambda step, losses: on_step(step, losses[0])) if on_step is not None else None
    histories, failed = fit_members([model], splits, cfg, [seed], [on_epoch], progress, compile, steps, step_every,
                                    precision)
    if failed:
        raise RunFailed(failed[0])
    return histories[0]


def fit_members(models: list[nn.Module], splits: Splits, cfg: TrainConfig, seeds: list[int],
                on_epoch: list[EpochCallback | None] | None = None, progress: bool | None = None,
                compile: bool = False, on_step: StepCallback | None = None, step_every: int = 20,
                precision: str | None = None, resume_from: dict | None = None,
                on_state: StateCallback | None = None) -> tuple[list[list[dict]], dict[int, str]]:
    """Train `models` (already on their device; one alone, or several of one architecture stacked, labcore.core.step),
    member i with seed `seeds[i]`; returns (each member's per-epoch rows, {member: why it failed}).

    Each row has epoch, train_loss and train_acc (averaged over the epoch's batches, in training mode, as the lab
    reported them), val_loss and val_acc (eval mode), lr and seconds (a member's share of the epoch's wall time).
    A member whose loss becomes non-finite fails alone: it keeps being computed, its loss masked out, until the
    others end. `on_step(step, losses [N])` every `step_every` steps (reading a loss forces a device sync).
    `precision`: 'fp32' or 'bf16' as resolved for this device (default: `cfg.precision` resolved here).
    `on_state(state)` receives, after every epoch, all a resumed run needs (`resume_from` continues from it:
    weights, optimizer, schedule, every generator's state, the rows so far), so that the result is the same
    bit for bit as a run never interrupted.
    """
    device = next(models[0].parameters()).device
    flush_denormals(device)
    n = len(models)
    steps_per_epoch = -(-len(splits.y_train) // cfg.batch_size)
    learn = learner(models, cfg, cfg.epochs * steps_per_epoch, precision or resolve_precision(cfg.precision, device),
                    compile)
    gens = [torch.Generator().manual_seed(s) for s in seeds]  # each member's batch order and augmentation
    state = {"epoch": 0, "step": 0, "histories": [[] for _ in range(n)], "failed": {}}
    if resume_from is not None:
        state = _restore(resume_from, learn, gens, models)
    histories, failed = state["histories"], state["failed"]
    alive = torch.tensor([i not in failed for i in range(n)], dtype=torch.bool, device=device)
    show = show_progress() if progress is None else progress
    desc = "epochs" + (f" ({n} fused)" if n > 1 else "")
    step = state["step"]
    for epoch in tqdm(range(state["epoch"] + 1, cfg.epochs + 1), desc=desc, disable=not show, leave=False,
                      initial=state["epoch"], total=cfg.epochs):
        start = time.perf_counter()
        loss_sum, correct, step = _epoch(learn, splits, cfg, gens, alive, step, on_step, step_every)
        val_logits = predict_members(learn, splits.x_val, splits)  # [N, V, K]
        learn.sync(models)
        y_val, n_train = splits.y_val.cpu(), len(splits.y_train)
        seconds, losses, rights = (time.perf_counter() - start) / n, loss_sum.tolist(), correct.tolist()
        for i in (i for i in range(n) if i not in failed):
            row = epoch_row(epoch, losses[i], rights[i], n_train, val_logits[i], y_val, learn.lr(), seconds)
            histories[i].append(row)
            if on_epoch is not None and on_epoch[i] is not None:
                on_epoch[i](epoch, row, models[i])
            if not math.isfinite(row["train_loss"]):
                failed[i] = f"training loss became {row['train_loss']} in epoch {epoch}"
                alive[i] = False
        if on_state is not None:
            on_state({"epoch": epoch, "step": step, "histories": histories, "failed": failed,
                      "learner": learn.state_dict(), "generators": [g.get_state() for g in gens],
                      "torch_rng": torch.get_rng_state()})
        if len(failed) == n:
            break
    return histories, failed


def _epoch(learn: Learner, splits: Splits, cfg: TrainConfig, gens: list[torch.Generator], alive: torch.Tensor,
           step: int, on_step: StepCallback | None, step_every: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pass over the training images, every member on its own order: (each member's summed loss [N], its
    correct count [N], both on the device, no host sync per step; the global step reached)."""
    device = alive.device
    loss_sum = torch.zeros(learn.n, device=device)
    correct = torch.zeros(learn.n, device=device, dtype=torch.long)
    feeds = [batches(splits.x_train, splits.y_train, cfg.batch_size, splits.mean, splits.std, generator=g,
                     augmentation=cfg.augment) for g in gens]
    for parts in zip(*feeds):
        parts = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in parts]
        loss, right = learn.step(parts, alive)  # [N] each
        step += 1
        if on_step is not None and step % step_every == 0:
            on_step(step, loss)
        loss_sum += loss * len(parts[0][1])
        correct += right
    return loss_sum, correct, step


def _restore(saved: dict, learn: Learner, gens: list[torch.Generator], models: list[nn.Module]) -> dict:
    """Put a learner, its generators and its members' modules where `fit_members` left them (`on_state`)."""
    assert len(saved["generators"]) == len(gens), "a resumed run must have the members it was saved with"
    learn.load_state_dict(saved["learner"])
    learn.sync(models)
    for g, s in zip(gens, saved["generators"]):
        g.set_state(s)
    torch.set_rng_state(saved["torch_rng"])
    return {"epoch": saved["epoch"], "step": saved["step"], "histories": [list(h) for h in saved["histories"]],
            "failed": {int(k): v for k, v in saved["failed"].items()}}


@torch.no_grad()
def predict_members(learn: Learner, x: torch.Tensor, splits: Splits, batch_size: int = 1000) -> torch.Tensor:
    """Every member's logits for uint8 images `x`, in eval mode and full precision: [N, len(x), K] on the CPU."""
    out = [learn.forward(xb) for xb, _ in
           batches(x, torch.zeros(len(x), device=x.device), batch_size, splits.mean, splits.std)]
    return torch.cat(out, dim=1).float().cpu()


def report_table(test: dict) -> pd.DataFrame:
    """`evaluate`'s per-class precision, recall, F1 and support (images), one row per class and average."""
    return pd.DataFrame(test["report"]).T.rename_axis("class")
