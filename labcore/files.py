"""Two file-system habits every writer in labcore shares: an exclusive lock, and a write that is never seen half
done. A leaf module (standard library only)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


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
