"""Fused seeds: the seeds of one config trained together as one batched model (torch.func: stacked parameters
and vmap), each stored as its own run under its own key.

Each member starts from the weights it would start from alone, draws its own batch order and augmentation from
its own generator, keeps its own BatchNorm statistics and takes its own optimizer steps (Adam and SGD act element
by element, so stacking the parameters changes only how the arithmetic is grouped). The first step agrees with a
run trained alone to float rounding; training then amplifies rounding, as between two GPUs (tests/test_fused.py
states the tolerance: 3 % in the losses, 5 % in the weights). `train_fused` trains them and the engine's jobs store them. What fusion saves is the
per-step overhead (Python, the dispatcher, kernel launches, the optimizer), paid once for all members: it is what
bounds the small networks here on a GPU, and the MLPs on a CPU. A member whose loss becomes non-finite fails alone.
Not fused: W&B's gradient histograms (its hooks need each member's own forward pass) and torch.compile.
"""
from __future__ import annotations

import copy
import json
import math
import platform
import re
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, stack_module_state
from tqdm.auto import tqdm

from labcore.core.config import RunConfig, TrainConfig
from labcore.core.batches import batches
from labcore.core.data import Splits
from labcore.core.models import count_parameters
from labcore.core.train import EpochCallback, epoch_row, evaluate, init_model, make_optimizer, make_schedule
from labcore.faults import lost
from labcore.files import replacing
from labcore.machine import configure, device_info, flush_denormals, numerics, pick_device, resolve_precision, show_progress
from labcore.paths import cache_dir
from labcore.store import training
from labcore.store.result import RunResult

# Where fusing pays, by device type and family, measured back to back (README "Fused seeds and packing"): on the CPU only the
# MLPs gain (their steps are overhead); convolutions there run slower fused. On a GPU every family here is
# launch-bound, so all are fused until `make gpu-check` has measured the card (`measured_packing`).
FUSE_ON = {"cpu": ("mlp",), "cuda": "all"}


def packing_path(device: torch.device) -> Path:
    """Where `make gpu-check` keeps what packs runs best on this card: .cache/labcore/packing-<card>.json."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device_info(device)).strip("-")
    return cache_dir() / f"packing-{slug}.json"


def measured_packing(device: torch.device) -> str | None:
    """'fused', 'fractional' or 'one at a time': what `make gpu-check` measured fastest on this GPU, or None (also
    for a driver without the GPU itself, e.g. one sending runs to a Ray cluster's GPUs)."""
    try:
        return json.loads(packing_path(device).read_text())["fastest"]
    except (OSError, ValueError, KeyError, RuntimeError, AssertionError):  # no such card here: never measured
        return None


def record_packing(device: torch.device, fastest: str, figures: dict) -> Path:
    """Keep what packs runs best on this GPU (`make gpu-check`'s timing), for FUSE=auto to follow."""
    path = packing_path(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_text(json.dumps({"fastest": fastest, "device": device_info(device), "figures": figures}, indent=1))
    return path


def pays(cfg: RunConfig, device: torch.device, measured: str | None = None) -> bool:
    """Whether runs of `cfg`'s family train faster fused than one after another on `device`: on a GPU what
    `make gpu-check` measured there (`measured`, when given), else FUSE_ON."""
    if device.type == "cuda" and measured is not None:
        return measured == "fused"
    families = FUSE_ON.get(device.type, ())
    return families == "all" or cfg.model.family in families


def group_key(cfg: RunConfig) -> str:
    """Runs that can be fused share everything but the seed: the key of the config with seed 0."""
    return cfg.replace(seed=0).key()


class Fused:
    """N models of one architecture as one batched model: parameters and buffers stacked along a new first
    dimension, one optimizer and schedule over the stacks."""

    def __init__(self, models: list[nn.Module], cfg: TrainConfig, total_steps: int, precision: str | None = None
                 ) -> None:
        assert len({type(m) for m in models}) == 1, "fused members must share one architecture"
        self.n = len(models)
        self.params, self.buffers = stack_module_state(models)  # {name: [N, ...]}, the params leaves with grad
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only; the stacks hold the weights
        self.opt = make_optimizer(list(self.params.values()), cfg)
        self.sched = make_schedule(self.opt, cfg, total_steps)
        device = next(iter(self.params.values())).device
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                       enabled=(precision or resolve_precision(cfg.precision, device)) == "bf16")
        self._each_own_batch = torch.vmap(self._one, in_dims=(0, 0, 0))
        self._all_same_batch = torch.vmap(self._one, in_dims=(0, 0, None))

    def _one(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def step(self, xb: torch.Tensor, yb: torch.Tensor, alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every member on its own batch (xb [N, B, ...], yb [N, B]); returns each member's
        mean loss and correct count, [N] each, still on the device. Members not `alive` add nothing to the loss."""
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
        """Every member's logits for one normalised batch xb [B, ...], in eval mode and full precision (as
        `train.predict` validates a run alone): [N, B, K] on the device."""
        self.base.eval()
        return self._all_same_batch(self.params, self.buffers, xb)

    def predict(self, x: torch.Tensor, splits: Splits, batch_size: int = 1000) -> torch.Tensor:
        """Every member's logits for uint8 images `x`, in eval mode: [N, len(x), K] on the CPU."""
        out = [self.forward(xb) for xb, _ in
               batches(x, torch.zeros(len(x), device=x.device), batch_size, splits.mean, splits.std)]
        return torch.cat(out, dim=1).float().cpu()

    @torch.no_grad()
    def write_back(self, models: list[nn.Module]) -> None:
        """Copy each member's current weights and statistics into its own module (for checkpoints, evaluation)."""
        for i, m in enumerate(models):
            for name, t in [*m.named_parameters(), *m.named_buffers()]:
                t.copy_((self.params.get(name) if name in self.params else self.buffers[name])[i])


def fit_fused(models: list[nn.Module], splits: Splits, cfg: TrainConfig, seeds: list[int],
              on_epoch: list[EpochCallback | None] | None = None, progress: bool | None = None,
              on_step=None, step_every: int = 20, precision: str | None = None
              ) -> tuple[list[list[dict]], dict[int, str]]:
    """Train `models` (one architecture, already on their device) as one, member i with seed `seeds[i]`, as
    `train.fit` trains each alone (but in the default memory layout, never channels-last, and never compiled);
    returns (each member's per-epoch rows, {member: why it failed}). A member's `seconds` per epoch is its share of
    the epoch's wall time. `on_step(step, losses [N])` every `step_every`. A failed member keeps being computed
    (its loss masked out) until the group ends: it costs its share, and it cannot disturb the others."""
    device = next(models[0].parameters()).device
    flush_denormals(device)
    n = len(models)
    steps_per_epoch = -(-len(splits.y_train) // cfg.batch_size)
    fused = Fused(models, cfg, cfg.epochs * steps_per_epoch, precision)
    gens = [torch.Generator().manual_seed(s) for s in seeds]  # each member's batch order and augmentation
    histories: list[list[dict]] = [[] for _ in range(n)]
    failed: dict[int, str] = {}
    alive = torch.ones(n, dtype=torch.bool, device=device)
    show = show_progress() if progress is None else progress
    step = 0
    for epoch in tqdm(range(1, cfg.epochs + 1), desc=f"epochs ({n} fused)", disable=not show, leave=False):
        start = time.perf_counter()
        loss_sum = torch.zeros(n, device=device)
        correct = torch.zeros(n, device=device, dtype=torch.long)
        feeds = [batches(splits.x_train, splits.y_train, cfg.batch_size, splits.mean, splits.std, generator=g,
                         augmentation=cfg.augment) for g in gens]
        for parts in zip(*feeds):
            xb = torch.stack([x for x, _ in parts])  # [N, B, C, H, W]
            yb = torch.stack([y for _, y in parts])  # [N, B]
            loss, right = fused.step(xb, yb, alive)
            step += 1
            if on_step is not None and step % step_every == 0:
                on_step(step, loss)
            loss_sum += loss * yb.shape[1]
            correct += right
        val_logits = fused.predict(splits.x_val, splits)  # [N, V, K]
        fused.write_back(models)
        y_val, n_train = splits.y_val.cpu(), len(splits.y_train)
        seconds, losses, rights = (time.perf_counter() - start) / n, loss_sum.tolist(), correct.tolist()
        for i in range(n):
            if i in failed:
                continue
            row = epoch_row(epoch, losses[i], rights[i], n_train, val_logits[i], y_val, fused.opt.param_groups[0]["lr"],
                            seconds)
            histories[i].append(row)
            if on_epoch is not None and on_epoch[i] is not None:
                on_epoch[i](epoch, row, models[i])
            if not math.isfinite(row["train_loss"]):
                failed[i] = f"RunFailed: training loss became {row['train_loss']} in epoch {epoch}"
                alive[i] = False
        if len(failed) == n:
            break
    return histories, failed


def train_fused(cfgs: list[RunConfig], device: str | torch.device = "auto", tracking: str = "offline",
                checkpoints: list[tuple[int, ...]] | None = None, estimate_seconds: float | None = None,
                groups: list[str | None] | None = None, profile: str | None = None, deterministic: bool = False,
                precision: str | None = None) -> list[training.Trained]:
    """Train runs that differ only in their seed as one fused model (labcore.engine.fused); one `training.Trained` per config,
    in order, each recording its group's seeds. `estimate_seconds`: each member's share. A member whose loss
    becomes non-finite is failed alone; the machine's faults raise RunLost for the whole group (labcore.faults),
    whose members can then train alone. `groups`: each member's W&B group."""
    assert len({group_key(c) for c in cfgs}) == 1, "fused runs must differ in their seed only"
    try:
        return _train_fused(cfgs, device, tracking, checkpoints or [() for _ in cfgs], estimate_seconds,
                            groups or [None for _ in cfgs], profile, deterministic, precision)
    except Exception as exc:
        fault = lost(f"{cfgs[0].label()} and {len(cfgs) - 1} fused seed(s)", exc)
        if fault is None:
            raise
        raise fault from exc


def _train_fused(cfgs: list[RunConfig], device: str | torch.device, tracking: str, checkpoints: list[tuple[int, ...]],
                 estimate_seconds: float | None, groups: list[str | None], profile: str | None, deterministic: bool,
                 precision: str | None) -> list[training.Trained]:
    device = pick_device(str(device))
    precision = precision or resolve_precision(cfgs[0].train.precision, device)
    configure(device, deterministic)
    splits = training.load_splits(cfgs[0].data).to(device)
    models = [init_model(c, device, splits.input_shape, len(splits.classes)) for c in cfgs]
    states: list[dict[int, dict]] = [{0: training.cpu_state(m)} if 0 in ck else {} for m, ck in zip(models, checkpoints)]
    steps_per_epoch = -(-len(splits.y_train) // cfgs[0].train.batch_size)
    trackers = [training.new_tracker(c, tracking, g, profile, alongside=True) for c, g in zip(cfgs, groups)]

    def saver(i: int) -> EpochCallback:
        def on_epoch(epoch: int, row: dict, m: nn.Module) -> None:
            trackers[i].log(row, step=epoch * steps_per_epoch)
            if epoch in checkpoints[i]:
                states[i][epoch] = training.cpu_state(m)
        return on_epoch

    def on_step(step: int, losses: torch.Tensor) -> None:  # losses [N], still on the device
        for i, t in enumerate(trackers):
            t.log_step(step, losses[i])

    info = {"n_params": count_parameters(models[0]), "device": device_info(device), "data_source": splits.source,
            "estimate_seconds": estimate_seconds, "node": platform.node(), "compiled": False,
            "numerics": numerics(device, precision), "fused": tuple(c.seed for c in cfgs), **training.identity_of(cfgs[0], splits, "fused")}
    start = time.perf_counter()
    try:
        histories, failed = fit_fused(models, splits, cfgs[0].train, [c.seed for c in cfgs],
                                      on_epoch=[saver(i) for i in range(len(cfgs))], on_step=on_step,
                                      precision=precision)
        seconds = (time.perf_counter() - start) / len(cfgs)  # each member's share of the group's wall time
        out = []
        for i, (cfg, model) in enumerate(zip(cfgs, models)):
            if i in failed:
                trackers[i].finish()
                result = RunResult(cfg, histories[i], {}, seconds=seconds, status="failed", error=failed[i], **info)
                out.append(training.Trained(result, None, {}))
                continue
            test = evaluate(model, splits.x_test, splits.y_test, splits)
            trackers[i].finish({"test_acc": test["accuracy"], "test_loss": test["loss"], "seconds": seconds})
            out.append(training.Trained(RunResult(cfg, histories[i], test, seconds=seconds, **info),
                                    training.cpu_state(model), states[i]))
        return out
    finally:
        for t in trackers:
            t.finish()  # no-op after a normal finish; closes the W&B runs if training raised
