"""Shared test setup: headless, isolated run store, cache and W&B folder, and a tiny synthetic dataset."""
from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# Before any kernel starts (nbmake inherits this environment): quiet progress bars, a fresh run store
# so tests really train, W&B offline files out of the project, and this interpreter first on PATH.
ROOT = Path(__file__).resolve().parent.parent
_TMP = Path(tempfile.mkdtemp(prefix="labcore-tests-"))
os.environ["LABCORE_HEADLESS"] = "1"
# labcore's cache too: step timings taken under a test suite's load, or faked by a test, never reach the developer's
# plans. The decoded datasets (checked by their files' signature when read) are linked in, not decoded again.
_CACHE = Path(os.environ.get("LABCORE_CACHE") or ROOT / ".cache" / "labcore")
(_TMP / "cache").mkdir()
for _f in _CACHE.glob("*-v[0-9]*-*.*") if _CACHE.is_dir() else ():
    if _f.suffix in (".pt", ".json") and not _f.name.startswith(("calibration-", "verified-")):
        (_TMP / "cache" / _f.name).symlink_to(_f.resolve())
os.environ["LABCORE_CACHE"] = str(_TMP / "cache")
os.environ["LABCORE_RUNS"] = str(_TMP / "runs")
os.environ["LABCORE_REPORTS"] = str(_TMP / "reports")
os.environ["WANDB_DIR"] = str(_TMP)
os.environ["RAY_TMPDIR"] = str(_TMP / "ray")  # Ray's sessions and sockets: removed with the rest at the end
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
if os.environ.get("LABCORE_DATA"):
    os.environ["LABCORE_DATA"] = str(Path(os.environ["LABCORE_DATA"]).expanduser().resolve())

from labcore.core.data import DataNotFoundError, Splits, check_available  # noqa: E402

from .synthetic import synthetic_splits  # noqa: E402


def settled_environ() -> dict[str, str]:
    """This process's environment once torch has set its own default: its first decomposed op on the meta device
    (as planning runs every model) imports torch._dynamo, which writes TORCHINDUCTOR_CACHE_DIR into os.environ,
    once per process, whoever triggers it. Tests that pin "labcore edits no environment" compare against this."""
    import torch

    meta = {"device": "meta"}
    torch.nn.functional.linear(torch.empty(2, 3, **meta), torch.empty(4, 3, **meta), torch.empty(4, **meta))
    return dict(os.environ)


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


RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "default_worker.py")


def ray_processes() -> list:
    """Ray's processes on this machine (its servers and workers), whoever started them."""
    import psutil

    return [p for p in psutil.process_iter(["cmdline"])
            if any(name in " ".join(p.info["cmdline"] or []) for name in RAY_PROCESSES)]


def wait_ray_gone(timeout: float = 30.0) -> list:
    """Ray's processes still alive after `timeout` seconds (empty once Ray has stopped)."""
    import time

    deadline = time.time() + timeout
    while (left := ray_processes()) and time.time() < deadline:
        time.sleep(0.5)
    return left


@dataclass(frozen=True)
class SmokeBuild:
    """What training the smoke plan and then `make report PROFILE=smoke` printed and left, for the tests."""
    reports: Path  # reports/smoke
    executor: str  # how the plan was trained: ray where Ray tests may run (CI), else local
    train: str  # the training's output (`python -m labcore train`, what `make train` calls)
    report: str  # `make report`'s output
    stored_after_train: dict[str, float]  # run key -> mtime of its record
    stored_after_report: dict[str, float]
    ray_left: list  # Ray processes still alive after training (none, or a leak)


def stored_runs(root: Path) -> dict[str, float]:
    """Each stored run's key and the time its record was written."""
    return {f.parent.name: f.stat().st_mtime for f in root.glob("v*/*/result.json")}


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory) -> SmokeBuild:
    """The smoke plan trained (as by `make train`: on an embedded 2-CPU Ray where Ray tests may run, else in-process),
    then `make report PROFILE=smoke` as a user runs it; once per session, shared by the Ray, report and
    browser tests (the smoke plan is trained and rendered once in CI, not once per test)."""
    import subprocess

    if not (HAVE_MNIST and HAVE_CIFAR):
        pytest.skip(NO_DATA)
    root, store = tmp_path_factory.mktemp("smoke-reports"), Path(os.environ["LABCORE_RUNS"])
    env = {**os.environ, "LABCORE_REPORTS": str(root)}
    env.pop("RAY_ADDRESS", None)
    executor = "ray" if RAY_OK else "local"
    train = subprocess.run([sys.executable, "-m", "labcore", "train", "--profile", "smoke", "--executor", executor,
                            "--cpus", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    after_train, left = stored_runs(store), (wait_ray_gone() if executor == "ray" else [])
    report = subprocess.run(["make", "report", "PROFILE=smoke"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=1800)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    return SmokeBuild(root / "smoke", executor, train.stdout, report.stdout, after_train, stored_runs(store), left)


@pytest.fixture(scope="session")
def smoke_reports(smoke_build) -> Path:
    """reports/smoke of the session's smoke build."""
    return smoke_build.reports


@pytest.fixture
def toy() -> Splits:
    return synthetic_splits()


# The toy exercise is copied into a scratch project by test_exercise.py; in this project it has no module.
collect_ignore_glob = ["toy_exercise/*"]
