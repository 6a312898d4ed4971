"""The training step: one optimizer step of one model, or of N models of one architecture stacked into one batched
model (torch.func: stacked parameters and vmap). `train.fit` runs every run through one of these; calibration and
`make gpu-check` time the same objects, so what they measure is what trains.

Stacked members ("fused seeds") each start from the weights they would start from alone, keep their own BatchNorm
statistics and take their own optimizer steps (Adam and SGD act element by element, so stacking the parameters
changes only how the arithmetic is grouped): the first step agrees with a run trained alone to float rounding, and
training then amplifies rounding, as between two GPUs (tests/test_fused.py states the tolerance). What stacking saves
is the per-step overhead (Python, the dispatcher, kernel launches, the optimizer), paid once for all members.
Not stacked: W&B's gradient histograms (its hooks need each member's own forward pass) and torch.compile.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from labcore.core.config import TrainConfig

Batch = tuple[torch.Tensor, torch.Tensor]  # normalised images [B, C, H, W] and labels [B], on the device


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


def memory_format(model: nn.Module, cfg: TrainConfig) -> torch.memory_format:
    """channels_last for convolutional models when `cfg.channels_last`, else the default layout.

    Only where every convolution has at least 8 output channels: with fewer, PyTorch's channels-last CPU
    kernels can be far slower (seen here: a width-4 ResNet34 stalled for minutes on its second step).
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if cfg.channels_last and convs and min(c.out_channels for c in convs) >= 8:
        return torch.channels_last
    return torch.contiguous_format


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    """bfloat16 autocast where `precision` is 'bf16' (weights and optimizer stay fp32), else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class Learner:
    """What a training loop drives: `step` (one optimizer step of every member on its own batch), `forward` (every
    member's logits for one batch, eval mode, fp32), `sync` (members' weights into their modules), and the state a
    resumed run continues from. `n` members; the optimizer and schedule are per learner."""

    n: int
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler

    def lr(self) -> float:
        """The learning rate of the step just taken."""
        return self.opt.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        """Weights, optimizer and schedule: what a resumed run continues from."""
        return {"weights": self._weights(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`'s output (same architecture, same device type)."""
        self._load_weights(state["weights"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])


class Alone(Learner):
    """One model, as the lab trained it: its own forward and backward, channels-last where that pays, compiled
    when asked (`compile`: worth it only for long runs; the first step compiles for 15-30 s)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int, precision: str, compile: bool = False):
        self.n, self.model, self.batch_size = 1, model, cfg.batch_size
        device = next(model.parameters()).device
        self.fmt = memory_format(model, cfg)
        model.to(memory_format=self.fmt)  # parameters only; the state dict's values are unchanged
        # On CUDA, CUDA graphs (reduce-overhead) also remove the per-kernel launch cost these small networks are bound by.
        self.compiled = torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else None) \
            if compile else model
        self.autocast = _autocast(device, precision)
        self.opt = make_optimizer(model, cfg)
        self.sched = make_schedule(self.opt, cfg, total_steps)

    def step(self, parts: list[Batch], alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the single member's batch; its mean loss and correct count, [1] each, on the device."""
        (xb, yb), = parts
        xb = xb.contiguous(memory_format=self.fmt)
        # The compiled step only ever sees full batches, so it never recompiles (nor records a second CUDA graph)
        # for the epoch's shorter last batch, which runs eagerly on the same parameters.
        net = self.compiled if len(yb) == self.batch_size else self.model
        self.model.train()
        with self.autocast:
            logits = net(xb)
            loss = nn.functional.cross_entropy(logits.float(), yb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.detach().unsqueeze(0), (logits.argmax(1) == yb).sum().unsqueeze(0)

    @torch.no_grad()
    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        """Logits [1, B, K] for one normalised batch, in eval mode and full precision (restores training mode)."""
        was = self.model.training
        self.model.eval()
        out = self.model(xb)
        self.model.train(was)
        return out.unsqueeze(0)

    def sync(self, models: list[nn.Module]) -> None:
        """Nothing to copy: the model itself is trained."""

    def _weights(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _load_weights(self, weights: dict) -> None:
        self.model.load_state_dict(weights)


class Stacked(Learner):
    """N models of one architecture as one batched model: parameters and buffers stacked along a new first
    dimension, one optimizer and schedule over the stacks (default memory layout, never compiled)."""

    def __init__(self, models: list[nn.Module], cfg: TrainConfig, total_steps: int, precision: str) -> None:
        assert len({type(m) for m in models}) == 1, "stacked members must share one architecture"
        self.n = len(models)
        self.params, self.buffers = stack_module_state(models)  # {name: [N, ...]}, the params leaves with grad
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only; the stacks hold the weights
        self.opt = make_optimizer(list(self.params.values()), cfg)
        self.sched = make_schedule(self.opt, cfg, total_steps)
        self.autocast = _autocast(next(iter(self.params.values())).device, precision)
        self._each_own_batch = torch.vmap(self._one, in_dims=(0, 0, 0))
        self._all_same_batch = torch.vmap(self._one, in_dims=(0, 0, None))

    def _one(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def step(self, parts: list[Batch], alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every member on its own batch; each member's mean loss and correct count, [N]
        each, still on the device. Members not `alive` add nothing to the loss."""
        xb = torch.stack([x for x, _ in parts])  # [N, B, C, H, W]
        yb = torch.stack([y for _, y in parts])  # [N, B]
        self.base.train()
        with self.autocast:
            logits = self._each_own_batch(self.params, self.buffers, xb)  # [N, B, K]
        loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="none")
        loss = loss.view(self.n, -1).mean(1)  # [N]
        self.opt.zero_grad(set_to_none=True)
        torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()  # d(sum)/d(member i) is member i's own
        self.opt.step()
        self.sched.step()
        return loss.detach(), (logits.argmax(-1) == yb).sum(1)

    @torch.no_grad()
    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        """Every member's logits [N, B, K] for one normalised batch xb [B, ...], in eval mode and full precision."""
        self.base.eval()
        return self._all_same_batch(self.params, self.buffers, xb)

    @torch.no_grad()
    def sync(self, models: list[nn.Module]) -> None:
        """Copy each member's current weights and statistics into its own module (for checkpoints, evaluation)."""
        for i, m in enumerate(models):
            for name, t in [*m.named_parameters(), *m.named_buffers()]:
                t.copy_((self.params.get(name) if name in self.params else self.buffers[name])[i])

    def _weights(self) -> dict:
        return {k: v.detach().clone() for k, v in {**self.params, **self.buffers}.items()}

    @torch.no_grad()
    def _load_weights(self, weights: dict) -> None:
        for name, t in {**self.params, **self.buffers}.items():
            t.copy_(weights[name])


def learner(models: list[nn.Module], cfg: TrainConfig, total_steps: int, precision: str,
            compile: bool = False) -> Learner:
    """The step for `models` (on their device): one model alone, or several stacked into one."""
    if len(models) == 1:
        return Alone(models[0], cfg, total_steps, precision, compile)
    assert not compile, "stacked members are never compiled"
    return Stacked(models, cfg, total_steps, precision)
