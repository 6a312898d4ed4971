"""Shared test setup: headless, isolated run store and W&B folder, and a tiny synthetic dataset."""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

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

from labcore.data import DataNotFoundError, Splits, check_available  # noqa: E402

from .synthetic import synthetic_splits  # noqa: E402


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


def pytest_configure(config):
    """pytest's own tmp_path folders live in the same temporary folder (not /tmp/pytest-of-<user>), so they go too."""
    if not config.option.basetemp:
        config.option.basetemp = str(_TMP / "pytest")


def pytest_sessionfinish(session, exitstatus):
    """Test runs leave no temporary folders behind."""
    shutil.rmtree(_TMP, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Notebooks need the real datasets; skip them (with the fix in the reason) where there are none."""
    for item in items:
        if item.path.suffix == ".ipynb" and not (HAVE_MNIST and HAVE_CIFAR):
            item.add_marker(pytest.mark.skip(reason=NO_DATA))


@pytest.fixture(scope="session")
def smoke_reports(tmp_path_factory) -> Path:
    """`make report PROFILE=smoke` as a user runs it, once per test session; returns reports/smoke."""
    import subprocess

    if not (HAVE_MNIST and HAVE_CIFAR):
        pytest.skip(NO_DATA)
    root = tmp_path_factory.mktemp("smoke-reports")
    proc = subprocess.run(["make", "report", "PROFILE=smoke"], cwd=Path(__file__).parent.parent,
                          env={**os.environ, "LABCORE_REPORTS": str(root)}, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "smoke"


@pytest.fixture
def toy() -> Splits:
    return synthetic_splits()
