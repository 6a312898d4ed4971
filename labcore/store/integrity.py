"""Whether a stored run's files are the ones labcore wrote: every file against the checksum written with it
(`checksums.json`), its record's config against the key it is stored under. A run that fails is damaged: named in
one line, never served, retrained like a stale run.

The record (result.json, small) is hashed on every read. Weights and checkpoints are hashed once and the verdict
remembered against the file's size, modification and change times and inode (in labcore's cache, never in the
store): a file rewritten in place changes its ctime even when its size and mtime are restored, so it is hashed
again. A record written before checksums existed is read as it is (only `make verify` can re-derive it).
"""
from __future__ import annotations

import atexit
import json
from pathlib import Path

from labcore.files import replacing, sha256

class Digests:
    """SHA-256 of files, remembered against each file's size, mtime, ctime and inode (in `memo`, a JSON file in
    labcore's cache, when given): a file is hashed again only once it changed."""

    def __init__(self, memo: Path | None = None) -> None:
        self.memo, self.known, self.dirty = memo, {}, False
        try:
            self.known = json.loads(memo.read_text()) if memo else {}
        except (OSError, ValueError):  # none yet, or unreadable: hash again
            pass

    def of(self, path: Path, remember: bool = True) -> str:
        """The file's SHA-256, from the memo while its size, mtime, ctime and inode are unchanged."""
        st = path.stat()
        sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        known = self.known.get(str(path))
        if remember and known is not None and known[:4] == sig:
            return known[4]
        digest = sha256(path)
        if remember:
            self.known[str(path)] = [*sig, digest]
            if self.memo is not None and not self.dirty:
                atexit.register(self.save)  # once per process, not once per file
            self.dirty = True
        return digest

    def save(self) -> None:
        """Write the memo (atomically), if anything was added."""
        if self.memo is None or not self.dirty:
            return
        self.dirty = False
        try:
            with replacing(self.memo) as tmp:
                tmp.write_text(json.dumps(self.known))
        except OSError:  # a read-only cache: the memo stays in this process
            pass


def damage(folder: Path, record: dict, key: str, build, digests: Digests) -> str | None:
    """Why the run in `folder` (its parsed `record`, stored under `key`) is not what labcore wrote, in a few words,
    or None. `build(config dict)` rebuilds its config (RunConfig.build), whose key must be `key`."""
    try:
        got = build(record["config"]).key()
    except Exception as exc:  # noqa: BLE001 - any config labcore cannot build is damage, named
        return f"result.json holds a config labcore cannot read ({type(exc).__name__})"
    if got != key:
        return f"result.json holds the config of run {got}, not of {key} it is stored under"
    sums_file = folder / "checksums.json"
    if not sums_file.is_file():
        return None  # written before checksums: nothing to compare with
    try:
        sums = json.loads(sums_file.read_text())
        assert isinstance(sums, dict)
    except (OSError, ValueError, AssertionError):
        return "checksums.json unreadable"
    for name, digest in sorted(sums.items(), key=lambda kv: kv[0] != "result.json"):  # the record first
        f = folder / name
        if not f.is_file() or f.stat().st_size == 0:
            return f"{name} is missing or empty"
        if digests.of(f, remember=name != "result.json") != digest:
            return f"{name} differs from the checksum written with it (changed after training)"
    return None


def check_loadable(path: Path, folder: Path, digests: Digests) -> str | None:
    """Why weights file `path` of the run in `folder` must not be loaded, or None (its checksum matches)."""
    sums_file = folder / "checksums.json"
    name = str(path.relative_to(folder))
    try:
        digest = json.loads(sums_file.read_text()).get(name) if sums_file.is_file() else None
    except (OSError, ValueError):
        return "checksums.json unreadable"
    if digest is not None and digests.of(path) != digest:
        return f"{name} differs from the checksum written with it (changed after training)"
    return None
