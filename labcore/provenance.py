"""What produced a result: parameters, seed, git commit, package versions, device, data source."""
from __future__ import annotations

import datetime as dt
import os
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
    status = git("status", "--porcelain", "--untracked-files=normal")  # a new, uncommitted file changes results too
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the numbers."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    # What torch was built with (a CUDA build runs on a CPU-only machine too; the device says what ran).
    versions["torch CUDA build"] = torch.version.cuda
    versions["cuDNN"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return versions


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), e.g. 'AMD EPYC 7B13'; else platform's guess."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device | str) -> str:
    """Human-readable device, e.g. 'cuda: NVIDIA H100 80GB HBM3' or 'cpu: 2 threads'."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    n = torch.get_num_threads()
    return f"{device.type}: {n} thread{'s' if n != 1 else ''} of {os.cpu_count()}, {cpu_model()}"


def collect(device: torch.device | str, data_source: str | None = None, datasets: tuple[str, ...] = (),
            tracking: str | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance record for a report; `datasets` adds each one's source and checksum (data.fingerprint),
    `tracking` the effective W&B mode; `extra` takes seeds and anything run-specific."""
    from .data import fingerprint
    from .runs import STORE_VERSION
    from .tracking import resolve_mode

    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "packages": package_versions(),
        "device": device_info(device),
        "platform": platform.platform(),
        "data_source": data_source,
        "data": {name: fingerprint(name) for name in datasets},
        "run_store_version": STORE_VERSION,
        "tracking": resolve_mode(tracking) if tracking else None,
        **extra,
    }
