"""One plan per build (labcore.engine.plan.build_plan): `make report` plans each notebook once; training, page reuse
and every kernel read that plan, and a kernel whose own plan differs stops in one line."""
from __future__ import annotations

import json

import pytest

from labcore.core.config import ConfigError
from labcore.engine import executor, plan
from labcore.engine.jobs import Outcome
from labcore.exercises import exercise
from labcore.exercises.params import notebook_stems
from labcore.report import build

from .conftest import HAVE_CIFAR, HAVE_MNIST, NO_DATA

# A build checks every dataset its pages read before it trains or writes anything.
needs_all_data = pytest.mark.skipif(not (HAVE_MNIST and HAVE_CIFAR), reason=NO_DATA)
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=NO_DATA)


@needs_all_data
def test_a_build_plans_each_notebook_once_and_every_part_reads_that_plan(tmp_path, monkeypatch):
    planned_by_stem = {stem: [p.key for p in exercise.planned_runs(stem, exercise.parameters(stem, "smoke"), "smoke")]
                       for stem in notebook_stems()}
    all_runs = {p.key for p in plan.profile_runs("smoke")}
    calls, trained_with, kernels = [], {}, {}
    real = exercise.plan_page
    monkeypatch.setattr(exercise, "plan_page", lambda stem, *a, **k: calls.append(stem) or real(stem, *a, **k))
    monkeypatch.setattr(executor, "train", lambda built, *a, **k: trained_with.update(
        keys={p.key for p in built.runs}) or Outcome())

    def execute(stem, profile, page, out_dir, *a, **k):
        kernels[stem] = [p.key for p in page.runs]  # what the kernel is injected as `build_runs`
        return {"status": "ok", "seconds": 0.0, "error": None}

    monkeypatch.setattr(build, "execute", execute)
    monkeypatch.setattr(build, "write_index", lambda out_dir, profile: out_dir / "index.html")
    build.build("smoke", out_root=tmp_path, force=True)
    assert sorted(calls) == sorted(notebook_stems()), "each notebook planned once, in one place"
    assert trained_with["keys"] == all_runs, "training trains the build's plan"
    assert kernels == planned_by_stem, "each kernel is given exactly the runs the build planned for its page"
    written = json.loads((tmp_path / "smoke" / "plan.json").read_text())
    assert {k: v["runs"] for k, v in written["pages"].items()} == planned_by_stem
    assert {r["key"] for r in written["runs"]} == all_runs


def test_a_build_reads_each_parameter_file_once(monkeypatch):
    read = []
    real = exercise.merged_parameters
    monkeypatch.setattr(exercise, "merged_parameters", lambda stem, profile: read.append(stem) or real(stem, profile))
    plan.build_plan("smoke")
    assert sorted(read) == notebook_stems(), "04 plans 01's and 03's runs from the parameters already read"
    read.clear()
    built = plan.build_plan("smoke", ["04_gradient_flow"])  # its upstream, then the others for their checkpoints
    assert sorted(read) == notebook_stems()
    assert list(built.pages) == ["04_gradient_flow"]


def test_a_kernel_whose_plan_differs_from_its_builds_stops_in_one_line():
    params = exercise.parameters("01_mlp_baseline", "smoke")
    groups = exercise.plan("01_mlp_baseline", params, "smoke")
    keys = [p.key for p in exercise.planned_runs("01_mlp_baseline", params, "smoke")]
    assert exercise.checked(groups, None, keys) is not None
    with pytest.raises(ConfigError, match="plans other runs than its build planned .1 more.*1 fewer: other"):
        exercise.checked(groups, None, keys[1:] + ["other"])


@pytest.mark.parametrize("only", [None, ["03_residual"]])
def test_make_plan_json_prints_the_plan_a_build_writes_with_each_runs_state(tmp_path, monkeypatch, capsys, only):
    from labcore.cli import main

    monkeypatch.setenv("LABCORE_RUNS", str(tmp_path / "runs"))
    argv = ["plan", "--profile", "smoke", "--json"] + (["--only", ",".join(only)] if only else [])
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    written = plan.build_plan("smoke", only).to_json()
    assert printed["pages"] == written["pages"], "the same pages, parameters and run keys as plan.json"
    assert [{k: v for k, v in r.items() if k != "state"} for r in printed["runs"]] == written["runs"]
    assert {r["state"] for r in printed["runs"]} == {"pending"}, "an empty store: every run pending"


@needs_mnist
def test_a_second_build_of_one_reports_folder_is_refused_before_it_trains(tmp_path, monkeypatch):
    from labcore.files import locked

    monkeypatch.setattr(executor, "train", lambda *a, **k: pytest.fail("trained while another build held the folder"))
    with locked(tmp_path / "smoke" / ".build.lock"):  # another build of this folder, mid-way
        with pytest.raises(ConfigError, match=r"another build \(pid \d+\) is writing .*; wait for it"):
            build.build("smoke", ["01_mlp_baseline"], out_root=tmp_path)
    assert not (tmp_path / "smoke" / "plan.json").exists(), "the refused build wrote nothing"


@needs_mnist
def test_a_lock_met_while_training_is_not_called_another_build(tmp_path, monkeypatch):
    from labcore.files import Busy

    def busy(*a, **k):
        raise Busy(tmp_path / "runs" / "x.lock", "123")

    monkeypatch.setattr(executor, "train", busy)
    with pytest.raises(Busy, match="locked by process 123"):
        build.build("smoke", ["01_mlp_baseline"], out_root=tmp_path)
