"""Reproducible all the way down, as a student meets it, in a copy of the project: an edit that cannot change a
result retrains nothing; an edit of the model retrains exactly its runs and publishes what an empty store would;
data replaced in place changes the published numbers; a build with nothing changed executes no notebook."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import HAVE_MNIST, NO_DATA, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_MNIST, reason=NO_DATA)]
NB = "01_mlp_baseline"


def _project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", ".cache", "reports", "data", "__pycache__", ".pytest_cache", "*.egg-info"))
    # make finds the environment, whose editable install points at this checkout's labcore: the copy's own labcore
    # wins only because `python -m labcore` runs in the copy and the build hands its root to the kernels
    (copy / ".venv").symlink_to(ROOT / ".venv")
    os.utime(copy / "pyproject.toml", (0, 0))
    return copy


def _make(copy: Path, env: dict, *args: str) -> str:
    out = subprocess.run(["make", "-s", *args, "PROFILE=smoke", f"ONLY={NB}"], cwd=copy, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is no longer in {path.name}: update this test"
    path.write_text(text.replace(old, new, 1))


def _test_acc(reports: Path) -> float:
    return json.loads((reports / "smoke" / f"{NB}.json").read_text())["metrics"]["test_acc"]


def test_what_a_student_changes_is_what_gets_retrained(tmp_path):
    copy = _project(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(Path(os.environ["LABCORE_DATA"]) / "MNIST", data / "MNIST")
    env = {**os.environ, "LABCORE_DATA": str(data), "LABCORE_RUNS": str(tmp_path / "runs"),
           "LABCORE_REPORTS": str(tmp_path / "reports"), "LABCORE_CACHE": str(tmp_path / "cache"),
           "LABCORE_TRACKING": "disabled"}
    first = _make(copy, env, "report")
    assert "trained 2 runs" in first and f"smoke/{NB}: running" in first
    before = _test_acc(tmp_path / "reports")

    # A comment in the model's module and a new helper in the claims module: no run is stale, none retrains.
    _edit(copy / "labcore/core/models.py", "class MLP(nn.Module):", "# a student's note\nclass MLP(nn.Module):")
    (copy / "labcore/analysis/claims.py").write_text((copy / "labcore/analysis/claims.py").read_text()
                                                   + "\n\ndef shout(s: str) -> str:\n    return s.upper()\n")
    assert "plan smoke: 2 runs, 2 stored, 0 pending" in _make(copy, env, "plan")
    second = _make(copy, env, "report")
    assert "trained" not in second and "stale" not in second, second
    assert "changed since the last page: code" in second  # the page's own code changed: it runs, from the store
    third = _make(copy, env, "report")
    assert f"smoke/{NB}: reused" in third and "running" not in third, third

    # Halving the MLP's input retrains exactly 01's runs and publishes what an empty store would.
    _edit(copy / "labcore/core/models.py", "        h = self.stem(x)  #", "        h = self.stem(x / 2)  #")
    plan = _make(copy, env, "plan")
    assert "2 stale (trained by other code (labcore/core/models.py))" in plan, plan
    assert "is stale (trained by other code" in _make(copy, env, "report")
    edited = _test_acc(tmp_path / "reports")
    fresh = {**env, "LABCORE_RUNS": str(tmp_path / "runs-fresh"), "LABCORE_REPORTS": str(tmp_path / "reports-fresh")}
    _make(copy, fresh, "report")
    assert edited == _test_acc(tmp_path / "reports-fresh") and edited != before

    # The test labels replaced in place (same path, same size): the runs are stale, the accuracy changes.
    labels = data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[8:] = bytes((b + 1) % 10 for b in raw[8:])
    labels.write_bytes(bytes(raw))
    assert "stale (trained on mnist data whose files changed since" in _make(copy, env, "plan"), "a query reads no data"
    assert "trained on other mnist data" in _make(copy, env, "train")
    _make(copy, env, "report")
    assert _test_acc(tmp_path / "reports") < 0.5 * edited
