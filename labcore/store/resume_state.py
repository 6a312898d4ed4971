"""Where an interrupted run continues from: after every epoch, its training loop's whole state (weights, optimizer,
schedule, every generator, the rows so far, the checkpoints asked for) is written atomically beside the store, and a
later attempt at the same runs continues from it, bit for bit as if never interrupted (tests/test_resume.py).

Only a state written by the same code, for the same runs, data, device, numeric settings (precision, threads,
determinism, TF32, torch), compilation and checkpoints asked for is continued from: the record then says truly how
every epoch was computed. Any other is named in one line and training starts over. A finished run's state is removed: the store keeps only what
the run's result and downstream notebooks need.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from labcore.core.config import RunConfig
from labcore.files import replacing
from labcore.text import count

RESUME_VERSION = 2  # bump when what is saved changes shape (2: every numeric setting, compilation, checkpoints)


def resume_folder(root: Path, cfgs: list[RunConfig]) -> Path:
    """The folder under `root` (the store's .resume/) where runs trained together keep their state: a run alone
    under its key, seeds stacked under a digest of their keys (the same seeds resume together)."""
    if len(cfgs) == 1:
        return root / cfgs[0].key()
    return root / (hashlib.sha256(" ".join(c.key() for c in cfgs).encode()).hexdigest()[:16] + "-fused")


class Resume:
    """The resume state of runs trained together (one alone, or stacked seeds), described by `info` (the record's
    code, data, numerics, device and compilation) and each run's `checkpoints` asked for: what must match for a
    state to be continued from (an attempt that asks for an epoch already passed cannot get it from a state)."""

    def __init__(self, folder: Path, cfgs: list[RunConfig], info: dict, checkpoints: list[tuple[int, ...]]) -> None:
        self.file = folder / "state.pt"
        self.label = cfgs[0].label() + (f" and {count(len(cfgs) - 1, 'fused seed')}" if len(cfgs) > 1 else "")
        self.epochs = cfgs[0].train.epochs
        self.meta = {"version": RESUME_VERSION, "keys": [c.key() for c in cfgs], "code": info["code"],
                     "data": info["data"]["sha256"], "device": info["device"],
                     "numerics": json.loads(json.dumps(info["numerics"])),  # plain types (torch's version is a class)
                     "compiled": info.get("compiled", False), "checkpoints": [sorted(c) for c in checkpoints]}
        self.at: int | None = None  # the epoch a loaded state had finished

    def load(self) -> dict | None:
        """The saved state, when there is one this attempt may continue from (one line says so); else None, with
        one line naming a state that cannot be used, which is then removed."""
        if not self.file.is_file():
            return None
        try:
            saved = torch.load(self.file, map_location="cpu", weights_only=True)
            usable = saved["meta"] == self.meta
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file, whatever torch raises for it
            print(f"[labcore] {self.label}: its resume state {self.file} is unreadable ({type(exc).__name__}); "
                  "training from epoch 1", flush=True)
            self.clear()
            return None
        if not usable:
            differs = [k for k in self.meta if saved["meta"].get(k) != self.meta[k]]
            print(f"[labcore] {self.label}: its resume state {self.file} was saved with another "
                  f"{', '.join(differs)}; training from epoch 1", flush=True)
            self.clear()
            return None
        self.at = saved["loop"]["epoch"]
        print(f"[labcore] {self.label}: resumed at epoch {self.at + 1} of {self.epochs} (epochs 1-{self.at} were "
              f"done before an interruption; {self.file})", flush=True)
        return saved

    def saver(self, checkpoints: list[dict], start: float) -> Callable[[dict], None]:
        """The training loop's `on_state`: writes the state after each epoch, in one rename (a kill mid-write leaves
        the previous epoch's). `checkpoints`: each member's weights saved so far; `start`: perf_counter at the start
        (the seconds so far are saved too)."""
        import time

        def on_state(loop: dict) -> None:
            state = {"meta": self.meta, "loop": loop, "checkpoints": checkpoints,
                     "seconds": time.perf_counter() - start}
            with replacing(self.file) as tmp:
                torch.save(state, tmp)
        return on_state

    def record(self) -> dict:
        """What a resumed run's record says about it: the epoch it continued after, and W&B's part."""
        return {"epoch": self.at, "of": self.epochs,
                "wandb": f"epochs {self.at + 1}-{self.epochs} logged as a new W&B run (the interrupted one keeps "
                         f"epochs 1-{self.at})"}

    def clear(self) -> None:
        """Remove the state (its runs finished, or it cannot be continued from)."""
        shutil.rmtree(self.file.parent, ignore_errors=True)
