"""Datasets as in-memory uint8 tensors: find, decode once, cache, and split (batches: labcore.core.batches).

Images are decoded once into uint8 tensors of shape [N, C, H, W] and cached outside the data
root, with the source files' signature and the content's SHA-256 beside them; a changed source
decodes again. The data root is only read, never written.
"""
from __future__ import annotations

import functools
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import torch

from labcore.core.config import DataConfig
from labcore.files import replacing
from labcore.core.datasets import CLASSES, DATASETS, SIZES
from labcore.core.decode import (FIX, DataNotFoundError, Raw, _decoded, _locate, _not_found, check_complete,  # noqa: F401
                                 content_sha256, save_arrays, source_signature)  # data's face
from labcore.paths import cache_dir, data_root

_CACHE_VERSION = 1  # bump when the decoded format changes


@dataclass(frozen=True)
class Splits:
    """Train/validation/test tensors plus what is needed to normalise and label them."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    content: str = ""  # SHA-256 of the whole decoded dataset the splits come from (fingerprint); "" if unknown

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> "Splits":
        """A copy with every tensor on `device` (still uint8, so a GPU holds all of CIFAR-10 in 180 MB)."""
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return Splits(**{**self.__dict__, **moved})


def _cache_file(name: str, root: Path) -> Path:
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:10]  # one cache per data root
    return cache_dir() / f"{name}-v{_CACHE_VERSION}-{tag}.pt"


def _cached_meta(name: str, root: Path) -> dict | None:
    """What the decoded cache of `name` under `root` holds (its source's signature, content hash, sizes), if it is
    there and still follows the files: same signature, or no files left to compare with (the cache is all there is)."""
    meta_file = _cache_file(name, root).with_suffix(".json")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    if not _cache_file(name, root).is_file():
        return None
    signature = source_signature(name, root)
    return meta if signature is None or meta.get("signature") == signature else None


def known_content(name: str, root: Path | None = None) -> tuple[str | None, str | None]:
    """(SHA-256 of `name`'s decoded content, None) where labcore's cache holds it for the files as they are now;
    else (None, why it cannot say). Only stats the files: it never decodes, downloads or writes anything (what
    `make plan` and the runs page ask)."""
    folder = _roots(root)[0]
    try:
        meta = json.loads(_cache_file(name, folder).with_suffix(".json").read_text())
        signature = source_signature(name, folder)
    except FileNotFoundError:
        return None, f"{name} was never read from {folder} here"
    except (OSError, ValueError) as exc:
        return None, f"{name} at {folder} cannot be read ({type(exc).__name__}: {getattr(exc, 'strerror', '') or exc})"
    if signature is not None and meta.get("signature") != signature:
        return None, f"{name}'s files under {folder} changed since labcore last read them"
    return meta.get("sha256"), None


def check_available(name: str) -> None:
    """Raise DataNotFoundError now (before any training) if `name` can be neither found nor downloaded."""
    root, may_download = data_root()
    if not (_cache_file(name, root).is_file() or _locate(name, root) or may_download):
        raise _not_found(name, root, given=True)


def _roots(root: Path | None) -> tuple[Path, bool]:
    """(data root, may download): LABCORE_DATA's (labcore.paths) unless a root is given (never downloaded into)."""
    return data_root() if root is None else (Path(root).resolve(), False)


def load_raw(name: str, root: Path | None = None) -> Raw:
    """Decoded dataset `name`, from the tensor cache while it follows the files (the cache is never in the data
    root); decoded again, and hashed, when they changed. The files' signature is taken before decoding: files that
    change meanwhile are decoded again next time, never served under their new signature (files downloaded now
    are signed once in place). The tensors and their meta share a token: two processes decoding at once cannot
    leave one's tensors paired with the other's meta."""
    root, may_download = _roots(root)
    cache = _cache_file(name, root)
    cached = _from_cache(name, root, cache)
    if cached is not None:
        return cached
    signature = source_signature(name, root)  # None: no files yet (torchvision downloads them now)
    raw = _decoded(name, root, may_download)
    meta = {"signature": signature or source_signature(name, root), "sha256": content_sha256(raw),
            "source": raw.source, "train": len(raw.y_train), "test": len(raw.y_test), "token": secrets.token_hex(8)}
    assert not cache.resolve().is_relative_to(root), f"cache {cache} must not be inside the data root {root}"
    with replacing(cache) as tmp:  # a concurrent reader never sees half a file
        torch.save({**raw.__dict__, "token": meta["token"]}, tmp)
    with replacing(cache.with_suffix(".json")) as tmp:  # the tensors first: the meta never stands without them
        tmp.write_text(json.dumps(meta))
    return raw


def _from_cache(name: str, root: Path, cache: Path) -> Raw | None:
    """The decoded tensors in labcore's cache, while they follow the files and their meta (same token; a cache
    from before tokens has none on either side); None (saying why, if damaged) else."""
    meta = _cached_meta(name, root)
    if not meta:
        return None
    try:
        saved = torch.load(cache, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a cache cut short or damaged, whatever torch raises for it
        print(f"[labcore] the decoded cache {cache} is damaged ({type(exc).__name__}); decoding {name} again",
              flush=True)
        return None
    if saved.get("token") != meta.get("token"):
        print(f"[labcore] the decoded cache {cache} and its meta come from two decodes at once; decoding {name} again",
              flush=True)
        return None
    return Raw(**{k: v for k, v in saved.items() if k != "token"})


@functools.lru_cache(maxsize=None)
def fingerprint(name: str, root: Path | None = None) -> dict[str, str | int]:
    """Where dataset `name` came from and a SHA-256 of its decoded content, so a run's record and a report name
    the pixels and labels they saw. Cheap once decoded (the cache keeps it); once per process."""
    folder = _roots(root)[0]
    meta = _cached_meta(name, folder)
    if meta is None:
        load_raw(name, root)  # the caller's root as given: unset, labcore's own ./data may still be downloaded into
        meta = _cached_meta(name, folder)
    assert meta is not None, f"the decoded cache of {name} was not written"
    return {k: meta[k] for k in ("source", "sha256", "train", "test")}


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random (train, validation) index split of range(n); disjoint and deterministic."""
    if val_size >= n:
        raise ValueError(f"data.val_size={val_size} leaves no training images out of {n}; lower it")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


def load(cfg: DataConfig, root: Path | None = None) -> Splits:
    """The train/validation/test splits that `cfg` describes."""
    raw = load_raw(cfg.name, root)
    if raw.source.startswith("arrays-subset:"):  # a declared subset (the GPU check's bundle): it must hold the splits
        need = (cfg.val_size + (cfg.subset or 0) if cfg.subset is not None else None, cfg.test_subset)
        if need[0] is None or need[1] is None or len(raw.y_train) < need[0] or len(raw.y_test) < need[1]:
            raise DataNotFoundError(f"{cfg.name} at {raw.source} is a subset, too small for data.val_size="
                                    f"{cfg.val_size}, subset={cfg.subset}, test_subset={cfg.test_subset}; point "
                                    "LABCORE_DATA at the complete dataset")
    else:
        check_complete(cfg.name, raw)
    train_idx, val_idx = split_indices(len(raw.y_train), cfg.val_size, cfg.split_seed)
    if cfg.subset is not None:
        train_idx = train_idx[: cfg.subset]  # already shuffled, so this is a random subset
    # A random (seeded) test subset: image-folder test sets are sorted by class, so "the first N" would be one class.
    test_idx = torch.randperm(len(raw.y_test), generator=torch.Generator().manual_seed(cfg.split_seed))
    test_idx = test_idx[: cfg.test_subset] if cfg.test_subset is not None else torch.arange(len(raw.y_test))
    mean, std = DATASETS[cfg.name].mean, DATASETS[cfg.name].std
    return Splits(
        name=cfg.name,
        x_train=raw.x_train[train_idx], y_train=raw.y_train[train_idx],
        x_val=raw.x_train[val_idx], y_val=raw.y_train[val_idx],
        x_test=raw.x_test[test_idx], y_test=raw.y_test[test_idx],
        classes=CLASSES[cfg.name], mean=mean, std=std, source=raw.source,
        content=fingerprint(cfg.name, root)["sha256"],
    )


def check(name: str) -> str:
    """Find (or download, where allowed) and decode dataset `name` now, and check that it is complete, so that a
    build stops before any notebook runs; returns where it came from. Decoded once, then read from the cache."""
    raw = load_raw(name)
    check_complete(name, raw)
    return raw.source


def sizes(cfg: DataConfig) -> tuple[int, int, int]:
    """(train, validation, test) image counts that `cfg` gives, without loading anything."""
    n_train, n_test = SIZES[cfg.name]
    train = n_train - cfg.val_size
    return (cfg.subset if cfg.subset is not None else train, cfg.val_size,
            cfg.test_subset if cfg.test_subset is not None else n_test)  # DataConfig keeps subsets within the sizes
