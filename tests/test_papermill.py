"""Our parameter files are papermill parameter files: what `papermill <notebook> out.ipynb -f <file>` injects is what
`make report` injects (less `profile`, which the build sets), and papermill's own command computes the same page."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labcore.core.config import ConfigError
from labcore.exercises import params
from labcore.exercises.params import PARAMETERS, PROFILES, merged_parameters, notebook_defaults, notebook_stems

from .conftest import ROOT

FILES = [(profile, stem) for profile in PROFILES for stem in notebook_stems()]


@pytest.mark.parametrize("profile, stem", FILES)
def test_papermill_injects_what_make_report_injects(profile, stem):
    path = PARAMETERS / profile / f"{stem}.yaml"
    loaded = yaml.safe_load(path.read_text()) or {}  # papermill -f: PyYAML's safe loader, each key injected as is
    assert "include" not in loaded, f"{path}: papermill would inject `include` as a variable"
    injected = {**notebook_defaults(stem), **loaded}
    ours = merged_parameters(stem, profile)
    assert {k: v for k, v in ours.items() if k != "profile"} == {k: v for k, v in injected.items() if k != "profile"}


@pytest.mark.parametrize("profile", PROFILES)
def test_03_writes_out_02s_runs_exactly(profile):
    """03 trains 02's plain runs again only if a copy drifts: data, training, seeds and every study of 02 equal."""
    two, three = (yaml.safe_load((PARAMETERS / profile / f"{s}.yaml").read_text()) or {}
                  for s in ("02_cnn_depth", "03_residual"))
    for key in ("data", "train", "seeds"):
        assert two.get(key) == three.get(key), (profile, key)
    for name, spec in (two.get("studies") or {}).items():
        assert (three.get("studies") or {}).get(name) == spec, (profile, name)


def test_a_number_papermill_would_read_as_text_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(params, "PARAMETERS", tmp_path)
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "01_mlp_baseline.yaml").write_text("train: {epochs: 2, lr: 1e-3}\n")
    with pytest.raises(ConfigError) as err:
        merged_parameters("01_mlp_baseline", "smoke")
    assert str(err.value).endswith("smoke/01_mlp_baseline.yaml: train.lr is written 1e-3, which YAML 1.1 (PyYAML, so "
                                   "papermill) reads as text; write 1.0e-3")
    (tmp_path / "smoke" / "01_mlp_baseline.yaml").write_text("train: {epochs: 2, lr: '0.001'}\n")
    with pytest.raises(ConfigError, match="train.lr must be float, got '0.001' \\(str\\)"):
        merged_parameters("01_mlp_baseline", "smoke")
    (tmp_path / "smoke" / "01_mlp_baseline.yaml").write_text("include: other.yaml\n")
    with pytest.raises(ConfigError, match="unknown parameter 'include'"):
        merged_parameters("01_mlp_baseline", "smoke")


@pytest.mark.slow
def test_papermills_own_command_computes_the_page_of_make_report(smoke_reports, tmp_path):
    """`papermill notebooks/01_mlp_baseline.ipynb out.ipynb -f parameters/smoke/01_mlp_baseline.yaml`, run from the
    repository root as the README says, publishes the metrics of the smoke build's page (its runs from the store)."""
    out = tmp_path / "out.ipynb"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "papermill", "notebooks/01_mlp_baseline.ipynb", str(out), "-f",
                           "parameters/smoke/01_mlp_baseline.yaml", "--cwd", "notebooks", "-k", "python3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    published = [o["data"]["application/vnd.labcore.result+json"] for c in json.loads(out.read_text())["cells"]
                 for o in c.get("outputs", []) if "application/vnd.labcore.result+json" in o.get("data", {})]
    page = json.loads((Path(smoke_reports) / "01_mlp_baseline.json").read_text())
    for name in ("val_acc", "test_acc", "train_loss"):
        assert published[-1]["metrics"][name] == page["metrics"][name], name


@pytest.mark.parametrize("content, message", [
    (b"seeds: [0]\n" + b"#" * (2 << 20), "bytes, not a parameter file"),
    (b"seeds: [0]\n\xff\xfe", r"is not UTF-8 text \(byte 11\); save it as UTF-8 YAML"),
])
def test_a_file_that_is_no_parameter_file_is_one_short_line(tmp_path, monkeypatch, content, message):
    monkeypatch.setattr(params, "PARAMETERS", tmp_path)
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "01_mlp_baseline.yaml").write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        merged_parameters("01_mlp_baseline", "smoke")
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
