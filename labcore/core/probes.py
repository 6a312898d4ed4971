"""Gradient probes: how large are the gradients that reach each layer?

Probes never change a model: gradients come from `torch.autograd.grad`, so `.grad` is never
written (no stale gradients for a later optimiser step); batch-norm running statistics, which a
training-mode forward pass updates, are restored afterwards; the model's mode is restored; and
the forward hooks used to find the layers' order are removed even when the probe fails.
They work on any model `build_model` makes, on whatever device the model is on.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch import nn

from labcore.core.config import ConfigError, TrainConfig
from labcore.core.batches import normalize
from labcore.core.data import Splits
from labcore.machine import flush_denormals
from labcore.core.train import init_model, memory_format

Batch = tuple[torch.Tensor, torch.Tensor]
_KINDS = ((nn.Conv2d, "conv"), (nn.Linear, "linear"), (nn.modules.batchnorm._BatchNorm, "norm"))


def probe_batches(splits: Splits, n_batches: int = 11, batch_size: int = 128, seed: int = 0) -> list[Batch]:
    """Fixed, seeded training batches (normalised, on the CPU): the lab used 11 batches of 128."""
    if n_batches * batch_size > len(splits.y_train):
        raise ConfigError(f"probe.batches x probe.batch_size = {n_batches} x {batch_size} = {n_batches * batch_size:,} "
                          f"images, more than the {len(splits.y_train):,} training images; lower one, or data.subset")
    idx = torch.randperm(len(splits.y_train), generator=torch.Generator().manual_seed(seed))
    idx = idx[: n_batches * batch_size].view(n_batches, batch_size).cpu()
    x, y = splits.x_train.cpu(), splits.y_train.cpu()
    return [(normalize(x[i], splits.mean, splits.std), y[i]) for i in idx]


def layer_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the modules that own parameters, in the order a forward pass calls them (input -> output)."""
    order: list[str] = []
    handles = []
    try:
        for name, module in model.named_modules():
            if any(True for _ in module.parameters(recurse=False)):
                handles.append(module.register_forward_hook(lambda m, i, o, name=name: order.append(name)))
        with torch.no_grad():
            was_training = model.training
            model.eval()  # eval: no batch-norm statistics are updated by this pass
            model(example[:2])
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(order))  # a module called twice keeps its first position


@contextmanager
def _unchanged(model: nn.Module, train_mode: bool = True) -> Iterator[torch.memory_format]:
    """Run a probe in `train_mode`, then restore the model's mode and buffers (batch-norm running statistics).

    Yields the memory format inputs should take: channels-last for convolutional models, as in training (the
    lab's 64-channel ResNetCNN: 2.0 against 3.0 s per probe batch here); the model's own layout is restored."""
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    fmt = memory_format(model, TrainConfig())
    model.to(memory_format=fmt)
    try:
        model.train(train_mode)
        yield fmt
    finally:
        model.train(was_training)
        model.to(memory_format=torch.contiguous_format)  # build_model's and load_model's layout
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])


def _kind(module: nn.Module) -> str:
    return next((k for cls, k in _KINDS if isinstance(module, cls)), type(module).__name__.lower())


def gradient_norms(model: nn.Module, batches: Sequence[Batch], train_mode: bool = True) -> pd.DataFrame:
    """Per-parameter gradient statistics of the cross-entropy loss, one row per parameter and batch.

    Columns: param (e.g. 'blocks.3.body.0.weight'), layer (its module), kind (conv/linear/norm),
    tensor (weight/bias), depth (the layer's position from the input, 0-based), batch, norm (L2),
    mean_abs, max_abs. `train_mode` as in the lab's measurement (batch statistics in batch norm).
    """
    device = next(model.parameters()).device
    flush_denormals(device)
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(layer_order(model, batches[0][0].to(device)))}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rows = []
    with _unchanged(model, train_mode) as fmt:
        for b, (x, y) in enumerate(batches):
            loss = nn.functional.cross_entropy(model(x.to(device).contiguous(memory_format=fmt)), y.to(device))
            grads = torch.autograd.grad(loss, [p for _, p in named])
            for (name, _), g in zip(named, grads):
                layer, _, tensor = name.rpartition(".")
                g = g.detach().float()
                rows.append({"param": name, "layer": layer, "kind": _kind(modules[layer]), "tensor": tensor,
                             "depth": order.get(layer, -1), "batch": b, "norm": g.norm().item(),
                             "mean_abs": g.abs().mean().item(), "max_abs": g.abs().max().item()})
    return pd.DataFrame(rows).sort_values(["depth", "param", "batch"], kind="stable").reset_index(drop=True)


def layer_norms(df: pd.DataFrame, kinds: Sequence[str] = ("conv", "linear")) -> pd.DataFrame:
    """Per-layer gradient norm per batch (and per epoch and seed, when the table has those columns):
    sqrt(|grad W|^2 + |grad b|^2), for layers of the given kinds."""
    sub = df[df["kind"].isin(kinds)]
    keys = ["layer", "depth", "kind", "batch"] + [c for c in ("epoch", "seed") if c in df.columns]
    out = sub.assign(sq=sub["norm"] ** 2).groupby(keys, as_index=False)["sq"].sum()
    out["norm"] = np.sqrt(out.pop("sq"))
    return out.sort_values(["depth", *keys[4:], "batch"]).reset_index(drop=True)


def flow(df: pd.DataFrame, kinds: Sequence[str] = ("conv", "linear")) -> pd.DataFrame:
    """Mean and maximum absolute gradient of each layer's weights, averaged over batches, input to output."""
    sub = df[df["kind"].isin(kinds) & (df["tensor"] == "weight")]
    out = sub.groupby(["layer", "depth"], as_index=False).agg(mean_abs=("mean_abs", "mean"), max_abs=("max_abs", "mean"),
                                                              norm=("norm", "mean"))
    return out.sort_values("depth").reset_index(drop=True)


def summary(df: pd.DataFrame) -> dict[str, float]:
    """The lab's statistic: mean and standard deviation of all per-parameter gradient norms (every batch)."""
    return {"mean": float(df["norm"].mean()), "std": float(df["norm"].std()), "median": float(df["norm"].median()),
            "parameters": int(df["param"].nunique()), "batches": int(df["batch"].nunique())}


def first_conv_gradient(model: nn.Module, batches: Sequence[Batch]) -> torch.Tensor:
    """Gradient of the first convolution's weights, averaged over the batches: [out, in, k, k] on the CPU."""
    device = next(model.parameters()).device
    flush_denormals(device)
    modules = dict(model.named_modules())
    conv = next((n for n in layer_order(model, batches[0][0].to(device)) if isinstance(modules[n], nn.Conv2d)), None)
    assert conv is not None, "the model has no convolution"
    weight = modules[conv].weight
    total = torch.zeros_like(weight)
    with _unchanged(model) as fmt:
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x.to(device).contiguous(memory_format=fmt)), y.to(device))
            total += torch.autograd.grad(loss, [weight])[0]
    return (total / len(batches)).detach().cpu()


def attenuation(layers: pd.DataFrame) -> float:
    """How much the gradient shrinks from the output side to the input side: median norm of the last
    layer over that of the first (a `layer_norms` table). About 1 means gradients reach the input intact."""
    med = layers.groupby("depth")["norm"].median()
    return float(med.iloc[-1] / max(med.iloc[0], 1e-30))


def attenuation_by_epoch(layers: pd.DataFrame) -> dict[int, float]:
    """`attenuation` at every epoch of a `layer_norms` table with an 'epoch' column."""
    return {int(e): attenuation(g) for e, g in layers.groupby("epoch")}


def at_init(cfgs: Sequence, batches: Sequence[Batch], device: str | torch.device = "cpu") -> pd.DataFrame:
    """`gradient_norms` of the untrained models of several run configs (e.g. seeds), with a 'seed' column."""
    return pd.concat([gradient_norms(init_model(cfg, device), batches).assign(seed=cfg.seed) for cfg in cfgs],
                     ignore_index=True)


def before_after(store, cfg, batches: Sequence[Batch], device: str | torch.device = "cpu") -> pd.DataFrame:
    """Per-layer gradient norms (`layer_norms`) of a stored run at initialisation (rebuilt from its config and
    seed, the same weights training started from) and after training, with columns 'state' and 'position'
    (the layer's place from input, 0, to output, 1, so networks of different depths share an axis)."""
    init = layer_norms(gradient_norms(init_model(cfg, device), batches)).assign(state="initialisation")
    trained = layer_norms(gradient_norms(store.load_model(cfg).to(device), batches)).assign(state="after training")
    out = pd.concat([init, trained], ignore_index=True)
    rank = out["depth"].rank(method="dense") - 1  # 'depth' counts every module with parameters, norms included
    return out.assign(position=rank / max(rank.max(), 1))


def over_training(store, cfg, epochs: Sequence[int], batches: Sequence[Batch],
                  device: str | torch.device = "cpu") -> pd.DataFrame:
    """`gradient_norms` of a stored run's checkpoints, one block of rows per epoch (column 'epoch')."""
    frames = []
    for epoch in epochs:
        model = store.load_model(cfg, epoch=epoch).to(device)
        frames.append(gradient_norms(model, batches).assign(epoch=epoch))
    return pd.concat(frames, ignore_index=True)
