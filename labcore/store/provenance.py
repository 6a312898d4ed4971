"""What produced a result: parameters, seed, git commit, package versions, device, data source."""
from __future__ import annotations

import datetime as dt
import json
import platform
from importlib import metadata
from collections.abc import Sequence
from typing import Any

import torch

from labcore.core.data import fingerprint
from labcore.machine import device_info, native_bf16, pick_device
from labcore.store.identity import digest_of, git_state
from labcore.store.runs import STORE_VERSION
from labcore.store.tracking import resolve_mode, run_name, wandb_dirs

PACKAGES = ("labcore", "torch", "torchvision", "numpy", "scikit-learn", "matplotlib", "papermill", "wandb")


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


def collect(device: torch.device | str, data_source: str | None = None, datasets: tuple[str, ...] = (),
            tracking: str | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance record for a report; `datasets` adds each one's source and checksum (data.fingerprint),
    `tracking` the effective W&B mode; `extra` takes seeds and anything run-specific."""
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "packages": {k: v for k, v in package_versions().items()  # cuDNN only where a GPU computed the page
                     if k != "cuDNN" or torch.device(device).type == "cuda"},
        "device": device_info(device),
        "platform": platform.platform(),
        "data_source": data_source,
        "data": {name: fingerprint(name) for name in datasets},
        "run_store_version": STORE_VERSION,
        "tracking": resolve_mode(tracking) if tracking else None,
        **extra,
    }


def of_runs(results: Sequence[Any], device: str, tracking: str | None, **extra: Any) -> dict[str, Any]:
    """`collect` for a report built from stored runs (labcore.store.runs.RunResult): their data sources, datasets,
    keys (unless `extra` gives run_keys, e.g. by study), the devices that trained them and every distinct set of
    numeric settings they trained with, plus `extra` (seeds, probe settings, ...)."""
    numerics = {json.dumps(r.numerics, sort_keys=True) for r in results if getattr(r, "numerics", None)}
    if tracking and resolve_mode(tracking) != "disabled":  # where to find the report's runs in W&B
        extra = {"wandb_runs": [run_name(r.config.label(), r.key) for r in results],
                 "wandb_folder": str(wandb_dirs()["WANDB_DIR"] / "wandb"), **extra}
    return collect(pick_device(str(device)), data_source=", ".join(sorted({r.data_source for r in results})),
                   datasets=tuple(sorted({r.config.data.name for r in results})), tracking=tracking,
                   **{"run_keys": [r.key for r in results], **extra}, trained_on=sorted({r.device for r in results}),
                   numerics=[json.loads(n) for n in sorted(numerics)],
                   fused_runs=sum(len(r.fused) > 1 for r in results),
                   trained_with=trained_with(results), regimes=regimes(results),
                   bf16_here=bf16_here(results, pick_device(str(device))))


def bf16_here(results: Sequence[Any], device: torch.device) -> str | None:
    """Where some runs trained in bf16 autocast: whether the device rendering this page computes bfloat16 natively
    (a store trained on a CPU with AMX serves a laptop without it: its numbers stand, re-deriving them here is
    slower). None when no run used bf16."""
    n = sum(getattr(r, "precision", "fp32") == "bf16" for r in results)
    if not n:
        return None
    native, why = native_bf16(device)
    return (f"{n} of these runs trained in bfloat16 autocast; {why}, so "
            + ("`make verify` re-derives them here natively." if native else
               "they are served as stored, and `make verify` here re-derives them in emulated bfloat16 (slower)."))


def _count(rows: list[dict]) -> list[dict]:
    """Distinct rows, each with the number of runs it stands for, most runs first."""
    counts: dict[str, int] = {}
    for row in rows:
        key = json.dumps(row, sort_keys=True)
        counts[key] = counts.get(key, 0) + 1
    return [{**json.loads(k), "runs": n} for k, n in sorted(counts.items(), key=lambda kv: -kv[1])]


def trained_with(results: Sequence[Any]) -> list[dict]:
    """What computed a page's runs, each distinct combination once with its count: the code's fingerprint, the
    data's, the commit that trained them, and whether they were kept for newer code after `make verify`."""
    return _count([{"code": digest_of(r.code) if r.code else "not recorded",
                    "data": f"{r.config.data.name} {(r.data or {}).get('sha256', 'not recorded')[:12]}",
                    "commit": (r.commit or "unknown")[:12],
                    "kept": (f"after re-deriving {r.kept['rederived']} of {r.kept['of']} stale runs identically"
                             if r.kept else "")} for r in results])


def regimes(results: Sequence[Any]) -> list[dict]:
    """How a page's runs were computed, each distinct way once with its count: the device, the precision (fp32, or
    bf16 autocast), the numeric settings that can move a number in its last bits (threads, TF32, deterministic
    algorithms), fused or alone, compiled."""
    out = []
    for r in results:
        n = r.numerics or {}
        out.append({"device": r.device, "precision": r.precision, "threads": n.get("threads"),
                    "tf32": bool(n.get("tf32_matmul")),
                    "deterministic": n.get("deterministic"), "fused": len(r.fused) > 1, "compiled": r.compiled})
    return _count(out)
