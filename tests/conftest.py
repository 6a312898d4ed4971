"""Shared test setup: headless, isolated run store and W&B folder, and a tiny synthetic dataset."""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# Before any kernel starts (nbmake inherits this environment): quiet progress bars, a fresh run store
# so tests really train, W&B offline files out of the project, and this interpreter first on PATH.
_TMP = Path(tempfile.mkdtemp(prefix="labcore-tests-"))
os.environ["LABCORE_HEADLESS"] = "1"
os.environ["LABCORE_RUNS"] = str(_TMP / "runs")
os.environ["LABCORE_REPORTS"] = str(_TMP / "reports")
os.environ["WANDB_DIR"] = str(_TMP)
os.environ["RAY_TMPDIR"] = str(_TMP / "ray")  # Ray's sessions and sockets: removed with the rest at the end
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
if os.environ.get("LABCORE_DATA"):
    os.environ["LABCORE_DATA"] = str(Path(os.environ["LABCORE_DATA"]).expanduser().resolve())

from labcore.data import CLASSES, DataNotFoundError, Splits, check_available  # noqa: E402


def _available(name: str) -> bool:
    try:
        check_available(name)
    except DataNotFoundError:
        return False
    return bool(os.environ.get("LABCORE_DATA")) or (Path(__file__).parent.parent / "data").exists()


HAVE_MNIST = _available("mnist")
HAVE_CIFAR = _available("cifar10")
NO_DATA = "real data not found: set LABCORE_DATA to a folder holding MNIST/ and cifar10/ (e.g. ../shared/data)"
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=NO_DATA)
needs_cifar = pytest.mark.skipif(not HAVE_CIFAR, reason=NO_DATA)


# Ray binds to the machine's own address, so tests that start it run only where that address is loopback:
# inside a network namespace that holds nothing else (`unshare -n`, see README), or where a user opts in.
LOOPBACK_ONLY = {name for _, name in socket.if_nameindex()} <= {"lo"}  # this namespace's interfaces
RAY_OK = LOOPBACK_ONLY or os.environ.get("LABCORE_RAY_TESTS") == "1"
needs_isolated_ray = pytest.mark.skipif(not RAY_OK, reason=(
    "Ray tests start servers: run them in a loopback-only namespace (sudo unshare -n sh -c 'ip link set lo up; "
    "make test') or set LABCORE_RAY_TESTS=1 to let Ray bind to this machine's address"))


def pytest_sessionfinish(session, exitstatus):
    """Test runs leave no temporary folders behind."""
    shutil.rmtree(_TMP, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Notebooks need the real datasets; skip them (with the fix in the reason) where there are none."""
    for item in items:
        if item.path.suffix == ".ipynb" and not (HAVE_MNIST and HAVE_CIFAR):
            item.add_marker(pytest.mark.skip(reason=NO_DATA))


def synthetic_splits(n: int = 512, shape: tuple[int, int, int] = (1, 8, 8), classes: int = 4, seed: int = 0) -> Splits:
    """A learnable toy dataset: each class lights up its own band of rows, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def make(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (m,), generator=g)
        x = torch.randint(0, 60, (m, *shape), generator=g)
        band = shape[1] // classes
        for c in range(classes):
            x[y == c, :, c * band:(c + 1) * band, :] += 150
        return x.to(torch.uint8), y

    (xtr, ytr), (xva, yva), (xte, yte) = make(n), make(n // 4), make(n // 4)
    return Splits("synthetic", xtr, ytr, xva, yva, xte, yte, classes=tuple(CLASSES["mnist"][:classes]),
                  mean=(0.3,) * shape[0], std=(0.3,) * shape[0], source="synthetic")


@pytest.fixture
def toy() -> Splits:
    return synthetic_splits()
