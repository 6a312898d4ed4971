"""Finding and decoding a dataset's files (torchvision's layout, an image folder, labcore's arrays), their cheap
signature and the decoded content's hash, and naming in one line what is missing, incomplete or damaged.
labcore.core.data caches what this decodes and splits it.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from labcore.core.datasets import DATASETS, SIZES
from labcore.files import replacing


class DataNotFoundError(FileNotFoundError):
    """The dataset is in none of the places labcore looks; the message says where and how to provide it."""


@dataclass(frozen=True)
class Raw:
    """A whole dataset, decoded: uint8 images [N, C, H, W] and int64 labels [N]."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str  # where the images came from (provenance)


def content_sha256(raw: Raw) -> str:
    """SHA-256 of the decoded tensors (images and labels, train then test), whatever the file format on disk."""
    digest = hashlib.sha256()
    for t in (raw.x_train, raw.y_train, raw.x_test, raw.y_test):
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _image_folder(split_dir: Path, gray: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode <split_dir>/<class>/* (classes in sorted order, as ImageFolder does) to uint8 [N, C, H, W]."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    mode = ImageReadMode.GRAY if gray else ImageReadMode.RGB
    images, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted(p for p in (split_dir / cls).iterdir() if p.is_file()):
            images.append(decode_image(read_file(str(f)), mode=mode))
            labels.append(label)
    if not images:
        raise DataNotFoundError(f"no images under {split_dir}/<class>/: the image folder is empty; "
                                "put the decoded images there or point LABCORE_DATA at a complete copy")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _torchvision(name: str, root: Path, download: bool) -> Raw:
    """Load through torchvision's own classes (which download into `root` when asked)."""
    from torchvision import datasets

    if name == "mnist":
        parts = [datasets.MNIST(str(root), train=t, download=download) for t in (True, False)]
        xs = [p.data.unsqueeze(1) for p in parts]  # [N, 28, 28] -> [N, 1, 28, 28]
        ys = [p.targets.long() for p in parts]
    else:
        parts = [datasets.CIFAR10(str(root), train=t, download=download) for t in (True, False)]
        xs = [torch.from_numpy(p.data).permute(0, 3, 1, 2).contiguous() for p in parts]  # NHWC -> NCHW
        ys = [torch.tensor(p.targets, dtype=torch.int64) for p in parts]
    return Raw(xs[0], ys[0], xs[1], ys[1], source=f"torchvision:{root / DATASETS[name].torchvision_dir}")


def _arrays(name: str, path: Path) -> Raw:
    """Load labcore's compact layout: <root>/<name>.npz with uint8 images [N, C, H, W] and int64 labels, written by
    `save_arrays` (the GPU check's bundle carries its data this way). A file marked partial holds a subset."""
    import numpy as np

    with np.load(path) as f:
        parts = [torch.from_numpy(f[k].copy()) for k in ("x_train", "y_train", "x_test", "y_test")]
        partial = bool(f["partial"]) if "partial" in f else False
    source = f"arrays{'-subset' if partial else ''}:{path} ({len(parts[1]):,} training, {len(parts[3]):,} test images)"
    return Raw(*parts, source=source)


def save_arrays(raw: Raw, path: Path, partial: bool) -> None:
    """Write `raw` in the compact layout `_arrays` reads (compressed); `partial` marks a subset of the dataset."""
    import numpy as np

    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, x_train=raw.x_train.numpy(), y_train=raw.y_train.numpy(), x_test=raw.x_test.numpy(),
                            y_test=raw.y_test.numpy(), partial=np.array(partial))


_FILES = {"mnist": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                    "t10k-labels-idx1-ubyte"),
          "cifar10": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                      "batches.meta")}
FIX = "point LABCORE_DATA at a folder holding MNIST/ and cifar10/ (e.g. LABCORE_DATA=../shared/data)"


def _not_found(name: str, root: Path, given: bool, download_error: str | None = None) -> DataNotFoundError:
    """One line for a dataset that is nowhere, phrased for the case: LABCORE_DATA set to a folder that does not
    exist or lacks it, or unset with nothing in ./data and no download."""
    places = (f"{root / DATASETS[name].torchvision_dir} (torchvision layout), {root / name}/{{train,test}}/<class>/ "
              f"(image folder) and {root / name}.npz (arrays)")
    if given and not root.is_dir():
        return DataNotFoundError(f"{name} not found: LABCORE_DATA={root} does not exist; {FIX}")
    if given:
        held = sorted(p.name for p in root.iterdir())
        holds = ", ".join(held[:8]) + (", ..." if len(held) > 8 else "") if held else "nothing"
        return DataNotFoundError(f"{name} not found: LABCORE_DATA={root} holds {holds}; looked for {places}; {FIX}")
    return DataNotFoundError(f"{name} not found: LABCORE_DATA is not set, {root} has no copy and downloading it "
                             f"failed ({download_error}); {FIX}, or connect to the internet and try again")


def _incomplete(name: str, folder: Path) -> DataNotFoundError | None:
    """A torchvision-layout folder that lacks some of its files, named; None when it has them all."""
    missing = [f for f in _FILES[name] if not (folder / f).is_file()]
    if not missing:
        return None
    return DataNotFoundError(f"{name} at {folder} is incomplete: it lacks {', '.join(missing)}; copy the missing "
                             f"files there, or {FIX}")


def check_complete(name: str, raw: Raw) -> None:
    """A copy with fewer images than the dataset has would silently shrink every split: one line naming it."""
    if not raw.source.startswith("arrays-subset:") and (len(raw.y_train), len(raw.y_test)) != SIZES[name]:
        raise DataNotFoundError(f"{name} at {raw.source} has {len(raw.y_train):,} training and {len(raw.y_test):,} test "
                                f"images, not {SIZES[name][0]:,} and {SIZES[name][1]:,}: the copy is incomplete; "
                                f"replace it with a complete one, or {FIX}")


def _locate(name: str, root: Path) -> str | None:
    """'torchvision', 'image-folder' or 'arrays' for the layout `name` has under `root`, else None."""
    tv_dir = root / DATASETS[name].torchvision_dir
    if tv_dir.is_dir() and any(tv_dir.iterdir()):
        return "torchvision"
    if (root / name / "train").is_dir() and (root / name / "test").is_dir():
        return "image-folder"
    if (root / f"{name}.npz").is_file():
        return "arrays"
    return None


def _files(folder: Path) -> Iterator[os.DirEntry]:
    """Every file below `folder` (os.scandir: CIFAR-10's 60,000 images in a fraction of a second)."""
    with os.scandir(folder) as entries:
        for e in entries:
            if e.is_dir():
                yield from _files(Path(e.path))
            elif e.is_file():
                yield e


def source_signature(name: str, root: Path) -> str | None:
    """A cheap signature of the files `name` is decoded from: their paths, sizes, modification and change times and
    inodes (None where none are found). A file replaced or rewritten in place changes it (its ctime, even where its
    size and mtime are restored), so the decoded cache is decoded again, and hashed."""
    layout = _locate(name, root)
    folder = {"torchvision": root / DATASETS[name].torchvision_dir, "image-folder": root / name}.get(layout)
    entries = list(_files(folder)) if folder else []
    if layout == "arrays":
        entries = [e for e in os.scandir(root) if e.name == f"{name}.npz"]
    if not entries:
        return None
    digest = hashlib.sha1(layout.encode())
    for e in sorted(entries, key=lambda e: e.path):
        st = e.stat()
        digest.update(f"{e.path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
    return digest.hexdigest()


def _decode(name: str, root: Path, may_download: bool) -> Raw:
    """Find `name` under `root` in torchvision's layout or as an image folder; download only if allowed."""
    layout = _locate(name, root)
    if layout == "torchvision":
        problem = _incomplete(name, root / DATASETS[name].torchvision_dir)
        if problem:
            raise problem
        return _torchvision(name, root, download=False)
    if layout == "arrays":
        return _arrays(name, root / f"{name}.npz")
    if layout == "image-folder":
        gray = name == "mnist"
        x_tr, y_tr = _image_folder(root / name / "train", gray)
        x_te, y_te = _image_folder(root / name / "test", gray)
        return Raw(x_tr, y_tr, x_te, y_te, source=f"image-folder:{root / name}")
    if not may_download:
        raise _not_found(name, root, given=True)
    # Downloaded into a private folder and moved into place once complete: an offline attempt leaves nothing behind.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root.parent) as tmp:
        try:
            _torchvision(name, Path(tmp), download=True)
        except Exception as exc:  # offline: URLError, RuntimeError from torchvision's checks
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise _not_found(name, root, given=False, download_error=f"{type(exc).__name__}: {first}") from None
        root.mkdir(exist_ok=True)
        for part in Path(tmp).iterdir():
            part.rename(root / part.name)
    return _torchvision(name, root, download=False)


def _decoded(name: str, root: Path, may_download: bool) -> Raw:
    """`_decode`, with a data file that is cut short or damaged named in one line instead of a decoder's traceback."""
    try:
        return _decode(name, root, may_download)
    except DataNotFoundError:
        raise
    except (RuntimeError, ValueError, EOFError, OSError, KeyError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        named = _damaged_file(name, root / DATASETS[name].torchvision_dir)
        raise DataNotFoundError(f"{name} under {root} could not be decoded ({type(exc).__name__}: {first}): "
                                f"{named or 'one of its files'} is damaged or cut short; "
                                f"replace it with a complete copy, or {FIX}") from None


def _damaged_file(name: str, folder: Path) -> Path | None:
    """The first file of a torchvision-layout `folder` that does not read as its format says (after a decoding
    error): an MNIST idx file whose size is not what its header promises, a CIFAR-10 batch that does not unpickle."""
    import pickle

    for f in (folder / n for n in _FILES[name]):
        try:
            if name == "mnist":
                head = f.read_bytes()[:4 + 4 * 3]
                dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(head[3])]
                if f.stat().st_size != 4 + 4 * len(dims) + math.prod(dims):
                    return f
            else:
                with open(f, "rb") as fh:
                    pickle.load(fh, encoding="latin1")
        except Exception:  # noqa: BLE001 - whatever a damaged file makes the reader raise
            return f
    return None
