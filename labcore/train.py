"""Training and evaluation loops over in-memory splits. Everything returns values; nothing is only printed."""
from __future__ import annotations

import math
import os
import sys
import random
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix
from torch import nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import Splits, batches

EpochCallback = Callable[[int, dict, nn.Module], None]
StepCallback = Callable[[int, torch.Tensor], None]  # (global step, the batch's loss, still on the device)


class RunFailed(RuntimeError):
    """Training stopped because the run itself failed (its loss became NaN or infinite)."""


def pick_device(preference: str = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; or exactly the device named."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def flush_denormals(device: torch.device) -> None:
    """On CPUs, treat subnormal floats as zero.

    Deep plain networks' vanishing activations and gradients become subnormal floats, which x86 CPUs
    process tens of times slower (smoke runs took 10x longer); flushing them changes nothing above 1e-38.
    """
    if device.type == "cpu":
        torch.set_flush_denormal(True)


def show_progress() -> bool:
    """Progress bars in interactive sessions only (a terminal, or JupyterLab's widgets); headless runs (reports,
    tests, CI) and output redirected to a log file keep logs quiet."""
    if os.environ.get("LABCORE_HEADLESS") or os.environ.get("CI"):
        return False
    if "ipykernel" in sys.modules:  # a notebook kernel: tqdm.auto draws widgets, whatever stderr is
        return True
    return sys.stderr.isatty()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD with momentum, with the config's weight decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


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
        on_step: StepCallback | None = None, step_every: int = 20) -> list[dict]:
    """Train `model` (already on its device) and return one dict per epoch.

    Each dict has epoch, train_loss and train_acc (averaged over the epoch's batches, in training
    mode, as the lab reported them), val_loss and val_acc (eval mode), lr and seconds. A loss that
    becomes NaN or infinite stops training with RunFailed (after the epoch's callback has seen it).
    `compile` runs the training steps through torch.compile (worth it only for long runs: the first
    step compiles for 15-30 s). `on_step` sees every `step_every`-th batch's loss (W&B's per-step curve);
    reading it forces a device sync, hence not every step.
    """
    device = next(model.parameters()).device
    flush_denormals(device)
    fmt = memory_format(model, cfg)
    model.to(memory_format=fmt)  # parameters only; the state dict's values are unchanged
    step_model = torch.compile(model) if compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
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
            with autocast:
                logits = step_model(xb)
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
        val_logits = predict(model, splits.x_val, splits)
        y_val = splits.y_val.cpu()
        row = {
            "epoch": epoch,
            "train_loss": loss_sum.item() / n,
            "train_acc": correct.item() / n,
            "val_loss": nn.functional.cross_entropy(val_logits, y_val).item(),
            "val_acc": (val_logits.argmax(1) == y_val).float().mean().item(),
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row, model)
        if not math.isfinite(row["train_loss"]):
            raise RunFailed(f"training loss became {row['train_loss']} in epoch {epoch}")
    return history


def mean_history(histories: list[dict] | list[list[dict]]) -> list[dict]:
    """Average several seeds' histories epoch by epoch (a single history is returned as is)."""
    if not histories or isinstance(histories[0], dict):
        return list(histories)
    n = min(len(h) for h in histories)
    return [{k: (v if k == "epoch" else float(np.mean([h[i][k] for h in histories])))
             for k, v in histories[0][i].items()} for i in range(n)]


def top_confusions(confusion: list[list[int]], classes: tuple[str, ...], k: int = 5) -> list[tuple[str, str, int]]:
    """The `k` most frequent (true, predicted, count) mistakes in a confusion matrix."""
    cm = np.asarray(confusion).copy()
    np.fill_diagonal(cm, 0)
    order = np.argsort(cm, axis=None)[::-1][:k]
    return [(classes[i], classes[j], int(cm[i, j])) for i, j in zip(*np.unravel_index(order, cm.shape)) if cm[i, j]]


def convergence(histories: list[dict] | list[list[dict]], window: int = 3, tol: float = 0.005) -> dict:
    """Has training levelled off? Reads the last `window` epochs of the mean curves over seeds.

    Verdicts: 'still improving' only while validation is still improving (accuracy up by `tol` or more, or
    validation loss down by more than 2 %); 'overfitting' when the best validation loss is more than `window`
    epochs old and it has risen by over 2 % since; 'plateau' when validation has stopped improving but the
    training loss still falls by 5 % or more (more epochs fit the training set without helping validation);
    'levelled off' when both have levelled off within the window (not 'converged': the window cannot show
    what much longer training would do); 'too short to tell' with `window` epochs or fewer.
    """
    history = mean_history(histories)
    assert history, "empty history"
    w = min(window, len(history) - 1)
    best = max(history, key=lambda r: r["val_acc"])
    if len(history) <= window:  # not enough epochs to see a plateau; say so instead of guessing
        return {"best_epoch": best["epoch"], "best_val_acc": best["val_acc"], "window": w, "epochs": len(history),
                "val_acc_gain": float("nan"), "val_loss_drop": float("nan"), "train_loss_drop": float("nan"),
                "verdict": "too short to tell"}
    best_loss = min(history, key=lambda r: r["val_loss"])
    gain = history[-1]["val_acc"] - history[-1 - w]["val_acc"]
    val_drop = 1 - history[-1]["val_loss"] / history[-1 - w]["val_loss"]
    loss_drop = 1 - history[-1]["train_loss"] / history[-1 - w]["train_loss"]
    if history[-1]["epoch"] - best_loss["epoch"] > window and history[-1]["val_loss"] > 1.02 * best_loss["val_loss"]:
        verdict = "overfitting"
    elif gain >= tol or val_drop > 0.02:
        verdict = "still improving"
    elif loss_drop >= 0.05:
        verdict = "plateau"
    else:
        verdict = "levelled off"
    return {"best_epoch": best["epoch"], "best_val_acc": best["val_acc"], "window": w, "epochs": len(history),
            "val_acc_gain": gain, "val_loss_drop": val_drop, "train_loss_drop": loss_drop, "verdict": verdict}


def convergence_sentence(c: dict) -> str:
    """Plain-language reading of `convergence(...)`: it claims nothing beyond the epochs it saw."""
    if c["verdict"] == "too short to tell":
        return (f"**Too short to tell**: {c['epochs']} epoch(s) cannot show a plateau; "
                f"the best validation accuracy was {c['best_val_acc']:.4f} at epoch {c['best_epoch']}.")
    facts = (f"over the last {c['window']} epochs the validation accuracy changed by {c['val_acc_gain']:+.4f}, the "
             f"validation loss by {-c['val_loss_drop']:+.1%} and the training loss by {-c['train_loss_drop']:+.1%}; "
             f"the best validation accuracy, {c['best_val_acc']:.4f}, came at epoch {c['best_epoch']}")
    return {
        "levelled off": f"**Levelled off** within these {c['epochs']} epochs: {facts}. This window cannot show what much "
                     "longer training would do.",
        "plateau": f"**Plateau**: {facts}. The training loss still falls while validation has stopped improving: more "
                   "epochs fit the training images better without helping on new ones (a plateau, or the start of "
                   "overfitting).",
        "overfitting": f"**Past its best (overfitting)**: {facts}, and the validation loss has been rising for several "
                       "epochs.",
        "still improving": f"**Not converged yet**: {facts}. Validation is still improving, so more epochs would "
                           "likely help.",
    }[c["verdict"]]
