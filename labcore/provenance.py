"""What produced a result: parameters, seed, git commit, package versions, device, data source."""
from __future__ import annotations

import datetime as dt
import platform
import subprocess
from importlib import metadata
from typing import Any

import torch

from .paths import PROJECT_ROOT

PACKAGES = ("labcore", "torch", "torchvision", "numpy", "scikit-learn", "matplotlib", "papermill", "wandb")


def git_state() -> dict[str, Any]:
    """Commit hash of the checkout and whether it has uncommitted changes (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the numbers."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info(device: torch.device | str) -> str:
    """Human-readable device, e.g. 'cuda: NVIDIA H100 80GB HBM3' or 'cpu: 2 threads'."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {torch.get_num_threads()} threads, {platform.machine()}"


def collect(device: torch.device | str, data_source: str | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance record for a report; `extra` takes parameters, seeds and anything run-specific."""
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "packages": package_versions(),
        "device": device_info(device),
        "platform": platform.platform(),
        "data_source": data_source,
        **extra,
    }
