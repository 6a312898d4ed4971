"""File-system habits every writer in labcore shares: an exclusive lock, a write that is never seen half done, and
tensors written with a full disk named as the OSError it is. A leaf module (the standard library, and torch only to
write tensors)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Busy(RuntimeError):
    """The lock is held by another process; `holder` is its pid as it wrote it ('?' when unknown)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by process {holder}")
        self.path, self.holder = path, holder


@contextlib.contextmanager
def locked(path: Path, wait: bool = True, on_wait: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created with its folder if missing) for the block, and write this
    process's pid into it. Held by another process: wait for it (printing `on_wait` first, if given), or with
    `wait=False` raise Busy at once, naming the holder's pid. The kernel releases it if this process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                f.seek(0)
                raise Busy(path, f.read().strip() or "?") from None
            if on_wait:
                print(on_wait, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a private temporary path beside `path` to write a file or a folder into; when the block ends
    normally it takes `path`'s place in one rename (a reader sees the old or the new, never half of one),
    and when it raises, the temporary is removed and `path` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():  # a folder cannot replace a non-empty folder: swap through a rename
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            _remove(old)
            path.rename(old)
            tmp.rename(path)
            _remove(old)
        else:
            tmp.replace(path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    """Delete a file or a folder tree, if there."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB pieces)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# What torch's serializer says when the disk fills under it (a RuntimeError, not an OSError).
_WRITE_FAILED = ("inline_container", "PytorchStreamWriter", "basic_ios::clear", "iostream error")


def save_tensors(state: dict[str, Any], path: Path, folder: Path) -> None:
    """torch.save, with a disk that fills while writing named as the OSError it is (ENOSPC at `folder`, with the
    space the weights need and what is free), so the machine's fault rules (labcore.faults) take it."""
    import torch  # only the writers of weights pay for it: the rest of this module is the standard library

    try:
        torch.save(state, path)
    except RuntimeError as exc:
        if not any(s in str(exc) for s in _WRITE_FAILED):
            raise
        need = sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
        free = shutil.disk_usage(path.parent).free
        if free > 2 * need + 2**26:  # room enough: not a full disk, so the error is not the machine's to name
            raise
        raise OSError(errno.ENOSPC, f"writing {path.name} failed with {free / 2**20:.1f} MiB free; the weights need "
                      f"{need / 2**20:.1f} MiB", str(folder)) from exc
