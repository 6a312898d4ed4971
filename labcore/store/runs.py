"""The run store: train a `RunConfig` once, keep its result and weights under the config's key.

A run is a pure function of its config (the seed included), of the code that trains it and of its data's content.
The key is the config's hash; the record keeps the fingerprints of the code and data (labcore.store.identity), and
a record whose code or data are not today's is stale: never served as current, retrained by `make train`, or kept
by `make verify` where it re-derives identically. Each run is independent and self-contained on disk
(`<store>/v<N>/<key>/result.json`, `model.pt`, `checkpoints/`), so runs can be trained anywhere
(labcore.engine.executor) and only the process that collects them writes here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from labcore.core import data as data_mod
from labcore.core.config import ConfigError, RunConfig
from labcore.core.models import build_model
from labcore.core.train import model_shape
from labcore.faults import lost
from labcore.files import locked, replacing, save_tensors, sha256
from labcore.paths import cache_dir, runs_dir
from labcore.store import identity, integrity, training
from labcore.store.result import RunResult, record_of
from labcore.store.training import Trained, load_splits, train_run  # noqa: F401 - load_splits: notebooks read splits here
from labcore.text import count

# A query store's answer for a dataset whose files changed since labcore decoded them (their content may differ).
FILES_CHANGED = "files changed"

# The states whose runs `make train` trains: never stored, damaged, or computed by other code or data than today's.
TO_TRAIN = ("pending", "damaged", "stale")


def to_train_states(retry_failed: bool = False) -> tuple[str, ...]:
    """The states `make train` trains (failed ones too with RETRY_FAILED)."""
    return TO_TRAIN + (("failed",) if retry_failed else ())


# The record's format (its folder, v<N>): bump only when the format changes. What keeps results honest when the code
# or data change is the fingerprints each record keeps (stale_reason), not this number.
STORE_VERSION = 2



FLAGGED = "flagged.json"  # written by `make verify` into a run it found not to repeat (RunStore.flag)

def stale_reason(record: dict, cfg: RunConfig, content: Callable[[str], str | None] | None = None) -> str | None:
    """Why a stored record is not what today's code and data compute for `cfg`, in a few words, or None: the files
    whose code differs (labcore.store.identity) and the dataset whose content differs (`content(name)`: today's
    content hash, default decoding it; None where it cannot be known, and then the data is not compared)."""
    if not record.get("code"):
        return "recorded before labcore kept the fingerprints of the code and data that trained a run"
    why = []
    changed = identity.changed_code(record["code"], identity.kind_of(record.get("fused")), cfg.model.family)
    if changed:
        why.append("trained by other code (" + ", ".join(changed) + ")")
    seen = (record.get("data") or {}).get("sha256")
    now = (content or training.data_content)(cfg.data.name)
    if seen is None:
        why.append(f"{cfg.data.name}'s content not recorded")
    elif now == FILES_CHANGED:
        why.append(f"trained on {cfg.data.name} data whose files changed since labcore last read them (a fresh copy of "
                   "them counts too; `make train` reads them again and retrains only what their content changes)")
    elif now is not None and seen != now:
        why.append(f"trained on other {cfg.data.name} data (its content changed)")
    return "; ".join(why) or None


class Damaged(ConfigError):
    """A stored file is not what labcore wrote (its checksum differs): the run must be retrained, never served."""


class RunStore:
    """Directory of finished (or failed) runs keyed by `RunConfig.key()`.

    A run's folder appears only once it is complete (written elsewhere, then renamed), so a reader never
    sees half a run; a folder damaged afterwards (a truncated file, a missing weights file) is detected,
    named and retrained, never surfaced as a decoding error.
    """

    def __init__(self, root: str | Path | None = None, memo: Path | None = None, query: bool = False) -> None:
        """`query`: only read (`make plan`, the runs page): the data's content is taken from labcore's cache where it
        still follows the files, never decoded; a dataset it cannot check is named in `unchecked`, its runs judged by
        their code alone."""
        self.root = Path(root or runs_dir()) / f"v{STORE_VERSION}"
        self.query, self.unchecked = query, {}
        self._contents: dict[str, str | None] = {}  # dataset -> content hash, once per store (_content)
        # Verified hashes of weights, remembered in labcore's cache (never in the store: a copied store is checked anew).
        tag = hashlib.sha1(str(self.root).encode()).hexdigest()[:10]
        self.digests = integrity.Digests(memo or cache_dir() / f"verified-{tag}.json")

    @property
    def resume_root(self) -> Path:
        """Where runs training for this store keep their state after every epoch (labcore.store.resume_state)."""
        return self.root / ".resume"

    def path(self, cfg: RunConfig) -> Path:
        """Folder of the run for `cfg` (present only once the run finished)."""
        return self.root / cfg.key()

    def config_at(self, key: str) -> RunConfig | None:
        """The config of the run stored under `key` (a key a report recorded), read from its record, or None when
        there is no readable record of it; `state`, `get`, `staleness` and `damage` then answer for that config."""
        try:
            cfg = RunConfig.build(**json.loads((self.root / key / "result.json").read_text())["config"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cfg if cfg.key() == key else None  # a record under another config's key is not this run

    def _read(self, cfg: RunConfig) -> tuple[str, dict | str | None]:
        """('missing', None), ('damaged', why) or ('ok'|'failed', record)."""
        folder = self.path(cfg)
        if not folder.is_dir():
            return "missing", None
        try:
            raw = json.loads((folder / "result.json").read_text())
            for k in ("history", "test", "n_params", "seconds", "device", "data_source"):
                raw[k]  # noqa: B018 - a missing field is damage
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return "damaged", f"result.json unreadable ({type(exc).__name__})"
        why = integrity.damage(folder, raw, folder.name, lambda c: RunConfig.build(**c), self.digests)
        if why:
            return "damaged", why
        if (folder / FLAGGED).is_file():
            return "damaged", json.loads((folder / FLAGGED).read_text()).get("why", "flagged by make verify")
        status = raw.get("status", "ok")
        if status == "ok":
            wanted = ["model.pt"] + [f"checkpoints/epoch_{e}.pt" for e in raw.get("checkpoints", [])]
            absent = [w for w in wanted if not (folder / w).is_file() or (folder / w).stat().st_size == 0]
            if absent:
                return "damaged", f"{absent[0]} is missing or empty"
        return status, raw

    def state(self, cfg: RunConfig, checkpoints: tuple[int, ...] = ()) -> str:
        """'stored' (usable, with those checkpoints), 'failed', 'stale' (computed by other code or from other data
        than today's: `staleness` says which), 'damaged' or 'pending'."""
        status, raw = self._read(cfg)
        if status in ("ok", "failed") and stale_reason(raw, cfg, self._content):
            return "stale"
        if status == "ok":
            return "stored" if set(checkpoints) <= self.checkpoint_epochs(cfg) else "pending"
        return {"missing": "pending"}.get(status, status)

    def staleness(self, cfg: RunConfig) -> str | None:
        """Why the stored record of `cfg` no longer serves (other code, other data), or None."""
        status, raw = self._read(cfg)
        return stale_reason(raw, cfg, self._content) if status in ("ok", "failed") else None

    def _content(self, name: str) -> str | None:
        """Today's content hash of dataset `name`, once per store (its signature stats 60,000 files for CIFAR-10)."""
        if name not in self._contents:
            self._contents[name] = self._content_now(name)
        return self._contents[name]

    def _content_now(self, name: str) -> str | None:
        """Today's content hash of dataset `name`: decoded where needed, or in a query store only as the cache
        knows it (None, with the reason kept in `unchecked`)."""
        if not self.query:
            return training.data_content(name)
        sha, why = data_mod.known_content(name)
        if sha is None and "changed since" in (why or ""):  # files rewritten since they were decoded: not served unread
            return FILES_CHANGED
        if sha is None:
            self.unchecked[name] = why
        return sha

    def get(self, cfg: RunConfig) -> RunResult | None:
        """The stored result for `cfg` (ok or failed), or None when it is missing or damaged."""
        status, raw = self._read(cfg)
        if status not in ("ok", "failed"):
            return None
        fields = {f.name for f in dataclasses.fields(RunResult)} - {"config", "cached"}
        return RunResult(config=cfg, **{k: v for k, v in raw.items() if k in fields}, cached=True)

    def damage(self, cfg: RunConfig) -> str | None:
        """Why the stored record of `cfg` is unusable, or None."""
        status, why = self._read(cfg)
        return why if status == "damaged" else None

    def checkpoint_epochs(self, cfg: RunConfig) -> set[int]:
        """Epochs for which the stored run of `cfg` has weights (empty when it has none or is not stored)."""
        return {int(f.stem.removeprefix("epoch_")) for f in (self.path(cfg) / "checkpoints").glob("epoch_*.pt")}

    @contextlib.contextmanager
    def lock(self, cfg: RunConfig) -> Iterator[None]:
        """Hold the run's lock: a second process asking for the same run waits, then finds it stored."""
        with locked(self.root / ".locks" / f"{cfg.key()}.lock",
                    on_wait=f"[labcore] waiting: another process is training {cfg.label()} ({cfg.key()})"):
            yield

    def put(self, result: RunResult, model_state: dict[str, torch.Tensor] | None = None,
            checkpoints: dict[int, dict] | None = None) -> None:
        """Store a run atomically: written to a private folder, then renamed into place (hold `lock`). Replacing a
        record computed another way (device, numeric settings, fused, compiled) says so in one line."""
        old = self.get(result.config)
        changed = old.regime_change(result) if old is not None else []
        if changed:
            print(f"[labcore] run {result.config.label()} ({result.key}) replaces a record computed otherwise: "
                  + "; ".join(changed), flush=True)
        record = record_of(result)
        record["checkpoints"] = sorted(checkpoints or {})
        with replacing(self.path(result.config)) as tmp:
            tmp.mkdir()
            if model_state is not None:
                save_tensors({k: v.cpu() for k, v in model_state.items()}, tmp / "model.pt", self.root)
            if checkpoints:
                (tmp / "checkpoints").mkdir()
                for epoch, state in checkpoints.items():
                    save_tensors(state, tmp / "checkpoints" / f"epoch_{epoch}.pt", self.root)
            (tmp / "result.json.tmp").write_text(json.dumps(record))
            # What was written, so that `make verify` can name a file changed afterwards (an edited number, new weights).
            sums = {str(f.relative_to(tmp)).removesuffix(".tmp"): sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
            (tmp / "checksums.json").write_text(json.dumps(sums, indent=1))
            (tmp / "result.json.tmp").rename(tmp / "result.json")  # last: its presence marks a complete folder

    def flag(self, cfg: RunConfig, why: str) -> None:
        """Mark a stored run as not what its config computes (`make verify` re-derived it otherwise): from now on it
        is damaged, never served, and retrained by the next build, which replaces the folder."""
        with replacing(self.path(cfg) / FLAGGED) as tmp:
            tmp.write_text(json.dumps({"why": why[:500]}))

    def keep(self, cfg: RunConfig, kept: dict) -> None:
        """Keep a stale run for today's code and data (its numbers were re-derived identically, `make verify`): its
        record names today's fingerprints and says so in `kept`; the weights stay; the checksums follow."""
        folder = self.path(cfg)
        with self.lock(cfg):
            record = json.loads((folder / "result.json").read_text())
            record["kept"] = {**kept, "code_before": record.get("code"), "data_before": record.get("data")}
            record["code"] = identity.code_fingerprint(identity.kind_of(record.get("fused")), cfg.model.family)
            record["data"] = {"name": cfg.data.name, "sha256": training.data_content(cfg.data.name)}
            with replacing(folder / "result.json") as tmp:
                tmp.write_text(json.dumps(record))
            sums_file = folder / "checksums.json"
            if sums_file.is_file():
                sums = {**json.loads(sums_file.read_text()), "result.json": sha256(folder / "result.json")}
                with replacing(sums_file) as tmp:
                    tmp.write_text(json.dumps(sums, indent=1))

    def put_or_lose(self, trained: "Trained") -> None:
        """`put` a trained run; a full disk or a folder without write permission makes it a RunLost (nothing of it
        is left behind: `put` writes into a private folder that is removed when writing fails)."""
        try:
            self.put(trained.result, trained.model_state, trained.checkpoints)
        except OSError as exc:
            fault = lost(trained.result.config.label(), exc)
            if fault is None:
                raise
            raise fault from exc

    def load_model(self, cfg: RunConfig, in_shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                   epoch: int | None = None) -> nn.Module:
        """The model of a stored run on the CPU, in eval mode: trained, or at checkpoint `epoch` (0 = init).
        The input shape and class count default to those of the config's dataset."""
        model = build_model(cfg.model, *model_shape(cfg, in_shape, num_classes))
        f = self.path(cfg) / ("model.pt" if epoch is None else f"checkpoints/epoch_{epoch}.pt")
        if not f.is_file():
            raise FileNotFoundError(f"run {cfg.label()} ({cfg.key()}) has no {f.name}; run it with checkpoints=({epoch},)")
        why = integrity.check_loadable(f, self.path(cfg), self.digests)
        if why:
            raise Damaged(f"run {cfg.label()} ({cfg.key()}) is damaged: {why}; `make train` retrains it")
        state = torch.load(f, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()

    def estimate_accuracy(self, cfgs: list[RunConfig]) -> dict[str, float] | None:
        """How long finished runs took against the plan's estimate: median, min and max of measured/estimated."""
        ratios = []
        for cfg in cfgs:
            r = self.get(cfg)
            if r is not None and r.ok and r.estimate_seconds:
                ratios.append(r.seconds / r.estimate_seconds)
        if not ratios:
            return None
        ratios.sort()
        return {"runs": len(ratios), "median_ratio": ratios[len(ratios) // 2], "min_ratio": ratios[0],
                "max_ratio": ratios[-1]}


def to_train(store: RunStore, cfg: RunConfig, checkpoints: tuple[int, ...], retry_failed: bool = False,
             refresh: bool = False) -> tuple[int, ...] | None:
    """The checkpoints to train `cfg` with (those asked for and every one its stored record had: retraining must
    not lose any), or None when the store's record serves (stored, or failed and not `retry_failed`). A damaged
    record is named. Hold the run's lock."""
    state = store.state(cfg, checkpoints)
    if not refresh and (state == "stored" or (state == "failed" and not retry_failed)):
        return None
    if state == "damaged":
        print(f"[labcore] run {cfg.label()} ({cfg.key()}) is damaged ({store.damage(cfg)}); retraining it", flush=True)
    elif state == "stale":
        print(f"[labcore] run {cfg.label()} ({cfg.key()}) is stale ({store.staleness(cfg)}); retraining it", flush=True)
    elif state == "pending" and store.get(cfg) is not None:
        print(f"[labcore] run {cfg.label()} ({cfg.key()}) is stored without the checkpoints "
              f"{sorted(set(checkpoints) - store.checkpoint_epochs(cfg))} now asked for; retraining it with them", flush=True)
    return tuple(sorted(set(checkpoints) | store.checkpoint_epochs(cfg)))


def run(cfg: RunConfig, store: RunStore | None = None, device: str | torch.device = "auto",
        tracking: str = "offline", refresh: bool = False, checkpoints: tuple[int, ...] = (),
        retry_failed: bool = False, estimate_seconds: float | None = None, compile: bool = False,
        group: str | None = None, profile: str | None = None, deterministic: bool = False) -> RunResult:
    """The result for `cfg`: from the store when present (unless `refresh`), else trained and stored.

    `checkpoints` asks for the weights at those epochs too (0 = initialisation). A stored run without
    them is trained again with them: the same config and seed reproduce the same run. A failed run is
    returned as failed (not retrained) unless `retry_failed`; a damaged one is named and retrained.
    """
    store = store or RunStore()
    checkpoints = tuple(sorted({e for e in checkpoints if e <= cfg.train.epochs}))
    with store.lock(cfg):
        keep = to_train(store, cfg, checkpoints, retry_failed, refresh)
        if keep is None:
            return store.get(cfg)
        trained = train_run(cfg, device, tracking, keep, estimate_seconds, compile, group, profile, deterministic,
                            resume_root=store.resume_root)
        store.put_or_lose(trained)
    return trained.result


class RunsMissing(ConfigError):
    """Runs a notebook of a real profile needs are not stored: train them with `make train`, not in the kernel."""


def fetch(planned: list, store: RunStore | None = None, device: str | torch.device = "auto",
          tracking: str = "offline", notebook: str | None = None, profile: str | None = None,
          train_missing: bool | None = None) -> list[RunResult]:
    """Results for planned runs (labcore.exercises.exercise.Planned), each with the checkpoints its plan asks for, from the
    store. A run not stored yet is trained here when `train_missing` (default: only outside a profile, i.e. with a
    notebook's own small defaults); otherwise RunsMissing names the runs and the `make train` command, so that a
    notebook opened at `quick` or `full` never trains for hours inside its kernel.
    `notebook` and `profile` name the caller, for W&B's grouping (notebook/study) and tags."""
    store = store or RunStore()
    if not (profile is None if train_missing is None else train_missing):
        missing = [p for p in planned if store.state(p.cfg, p.checkpoints) not in ("stored", "failed")]
        if missing:
            raise RunsMissing(missing_message(missing, store, notebook, profile))
    return [run(p.cfg, store, device, tracking, checkpoints=p.checkpoints, group=wandb_group(notebook, p.study),
                profile=profile) for p in planned]


def wandb_group(notebook: str | None, study: str) -> str:
    """W&B group of a run: the notebook that needs it and its study, e.g. '02_cnn_depth/vgg'."""
    return f"{notebook or 'labcore'}/{study}"


def histories(results: list[RunResult]) -> list[list[dict]]:
    """Each run's per-epoch history, in the runs' order (what the curve figures read)."""
    return [r.history for r in results]


def caption(result: RunResult, what: str) -> str:
    """'<what> of <label> (seed <seed>):', to introduce a table that shows a single run."""
    return f"{what} of {result.config.label()} (seed {result.config.seed}):"


def all_results(groups: dict) -> list[RunResult]:
    """Every RunResult in a dict of lists of them (e.g. 04's twins by depth and variant), in order."""
    return [r for rs in groups.values() for r in rs]


def missing_message(missing: list, store: RunStore, notebook: str | None, profile: str | None) -> str:
    """One line naming runs that are not stored and how to train them: in this kernel, for values edited in the
    notebook's parameters cell; with `make train`, for the profile's own (`make plan` says what they cost here)."""
    only = f" ONLY={notebook}" if notebook else ""
    names = ", ".join(p.cfg.label() for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
    stale = sum(store.state(p.cfg, p.checkpoints) == "stale" for p in missing)
    one = len(missing) == 1
    what = f"{'is' if one else 'are'} not in the run store {store.root} yet" + (
        f" ({stale} of them stale: trained by other code or data than today's)" if stale else "")
    it = "it" if one else "them"
    return (f"{count(len(missing), 'run')} this notebook needs {what} ({names}). Edited a value in its parameters "
            f"cell? Set train_missing = True there to train {it} in this kernel, then run this cell again. With the "
            f"profile's own parameters, `make train PROFILE={profile}{only}` trains {it} (`make plan "
            f"PROFILE={profile}{only}` lists {it} with the cost here)")
