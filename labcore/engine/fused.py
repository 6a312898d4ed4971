"""Fused seeds, the policy: which runs train together as one stacked model (the seeds of one config), where that
pays (by device and family, or as `make gpu-check` measured the card), each then stored as its own run under its
own key. How they train is the one training step and loop (labcore.core.step, labcore.core.train.fit_members),
driven by labcore.store.training.train_runs like a run alone. What fusion saves is the per-step overhead (Python,
the dispatcher, kernel launches, the optimizer), paid once for all members: it is what bounds the small networks
here on a GPU, and the MLPs on a CPU.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from labcore.core.config import RunConfig
from labcore.files import replacing
from labcore.machine import device_info
from labcore.paths import cache_dir

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
