"""Faults of the machine, not of the config: a run that hits one is *lost* (nothing stored, still pending, retried),
never stored as *failed*, because a run's record must be a pure function of its config.

What belongs to the config (a loss that turns non-finite, a model that cannot be built) is a failed run; what
comes from the machine (device or host memory, a CUDA error, disk space, permissions) is classified here; anything
else is a bug and propagates. A leaf module (torch and the standard library only).
"""
from __future__ import annotations

import errno

import torch


class RunLost(RuntimeError):
    """The machine stopped a run: `resource` names what ran out or broke, `fresh_process` whether this process can
    no longer use its GPU (a CUDA error poisons the context, so only a new process may retry)."""

    def __init__(self, label: str, resource: str, reason: str, fresh_process: bool = False) -> None:
        super().__init__(f"{label}: {resource} ({reason})")
        self.label, self.resource, self.reason, self.fresh_process = label, resource, reason, fresh_process

    def __reduce__(self):  # Ray sends it back from a worker: keep every field
        return (RunLost, (self.label, self.resource, self.reason, self.fresh_process))


_DISK = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "disk quota exceeded"}
_ACCESS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system"}
_PLACE = {errno.ENOTDIR: "a file stands where labcore needs a folder", errno.EEXIST: "a file stands where labcore needs a "
          "folder", errno.EISDIR: "a folder stands where labcore writes a file"}


def classify(exc: BaseException) -> tuple[str, bool] | None:
    """(the resource, needs a fresh process) when `exc` comes from the machine, else None (a config failure or a bug)."""
    accelerator_error = getattr(torch, "AcceleratorError", ())  # torch >= 2.8 raises this for CUDA errors
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of device memory", False
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "DefaultCPUAllocator" in str(exc)):
        return "out of host memory", False  # PyTorch reports a failed CPU allocation as a RuntimeError
    if (accelerator_error and isinstance(exc, accelerator_error)) or (
            isinstance(exc, RuntimeError) and ("CUDA error" in str(exc) or "CUBLAS_STATUS" in str(exc))):
        return "a CUDA error", True
    if isinstance(exc, OSError) and exc.errno in _DISK:
        return f"{_DISK[exc.errno]} at {exc.filename or 'an unnamed path'}", False
    if isinstance(exc, OSError) and exc.errno in _ACCESS:
        return f"{_ACCESS[exc.errno]} at {exc.filename or 'an unnamed path'}", False
    if isinstance(exc, OSError) and exc.errno in _PLACE:
        where = exc.filename if exc.errno == errno.EISDIR else _culprit(exc.filename)
        return f"{_PLACE[exc.errno]}: {where or 'an unnamed path'}", False
    return None


def _culprit(path: str | None) -> str | None:
    """The file that stands in a folder's way on `path` (the nearest existing part of it that is not a folder)."""
    if not path:
        return path
    from pathlib import Path

    for part in [Path(path), *Path(path).parents]:
        if part.exists():
            return str(part)
    return path


def lost(label: str, exc: BaseException) -> RunLost | None:
    """`exc` as a RunLost for the run `label`, or None when it is not the machine's fault."""
    kind = classify(exc)
    if kind is None:
        return None
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return RunLost(label, kind[0], f"{type(exc).__name__}: {first}", kind[1])


def advice(exc: RunLost) -> str:
    """What to do about a lost run, in one clause."""
    if exc.fresh_process:
        return "this process's GPU context is unusable: run `make train` again (a new process retries it)"
    if "memory" in exc.resource:
        return "it was tried twice; free the memory other work holds, or lower train.batch_size, then `make train` again"
    if "disk" in exc.resource or "space" in exc.resource:
        return "free space there (or point LABCORE_RUNS / LABCORE_REPORTS elsewhere), then run the command again"
    if "permission" in exc.resource or "read-only" in exc.resource:
        return "make that folder writable (or point LABCORE_RUNS / LABCORE_REPORTS elsewhere), then run it again"
    if "stands where" in exc.resource:
        return ("move it out of the way (or point LABCORE_RUNS / LABCORE_CACHE / LABCORE_REPORTS at a folder), then "
                "run the command again")
    return "run the command again"


def one_line(exc: OSError) -> str | None:
    """The one line a command prints when the machine refuses a write (disk space, permissions), or None."""
    kind = classify(exc)
    if kind is None:
        return None
    return f"error: {kind[0]}; {advice(RunLost('', kind[0], str(exc), kind[1]))}"


def refused(exc: OSError) -> int:
    """For a command's main: print `one_line` for a write the machine refused and return exit status 2; any other
    OSError is re-raised (a bug, or a missing file the command should have named itself)."""
    import sys

    line = one_line(exc)
    if line is None:
        raise exc
    print(line, file=sys.stderr)
    return 2
