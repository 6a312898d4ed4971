"""Exercises as units: discovered from the notebooks, each plan bound to its notebook's parameters and checked, upstream
runs planned from the upstream notebook's own parameters; a new exercise touches only its own files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from labcore.exercises import exercise
from labcore.exercises import params as lp
from labcore.core.config import ConfigError

from .conftest import HAVE_MNIST, NO_DATA, ROOT


# ---------------------------------------------------------------- the registry

def test_every_notebook_has_an_exercise_whose_plan_reads_only_its_parameters():
    for stem in lp.notebook_stems():
        ex = exercise.load(stem)
        assert ex.module.__name__ == exercise.module_name(stem)
        assert set(ex.arguments) <= set(lp.notebook_defaults(stem)), stem


def _scratch_notebook(tmp_path, monkeypatch, stem: str, source: str) -> None:
    """A notebook `stem` with the parameters cell `source`, in a scratch notebooks/ folder."""
    import nbformat

    monkeypatch.setattr(lp, "NOTEBOOKS", tmp_path)
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tmp_path / f"{stem}.ipynb")
    exercise.load.cache_clear()


def test_a_notebook_without_a_module_fails_in_one_line_naming_what_to_create(tmp_path, monkeypatch):
    _scratch_notebook(tmp_path, monkeypatch, "07_batchnorm", "seeds = [0]\n")
    with pytest.raises(ConfigError) as err:
        exercise.load("07_batchnorm")
    assert str(err.value) == ("notebooks/07_batchnorm.ipynb has no exercise module: create labcore/exercises/batchnorm.py "
                              "with a plan(...) function (README: Adding an exercise)")
    exercise.load.cache_clear()


def test_a_plan_argument_the_notebook_does_not_define_is_named(tmp_path, monkeypatch):
    import sys
    import types

    module = types.ModuleType("labcore.exercises.scratch")
    module.plan = lambda seeds, widht: {}  # a typo: the notebook defines `width`
    monkeypatch.setitem(sys.modules, "labcore.exercises.scratch", module)
    _scratch_notebook(tmp_path, monkeypatch, "08_scratch", "seeds = [0]\nwidth = 8\n")
    with pytest.raises(ConfigError, match="labcore/exercises/scratch.py: plan\\(...\\) takes 'widht', which the "
                                          "parameters cell of notebooks/08_scratch.ipynb does not define"):
        exercise.load("08_scratch")
    module.plan = lambda seeds, upstream: {}
    exercise.load.cache_clear()
    with pytest.raises(ConfigError, match="takes `upstream`, but the module declares no UPSTREAM"):
        exercise.load("08_scratch")
    module.UPSTREAM, module.plan = ("08_scratch",), lambda seeds, upstream: {}
    exercise.load.cache_clear()
    with pytest.raises(ConfigError, match="upstream cycle: 08_scratch -> 08_scratch"):
        exercise.plan("08_scratch", {"seeds": [0]})
    exercise.load.cache_clear()


def test_a_notebook_named_otherwise_is_refused():
    with pytest.raises(ConfigError, match="not named NN_name"):
        exercise.module_name("mlp-baseline")


# ---------------------------------------------------------------- 04 reads 01 and 03

def _plan04(profile: str = "quick", **change):
    return exercise.plan("04_gradient_flow", {**exercise.parameters("04_gradient_flow", profile), **change}, profile)


def test_exercise_04_reads_03s_twins_and_01s_mlp_run_with_per_epoch_weights():
    p4, p3 = exercise.parameters("04_gradient_flow", "quick"), exercise.parameters("03_residual", "quick")
    flow = _plan04()
    first_01 = exercise.plan("01_mlp_baseline", exercise.parameters("01_mlp_baseline", "quick"))["runs"][0]
    assert flow["mlp"][0].key == first_01.key and flow["mlp"][0].checkpoints == tuple(range(16))
    study = exercise.plan("03_residual", p3)[p4["deep_study"]]
    assert list(flow["deep"]) == [(6, False), (6, True), (12, False), (12, True)]
    for (depth, residual), ps in flow["deep"].items():
        assert {p.key for p in ps} == {p.key for p in study if (p.cfg.model.depth, p.cfg.model.residual) == (depth, residual)}
        assert len(ps) == len(p3["seeds"]) and all(p.checkpoints == tuple(range(p.cfg.train.epochs + 1)) for p in ps)
    assert all(c.data == flow["deep"][(6, False)][0].cfg.data for cs in flow["lab_pair"].values() for c in cs)
    ex4 = exercise.planned_runs("04_gradient_flow", p4, "quick")
    assert len(ex4) == 28, "the lab pair at initialisation is probed, never planned for training"


def test_outside_a_profile_04_plans_its_upstream_from_the_upstream_notebooks_parameters_cells():
    flow = exercise.plan("04_gradient_flow", lp.notebook_defaults("04_gradient_flow"), None)
    first_01 = exercise.plan("01_mlp_baseline", lp.notebook_defaults("01_mlp_baseline"))["runs"][0]
    assert flow["mlp"][0].key == first_01.key, "pytest --nbmake runs 04 on the runs 01's defaults train"


@pytest.mark.parametrize("change, message", [
    ({"deep_depths": [6, 7]}, "deep_depths: 03_residual's study 'convnet' has no plain run at depth 7; it has 1 \\(plain\\)"),
    ({"deep_study": "convnett"}, "deep_study: 03_residual has no study 'convnett'; its studies: mlp, convnet"),
    ({"deep_study": "resnet", "deep_depths": [18]}, "has no plain run at depth 18"),
    ({"short_epochs": 9}, "short_epochs=9: must be between 1 and the twins' 6 epochs"),
    ({"probe": {"batches": 40, "batch_size": 128}}, "probe.batches x probe.batch_size = 40 x 128"),
    ({"deep_depths": []}, "deep_depths must name at least one depth of deep_study \\(or set deep_study: null\\)"),
    ({"init_seeds": []}, "init_seeds must name at least one value"),
    ({"init_seeds": [0, 0]}, "init_seeds lists 0 twice"),
])
def test_exercise_04s_declarations_are_checked_before_anything_runs(change, message):
    with pytest.raises(ConfigError, match=message):
        _plan04(**change)


def test_every_model_of_a_plan_is_built_on_the_meta_device_in_one_place():
    p4 = {**exercise.parameters("04_gradient_flow", "quick"), "lab_plain_model": {"family": "lab_cnn", "depth": 9}}
    with pytest.raises(ConfigError, match=r"lab_pair.plain \(lab_cnn-d9-w16-plain-s0\): lab_cnn with depth 9 cannot"):
        exercise.planned_runs("04_gradient_flow", p4, "quick")
    p3 = {**exercise.parameters("03_residual", "smoke"), "studies": {"he": {"model": {"family": "cifar_resnet", "depth": 4}}}}
    with pytest.raises(ConfigError, match="cifar_resnet depth must be 6n\\+2"):
        exercise.planned_runs("03_residual", p3, "smoke")


@pytest.mark.parametrize("long_epochs", [0, 2, 3, 3.5, True, "40"])
def test_a_long_run_must_be_longer_than_the_runs_it_follows_named_by_its_own_key(long_epochs):
    with pytest.raises(ConfigError, match=rf"^long_epochs is {long_epochs!r}; give a whole number of epochs above "
                                          r"train.epochs \(3\)"):
        exercise.plan("01_mlp_baseline", {"data": {}, "model": {}, "train": {"epochs": 3}, "seeds": [0],
                                          "long_epochs": long_epochs})


def test_a_long_run_one_epoch_longer_or_none_plans():
    for long_epochs, n in ((4, 1), (None, 0)):
        planned = exercise.plan("01_mlp_baseline", {"data": {}, "model": {}, "train": {"epochs": 3}, "seeds": [0],
                                                    "long_epochs": long_epochs})
        assert len(planned["long"]) == n and all(p.cfg.train.epochs == 4 for p in planned["long"])


def test_empty_seeds_fail_before_anything_runs():
    with pytest.raises(ConfigError, match="seeds is empty"):
        exercise.plan("01_mlp_baseline", {"data": {}, "model": {}, "train": {}, "seeds": [], "long_epochs": 3})
    with pytest.raises(ConfigError, match="seeds is empty"):
        exercise.plan("02_cnn_depth", {"studies": {"mlp": {"model": {"family": "mlp"}}}, "data": {}, "train": {},
                                       "seeds": [], "residual": [False]})


# ---------------------------------------------------------------- the package's shape

def test_importing_plots_changes_no_global_state():
    code = ("import matplotlib; before = dict(matplotlib.rcParams); import labcore.analysis.plots; "
            "assert dict(matplotlib.rcParams) == before, 'rcParams changed'")
    subprocess.run([os.sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------- adding an exercise

@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MNIST, reason=NO_DATA)
def test_a_new_exercise_is_its_notebook_its_parameter_files_and_its_module(tmp_path):
    """In a copy of the project, add 05_toy (tests/toy_exercise/) and nothing else: `make plan` lists its run and
    `make report PROFILE=smoke ONLY=05_toy` trains and renders it."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", ".cache", "reports", "data", "__pycache__", ".pytest_cache", "*.egg-info"))
    (copy / ".venv").symlink_to(ROOT / ".venv")  # make finds the environment installed; the copy's labcore wins below
    os.utime(copy / "pyproject.toml", (0, 0))  # ... and up to date (its stamp is newer), so make installs nothing
    toy = ROOT / "tests" / "toy_exercise"
    shutil.copy(toy / "05_toy.ipynb", copy / "notebooks")
    shutil.copy(toy / "toy.py", copy / "labcore" / "exercises")
    for profile in lp.PROFILES:
        shutil.copy(toy / "05_toy.yaml", copy / "parameters" / profile)
    env = {**os.environ, "PYTHONPATH": str(copy), "LABCORE_RUNS": str(tmp_path / "runs"),
           "LABCORE_REPORTS": str(tmp_path / "reports"), "LABCORE_TRACKING": "disabled",
           "LABCORE_CACHE": os.environ.get("LABCORE_CACHE") or str(ROOT / ".cache" / "labcore")}
    plan = subprocess.run(["make", "-s", "plan", "PROFILE=smoke", "ONLY=05_toy"], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "plan smoke: 1 run, 0 stored, 1 pending" in plan.stdout, plan.stdout
    report = subprocess.run(["make", "-s", "report", "PROFILE=smoke", "ONLY=05_toy"], cwd=copy, env=env,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    record = json.loads((tmp_path / "reports" / "smoke" / "05_toy.json").read_text())
    assert record["status"] == "ok" and record["headline"][0][0] == "Validation accuracy"
    assert 0 <= record["metrics"]["val_acc"] <= 1 and (tmp_path / "reports" / "smoke" / "05_toy.html").is_file()


def test_a_profile_set_in_jupyterlab_fills_every_parameter_still_at_its_default(capsys):
    defaults = lp.notebook_defaults("01_mlp_baseline")
    quick = exercise.parameters("01_mlp_baseline", "quick")
    assert exercise.profile_parameters("01_mlp_baseline", None, defaults) == {}
    loaded = exercise.profile_parameters("01_mlp_baseline", "quick", defaults)
    assert loaded["train"] == quick["train"] and loaded["seeds"] == quick["seeds"] and "profile" not in loaded
    said = capsys.readouterr().out  # the cell says what it did: a student sees the profile took effect
    assert said.startswith("[labcore] profile quick: parameters/quick/01_mlp_baseline.yaml applied; runs are read")
    assert "those it lacks named with the command that trains them (`make train PROFILE=quick`)" in said
    edited = {**defaults, "seeds": [7], "train_missing": True}  # edited above, or injected by `make report`: it wins
    assert "seeds" not in exercise.profile_parameters("01_mlp_baseline", "quick", edited)
    said = capsys.readouterr().out
    assert "(yours kept where you edited seeds, train_missing)" in said and "lacks trained here" in said
    with pytest.raises(ConfigError, match="profile='qiuck': choose one of smoke, quick, lab, full"):
        exercise.profile_parameters("01_mlp_baseline", "qiuck", defaults)


def test_in_a_kernel_make_report_started_the_profile_adds_nothing_and_reads_no_file(monkeypatch):
    injected = {**exercise.parameters("01_mlp_baseline", "quick"), "build_runs": ["k"]}  # what the build injects
    monkeypatch.setattr(exercise, "merged_parameters", lambda *a: pytest.fail("read a parameter file again"))
    assert exercise.profile_parameters("01_mlp_baseline", "quick", injected) == {}


def test_editing_one_key_of_a_parameter_dict_keeps_the_profiles_other_keys():
    defaults = lp.notebook_defaults("01_mlp_baseline")
    quick = exercise.parameters("01_mlp_baseline", "quick")
    assert quick["train"]["epochs"] != 2 and quick["train"] != defaults["train"], "pick another key for this test"
    edited = {**defaults, "train": {**defaults["train"], "epochs": 2}}  # train["epochs"] = 2 in JupyterLab
    loaded = exercise.profile_parameters("01_mlp_baseline", "quick", edited)
    assert loaded["train"] == {**quick["train"], "epochs": 2}
    same = {**defaults, "train": dict(defaults["train"])}  # a copy at its defaults: the profile's dict whole
    assert exercise.profile_parameters("01_mlp_baseline", "quick", same)["train"] == quick["train"]
    nested = lp.notebook_defaults("02_cnn_depth")
    studies = {**nested["studies"], "mlp": {**nested["studies"]["mlp"], "model": {**nested["studies"]["mlp"]["model"],
                                                                                   "width": 5}}}
    got = exercise.profile_parameters("02_cnn_depth", "quick", {**nested, "studies": studies})["studies"]
    quick2 = exercise.parameters("02_cnn_depth", "quick")["studies"]
    assert got["mlp"]["model"]["width"] == 5 and got["vgg"] == quick2["vgg"]
    assert got["mlp"]["sweep"] == quick2["mlp"]["sweep"]
