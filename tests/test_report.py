"""Report building: parameters validated before anything runs, JSON schema, index, and the real `make report`."""
import json
import os
import re
import sys
import types
from pathlib import Path

import nbformat
import pytest

from labcore import cli
from labcore.exercises import exercise
from labcore.report import build as report
from labcore.exercises import params as lp
from labcore.core.config import ConfigError

from .conftest import HAVE_CIFAR, HAVE_MNIST, NO_DATA, settled_environ


ROOT = Path(__file__).resolve().parent.parent
SCHEMA = {"notebook", "profile", "status", "metrics", "parameters", "provenance"}
PROVENANCE = {"time", "git", "packages", "device", "platform", "data_source", "data", "run_store_version",
              "tracking", "seeds"}


@pytest.fixture
def params_dir(tmp_path, monkeypatch):
    """A private parameters/ folder so tests can write broken files."""
    import shutil

    monkeypatch.setattr(lp, "PARAMETERS", tmp_path)
    shutil.copytree(ROOT / "parameters" / "smoke", tmp_path / "smoke")  # 04 reads 01's and 03's (upstream)
    return tmp_path / "smoke"


def test_every_profile_has_valid_parameters_for_every_notebook():
    for profile in lp.PROFILES:
        for stem in lp.notebook_stems():
            params = exercise.parameters(stem, profile)
            assert set(params) == set(lp.notebook_defaults(stem))


def test_notebook_defaults_read_the_parameters_cell_as_papermill_does(tmp_path, monkeypatch):
    """Parsed without importing papermill (7 s): the same names and values, in order, as its inspect_notebook;
    anything but `name = literal` in the cell is a one-line error naming the notebook."""
    import ast

    import papermill

    for stem in lp.notebook_stems():
        info = papermill.inspect_notebook(str(lp.NOTEBOOKS / f"{stem}.ipynb"))
        assert list(lp.notebook_defaults(stem).items()) == [(n, ast.literal_eval(p["default"])) for n, p in info.items()]
    monkeypatch.setattr(lp, "NOTEBOOKS", tmp_path)
    for source, message in [("seeds = [0, 1]  # a comment\nlr: float = 1e-3\n", None),
                            ("import os\n", "only `name = value` assignments belong there"),
                            ("seeds = list(range(3))\n", "seeds must be a literal"),
                            ("", None)]:
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})
        nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tmp_path / "99_x.ipynb")
        if message:
            with pytest.raises(ConfigError, match=f"notebooks/99_x.ipynb, parameters cell.*{re.escape(message)}"):
                lp.notebook_defaults("99_x")
        else:
            assert lp.notebook_defaults("99_x") == ({"seeds": [0, 1], "lr": 1e-3} if source else {})
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), tmp_path / "99_x.ipynb")
    with pytest.raises(ConfigError, match="has no cell tagged 'parameters'"):
        lp.notebook_defaults("99_x")


def test_a_parameter_file_replaces_top_level_values_as_papermill_injects_them(params_dir):
    (params_dir / "01_mlp_baseline.yaml").write_text("train: {epochs: 5}\n")  # below the notebook's long_epochs, 6
    params = exercise.parameters("01_mlp_baseline", "smoke")
    defaults = lp.notebook_defaults("01_mlp_baseline")
    assert params["train"] == {"epochs": 5}  # the rest of train: TrainConfig's defaults, as under papermill -f
    assert params["model"] == defaults["model"] and params["seeds"] == defaults["seeds"]


@pytest.mark.parametrize("text, message", [
    ("epoch: 3\n", r"unknown parameter 'epoch' for 01_mlp_baseline; valid: data, model, train"),
    ("train: {lr: fast}\n", r"train.lr must be float, got 'fast'"),
    ("model: {widht: 3}\n", r"unknown key 'widht' in model"),
    ("train: {epochs: 3\n", r"at line \d+, column \d+"),
    ("tracking: cloud\n", r"tracking mode is 'cloud'"),
    ("model: {family: mlp, depth: -1}\n", r"model.depth must be >= 0"),
])
def test_bad_parameters_fail_in_one_line_before_anything_runs(params_dir, monkeypatch, capsys, text, message):
    (params_dir / "01_mlp_baseline.yaml").write_text(text)
    monkeypatch.setattr(report, "execute", lambda *a, **k: pytest.fail("a notebook ran despite bad parameters"))
    with pytest.raises(ConfigError, match=message):
        report.build("smoke", ["01_mlp_baseline"])
    code = cli.main(["report", "--profile", "smoke", "--only", "01_mlp_baseline"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_unknown_profile_or_notebook_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        report.build("fast")
    with pytest.raises(ConfigError, match="no notebook named '01_mlp'; available: 01_mlp_baseline"):
        report.build("smoke", ["01_mlp"])


def test_missing_dataset_stops_the_build_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABCORE_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(report, "execute", lambda *a, **k: pytest.fail("a notebook ran without its data"))
    assert cli.main(["report", "--profile", "smoke", "--only", "01_mlp_baseline", "--out", str(tmp_path)]) == 2
    assert "mnist not found" in capsys.readouterr().err


@pytest.mark.parametrize("stem", lp.notebook_stems())
def test_notebooks_are_thin_clean_and_parameterised(stem):
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    for c in code:
        assert not any(line.lstrip().startswith(("def ", "class ")) for line in c.source.splitlines()), \
            "functions and classes belong in labcore, not in notebooks"
    assert any("report.publish" in c.source or "publish(" in c.source for c in code), "publish the metrics"


def test_index_lists_reports_with_status_and_metrics(tmp_path):
    for stem, status in (("01_a", "ok"), ("02_b", "failed")):
        (tmp_path / f"{stem}.json").write_text(json.dumps({
            "notebook": stem, "profile": "smoke", "status": status, "metrics": {"test_acc": 0.5, "order": "a > b"},
            "parameters": {},
            "provenance": {"time": "t", "git": {"commit": "abc"}}, "seconds": 1, "error": None}))
    page = report.write_index(tmp_path, "smoke").read_text()
    assert "01_a.html" in page and "02_b.html" in page and "failed" in page
    assert "test_acc: <strong>0.5</strong>" in page, "without a headline, the scalar metrics"
    assert "order: <strong>a &gt; b</strong>" in page, "escaped exactly once"


@pytest.mark.slow
def test_make_report_smoke_end_to_end(smoke_reports):
    """The command a user runs; checks HTML (embedded PNGs, no errors), JSON and index."""
    out = smoke_reports
    html = (out / "01_mlp_baseline.html").read_text()
    assert html.count("data:image/png;base64") >= 4, "curves, confusion matrix and misclassified grid are embedded"
    assert "<img src=\"http" not in html and "jp-RenderedText" in html
    executed = nbformat.read(out / "01_mlp_baseline.ipynb", as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"], "no error outputs"
    assert not [o for o in outputs if o.get("name") == "stderr"], "headless runs keep logs clean"
    rec = json.loads((out / "01_mlp_baseline.json").read_text())
    assert SCHEMA <= set(rec) and rec["status"] == "ok" and rec["profile"] == "smoke"
    assert {"val_acc", "test_acc", "train_loss", "seconds_per_epoch"} <= set(rec["metrics"])
    assert 0 <= rec["metrics"]["test_acc"] <= 1
    assert rec["parameters"]["train"]["epochs"] == 2  # the smoke YAML over the notebook's defaults
    assert PROVENANCE <= set(rec["provenance"]) and rec["provenance"]["packages"]["torch"]
    index = (out / "index.html").read_text()
    for stem in lp.notebook_stems():
        rec = json.loads((out / f"{stem}.json").read_text())
        assert rec["status"] == "ok" and rec["headline"] and (out / rec["summary_figure"]).is_file(), stem
        assert rec["provenance"]["data"] and all(len(d["sha256"]) == 64 for d in rec["provenance"]["data"].values())
        assert f"{stem}.html" in index and rec["headline"][0][0] in index


def test_impossible_models_and_sweeps_fail_before_anything_runs(params_dir):
    tmp_path = params_dir.parent
    (tmp_path / "smoke" / "04_gradient_flow.yaml").write_text("lab_plain_model: {family: lab_cnn, depth: 9}\n")
    with pytest.raises(ConfigError, match=r"04_gradient_flow.yaml: lab_pair.plain \(lab_cnn-d9-w16-plain-s0\): lab_cnn "
                                          "with depth 9 cannot process a 32x32 image"):
        exercise.parameters("04_gradient_flow", "smoke")
    (tmp_path / "smoke" / "02_cnn_depth.yaml").write_text(
        "studies: {vgg: {model: {family: vgg, width: 4, norm: batch}, sweep: {model.depth: [16, 17]}}}\n")
    with pytest.raises(ConfigError, match=r"vgg \(vgg-d17-w4-plain-s0\): vgg depth must be one of"):
        exercise.parameters("02_cnn_depth", "smoke")
    (tmp_path / "smoke" / "02_cnn_depth.yaml").write_text("studies: {mlp: {sweep: {model.dpeth: [1]}}}\n")
    with pytest.raises(ConfigError, match="unknown key 'dpeth' in model"):
        exercise.parameters("02_cnn_depth", "smoke")


def test_a_failing_notebook_is_reported_and_the_previous_good_report_is_kept(tmp_path, monkeypatch):
    nb_dir, params_dir, out = tmp_path / "notebooks", tmp_path / "parameters", tmp_path / "reports"
    nb_dir.mkdir()
    (params_dir / "smoke").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params_cell = nbformat.v4.new_code_cell("fail = False")
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell, nbformat.v4.new_code_cell(
        "from labcore.report.publish import publish\n"
        "if fail:\n    raise ValueError('boom')\n"
        "publish({'answer': 42}, {'time': 'now'})")]
    nbformat.write(nb, nb_dir / "09_probe.ipynb")
    monkeypatch.setattr(report, "NOTEBOOKS", nb_dir)
    monkeypatch.setattr(lp, "NOTEBOOKS", nb_dir)
    monkeypatch.setattr(lp, "PARAMETERS", params_dir)
    module = types.ModuleType("labcore.exercises.probe")  # its exercise module: it plans no runs
    module.plan = lambda fail: {}
    monkeypatch.setitem(sys.modules, "labcore.exercises.probe", module)
    exercise.load.cache_clear()

    (params_dir / "smoke" / "09_probe.yaml").write_text("fail: false\n")
    [ok] = report.build("smoke", out_root=out)
    assert ok["status"] == "ok" and ok["metrics"] == {"answer": 42}

    (params_dir / "smoke" / "09_probe.yaml").write_text("fail: true\n")
    assert cli.main(["report", "--profile", "smoke", "--out", str(out)]) == 1
    failed = json.loads((out / "smoke" / "09_probe.json").read_text())
    assert failed["status"] == "failed" and "boom" in failed["error"] and failed["metrics"] == {}
    assert (out / "smoke" / "09_probe.html").is_file()
    kept = json.loads((out / "smoke" / "previous" / "09_probe.json").read_text())
    assert kept["status"] == "ok" and kept["metrics"] == {"answer": 42}, "the good report is kept, not lost"
    assert "failed" in (out / "smoke" / "index.html").read_text()


@pytest.mark.parametrize("profile", lp.PROFILES)
def test_exercise_04_reads_the_runs_01_and_03_plan_in_the_same_profile(profile):
    """04 declares 01 and 03 as its UPSTREAM; their runs are planned from their own parameters in the same profile."""
    p4 = exercise.parameters("04_gradient_flow", profile)
    assert p4["profile"] == profile and exercise.load("04_gradient_flow").upstream == ("01_mlp_baseline", "03_residual")
    flow = exercise.plan("04_gradient_flow", p4, profile)
    first = exercise.plan("01_mlp_baseline", exercise.parameters("01_mlp_baseline", profile), profile)["runs"][0]
    assert [p.key for p in flow["mlp"]] == [first.key] and flow["mlp"][0].checkpoints == first.checkpoints
    p3 = exercise.parameters("03_residual", profile)
    studies = exercise.plan("03_residual", p3, profile)
    assert {p.key for p in flow["ranking"]} == {p.key for p in studies.get("vgg", []) + studies.get("resnet", []) if
                                                p.cfg.model.residual or p.cfg.model.family == "vgg"}
    deep = {p.key for ps in flow["deep"].values() for p in ps}
    if p4["deep_study"] is None:  # lab: the lab notebook's runs only, no deep twins (their sections are left out)
        assert not deep and not flow["ranking"] and profile == "lab"
        return
    assert deep <= {p.key for p in studies[p4["deep_study"]]} and len(deep) == 2 * len(p4["deep_depths"]) * len(p3["seeds"])


def test_the_profile_is_not_a_parameter_file_setting(params_dir):
    (params_dir / "04_gradient_flow.yaml").write_text("profile: quick\n")
    with pytest.raises(ConfigError, match="'profile' is set by the build"):
        exercise.parameters("04_gradient_flow", "smoke")


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_exercise_03_reuses_exercise_02s_plain_runs(profile):
    from labcore.analysis.sweep import expand

    def keys(stem):
        p = exercise.parameters(stem, profile)
        plan = expand(p["studies"], p["data"], p["train"], p["seeds"], p["residual"])
        return {c.key() for cfgs in plan.values() for c in cfgs if not c.model.residual}

    assert keys("02_cnn_depth") <= keys("03_residual")


@pytest.mark.parametrize("stem, text, message", [
    ("01_mlp_baseline", "seeds: []\n", "seeds is empty"),
    ("02_cnn_depth", "seeds: []\n", "seeds is empty"),
    ("02_cnn_depth", "data: {name: cifar10, val_size: 5000, subset: 50000}\n",
     "data.subset=50000 is more than the 45,000 training images cifar10 has"),
    ("01_mlp_baseline", "data: {test_subset: 20000}\n", "data.test_subset=20000 is more than mnist's 10,000 test images"),
    ("04_gradient_flow", "probe: {batches: 20, batch_size: 128}\n", "probe.batches x probe.batch_size = 20 x 128"),
    ("04_gradient_flow", "lab_plain_model: {family: lab_cnn, depth: 6, kernel_size: 4}\n",
     "lab_pair.plain (lab_cnn-d6-w16-plain-s0): lab_cnn with depth 6 cannot process a 32x32 image"),
    ("04_gradient_flow", "deep_depths: []\n", "deep_depths must name at least one depth of deep_study"),
])
def test_bad_input_stops_the_build_before_anything_runs_and_leaves_reports_alone(params_dir, tmp_path, monkeypatch,
                                                                               capsys, stem, text, message):
    out = tmp_path / "reports"
    (out / "smoke").mkdir(parents=True)
    (out / "smoke" / f"{stem}.html").write_text("the good report")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    (params_dir / f"{stem}.yaml").write_text(text)
    monkeypatch.setattr(report, "execute", lambda *a, **k: pytest.fail("a notebook ran despite bad input"))
    assert cli.main(["report", "--profile", "smoke", "--only", stem, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before, "reports/ untouched"


@pytest.mark.skipif(not (HAVE_MNIST and HAVE_CIFAR), reason=NO_DATA)
def test_report_trains_the_plan_first_so_a_shared_run_is_trained_once_with_every_checkpoint(tmp_path, monkeypatch):
    """03 and 04 share 03's ConvNet twins; 04 needs their weights after every epoch. The build trains the merged
    plan before any notebook runs, so every notebook finds its runs stored, with the checkpoints it asks for."""
    from labcore.engine import plan
    from labcore.store import runs

    monkeypatch.setenv("LABCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LABCORE_TRACKING", "disabled")
    puts, real_put = [], runs.RunStore.put
    monkeypatch.setattr(runs.RunStore, "put", lambda self, result, *a, **k: puts.append(result.key) or real_put(self, result, *a, **k))
    seen = {}

    def execute(stem, profile, page, out_dir, built=None, inputs=None, progress=None, env=None):
        store = runs.RunStore()  # what the kernel's own plan finds stored
        seen[stem] = {p.key: store.state(p.cfg, p.checkpoints) for p in exercise.planned_runs(stem, page.params, profile)}
        return {"status": "ok", "seconds": 0.0, "error": None}

    monkeypatch.setattr(report, "execute", execute)
    report.build("smoke", ["03_residual", "04_gradient_flow"], out_root=tmp_path / "reports", executor="local")
    assert set(seen) == {"03_residual", "04_gradient_flow"}
    assert all(state == "stored" for states in seen.values() for state in states.values()), seen
    assert len(puts) == len(set(puts)) == len(plan.profile_runs("smoke", ["03_residual", "04_gradient_flow"]))


def test_missing_data_stops_a_build_with_runs_stored_before_any_notebook_and_leaves_reports_alone(tmp_path, monkeypatch,
                                                                                               capsys):
    """Unset LABCORE_DATA, no internet: the build stops in one line before any notebook, moves nothing to previous/
    and creates no data folder (it once failed inside the kernel, cut the advice off and hid the good report)."""
    from urllib.error import URLError

    from labcore.core import decode
    from labcore import paths

    monkeypatch.delenv("LABCORE_DATA", raising=False)
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(paths, "DEFAULT_DATA", tmp_path / "data")
    monkeypatch.setattr(decode, "_torchvision", lambda *a, **k: (_ for _ in ()).throw(URLError("no network")))
    out = tmp_path / "reports"
    (out / "smoke").mkdir(parents=True)
    (out / "smoke" / "01_mlp_baseline.json").write_text('{"status": "ok"}')
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    monkeypatch.setattr(report, "execute", lambda *a, **k: pytest.fail("a notebook ran without its data"))
    assert cli.main(["report", "--profile", "smoke", "--only", "01_mlp_baseline", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mnist not found: LABCORE_DATA is not set") and err.count("\n") == 1, err
    assert "point LABCORE_DATA at a folder holding MNIST/ and cifar10/" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before and not (tmp_path / "data").exists()


CODE_SHOWN = {  # what each page must show of the code that ran, from labcore's own source
    "01_mlp_baseline": ("class MLP", "def forward", "Linear(in_features=", "loss.backward()", "opt.step()"),
    "02_cnn_depth": ("class LabCNN", "class ConvBlock", "torch.relu(self.norm(self.conv(x)))"),
    "03_residual": ("def forward", "x + block(x) if self.residual else block(x)", "class BasicBlock"),
    "04_gradient_flow": ("def gradient_norms", "torch.autograd.grad", "g.norm()"),
}


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(CODE_SHOWN))
def test_each_page_shows_the_code_that_ran(smoke_reports, stem):
    import html as html_module
    import re

    page = (smoke_reports / f"{stem}.html").read_text()
    text = html_module.unescape(re.sub(r"<[^>]+>", "", page))
    missing = [s for s in CODE_SHOWN[stem] if s not in text]
    assert not missing, f"{stem}.html does not show {missing}"
    assert "labcore/core/" in text, "the page names the file the code lives in"


@pytest.mark.skipif(not (HAVE_MNIST and HAVE_CIFAR), reason=NO_DATA)
def test_a_page_depends_on_its_own_notebook_and_the_code_it_imports(tmp_path, monkeypatch):
    """A sentence added to 02's notebook re-executes 02 alone; 04's module is code only 04's page runs."""
    import json as json_module
    import shutil

    from labcore.report import inputs
    from labcore.store import identity

    shutil.copytree(lp.NOTEBOOKS, tmp_path / "notebooks")
    monkeypatch.setattr(lp, "NOTEBOOKS", tmp_path / "notebooks")
    pages = {stem: exercise.plan_page(stem, "smoke") for stem in ("01_mlp_baseline", "02_cnn_depth")}
    before = {stem: inputs.page_inputs(stem, "smoke", page) for stem, page in pages.items()}
    nb_file = tmp_path / "notebooks" / "02_cnn_depth.ipynb"
    nb = json_module.loads(nb_file.read_text())
    nb["cells"].append({"cell_type": "markdown", "id": "added01", "metadata": {}, "source": ["One more sentence."]})
    nb_file.write_text(json_module.dumps(nb))
    after = {stem: inputs.page_inputs(stem, "smoke", page) for stem, page in pages.items()}
    assert after["01_mlp_baseline"] == before["01_mlp_baseline"]
    assert inputs.changed(before["02_cnn_depth"], after["02_cnn_depth"]) == ["notebook"]
    shutil.copytree(lp.PARAMETERS, tmp_path / "parameters")  # full's file edited: the banner that names it changes
    monkeypatch.setattr(lp, "PARAMETERS", tmp_path / "parameters")
    full = tmp_path / "parameters" / "full" / "01_mlp_baseline.yaml"
    assert "seeds: [0, 1, 2]" in full.read_text(), "update this test: full's seeds changed"
    full.write_text(full.read_text().replace("seeds: [0, 1, 2]", "seeds: [0, 1, 2, 3]"))
    edited = inputs.page_inputs("01_mlp_baseline", "smoke", pages["01_mlp_baseline"])
    assert inputs.changed(after["01_mlp_baseline"], edited) == ["full_parameters"]
    here = inputs.where_computed(os.environ)
    elsewhere = [{**here, "device": "cuda: NVIDIA H100 80GB HBM3"}, {**here, "tracking": "disabled"},
                 {**here, "wandb": "/elsewhere/wandb"}]  # another card behind "auto"; LABCORE_TRACKING; WANDB_DIR
    for other in elsewhere:
        moved = inputs.page_inputs("01_mlp_baseline", "smoke", pages["01_mlp_baseline"], here=other)
        assert inputs.changed(edited, moved) == ["machine"], other
    code = {stem: set(identity.closure(tuple(inputs.notebook_source(stem)[1]) + inputs.RENDERING))
            for stem in ("01_mlp_baseline", "04_gradient_flow")}
    assert "labcore.exercises.gradient_flow" in code["04_gradient_flow"] - code["01_mlp_baseline"]
    assert "labcore.analysis.claims" in code["01_mlp_baseline"] and "labcore.core.models" in code["01_mlp_baseline"]


def test_a_terminal_sees_each_notebook_s_cells_done_with_the_last_build_as_its_estimate(tmp_path):
    """make report on a terminal: papermill's bar named for the notebook, cells done of all, time spent, and the
    last build's time (a rate per cell would mislead: one cell of 04 probes for a minute)."""
    import io

    import papermill

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = x + 1"),
                                         nbformat.v4.new_code_cell("print(y)")])
    nbformat.write(nb, tmp_path / "toy.ipynb")
    shown = io.StringIO()
    bar = {**report.progress_bar("quick", "04_gradient_flow", 92.0), "file": shown}
    papermill.execute_notebook(str(tmp_path / "toy.ipynb"), str(tmp_path / "out.ipynb"), progress_bar=bar,
                               kernel_name="python3", kernel_manager_class=report.IPCKernelManager)
    text = shown.getvalue()
    frames = [f for f in text.split("\r") if f.strip()]  # tqdm redraws the line; the last frame may be cleared
    assert frames and all(f.startswith("[labcore] quick/04_gradient_flow: ") for f in frames), text
    assert any("/3 cells, 00:0" in f and "last build 1.5 min" in f for f in frames), text
    assert "last build" not in str(report.progress_bar("quick", "01_mlp_baseline", None))


def test_a_log_gets_one_line_per_notebook_and_no_bar(smoke_build):
    """Headless (a log, the tests, CI): a line when each notebook starts and one when it ends, no bar."""
    lines = [ln for ln in smoke_build.report.splitlines() if ln.startswith("[labcore] smoke/")]
    ended = [ln for ln in lines if re.search(r": (ok|failed) in \d", ln)]
    assert len(ended) == 4, lines
    assert "cells," not in smoke_build.report, "no progress bar in a log"


@pytest.mark.slow
def test_a_build_in_process_leaves_the_environment_as_it_found_it(smoke_build, tmp_path, monkeypatch):
    """The kernels get their environment passed (build.kernel_env of the one the build started with); the build's
    own process is never edited, also where it trains here with W&B offline (01's seeds fused: their W&B runs are
    open together)."""
    from labcore.report import build

    monkeypatch.setenv("LABCORE_DATA", os.path.relpath(os.environ["LABCORE_DATA"]))  # a relative root: kernels need it absolute
    monkeypatch.setenv("LABCORE_RUNS", str(tmp_path / "runs"))  # an empty store: the build trains 01's runs here
    monkeypatch.setenv("LABCORE_TRACKING", "offline")
    before, kernels, execute = settled_environ(), [], build.execute
    monkeypatch.setattr(build, "execute", lambda *a, **k: kernels.append(a[-1]) or execute(*a, **k))
    records = build.build("smoke", only=["01_mlp_baseline"], out_root=tmp_path, executor="local", fuse="on")
    assert records[0]["status"] == "ok" and records[0]["runs"]["trained_by_build"] > 0, records[0]
    service = "WANDB_SERVICE"  # W&B's own, set when its service starts, for child processes to share it
    assert {k: v for k, v in os.environ.items() if k != service} == {k: v for k, v in before.items() if k != service}
    assert kernels == [build.kernel_env(before)], "the kernels get the environment the build was started with"


def test_the_kernel_environment_is_built_from_the_given_one_not_this_process():
    from labcore.report import build

    env = build.kernel_env({"PATH": "/bin", "LABCORE_DATA": "data"})
    assert env["LABCORE_HEADLESS"] == "1" and env["PATH"].endswith(":/bin") and os.path.isabs(env["LABCORE_DATA"])
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(build.PROJECT_ROOT)


class _Tables(__import__("html.parser").parser.HTMLParser):
    """Every <table> of a page as rows of (cell text, is a <th>) pairs, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tables, self._cell, self._th = [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell, self._th = "", tag == "th"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append((self._cell.strip(), self._th))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _cells_by_column(table: list) -> list:
    """(column name, value) for every value cell: a table whose first row is all <th> names its columns there; a
    key/value table (a <th> opening each row, like a page's summary) names each value by its row."""
    rows = [row for row in table if row]
    if rows and all(is_th for _, is_th in rows[0]):
        names = [text for text, _ in rows[0]]
        return [(name, text) for row in rows[1:] for name, (text, _) in zip(names, row)]
    return [(row[0][0], text) for row in rows if row[0][1] for text, is_th in row[1:] if not is_th]


def test_a_key_value_table_names_each_value_by_its_row_not_by_the_first_row():
    parser = _Tables()
    parser.feed("<table><tr><th>Test accuracy</th><td>0.340, mean of 1 seed</td></tr>"
                "<tr><th>Epochs</th><td>3</td></tr></table>"
                "<table><tr><th>model</th><th>params</th></tr><tr><td>MLP</td><td>1,000</td></tr></table>")
    assert _cells_by_column(parser.tables[0]) == [("Test accuracy", "0.340, mean of 1 seed"), ("Epochs", "3")]
    assert _cells_by_column(parser.tables[1]) == [("model", "MLP"), ("params", "1,000")]


@pytest.mark.parametrize("column, value, shown", [
    ("epochs", 30.0, "30"), ("n_params", 1234567.0, "1,234,567"), ("support", 980.0, "980"),
    ("Validation accuracy after 2 epochs", 1.0, "1.000"), ("0.340, mean of 3 seeds", 1.0, "1.000"),
    ("loss at epoch 5", 2.0, "2.000"), ("test accuracy", 1.0, "1.000"), ("epochs", 2.5, "2.500"),
    ("runs", True, "yes"), ("seconds per run", 67.9, "67.9"), ("seconds", 6.581, "6.6"), ("wall_minutes", 1234.0, "1,234.0"), ("p-value", 3.8e-10, "3.8 \u00d7 10<sup>-10</sup>"), ("accuracy", float("nan"), "\u2013"),
])
def test_a_cell_is_a_count_only_where_its_column_counts_not_where_a_number_qualifies_it(column, value, shown):
    from labcore.report.publish import cell

    assert cell(value, column) == shown


@pytest.mark.parametrize("column, shown", [
    ("test_acc_mean", "test accuracy (mean)"), ("val_acc_std", "validation accuracy (std)"), ("n_params", "parameters"),
    ("seeds_trained", "seeds trained"), ("train_loss", "train loss"), ("seconds per run", "seconds per run"),
    ("lab_cnn", "lab cnn"), ("study", "study"), ("test acc", "test acc"),
])
def test_a_header_says_its_column_in_words_and_keeps_what_already_is(column, shown):
    from labcore.report.publish import _is_count, header

    assert header(column) == shown
    assert _is_count(header(column)) == _is_count(column.replace("n_params", "parameters")), \
        "a header in words counts what its code name counted, and nothing more"


@pytest.mark.slow
def test_every_table_of_a_smoke_build_reads_as_a_person_would_write_it(smoke_reports):
    from labcore.report.publish import _is_count

    pages = sorted(smoke_reports.glob("0*.html"))
    assert pages
    for page in pages:
        text = page.read_text()
        parser = _Tables()
        parser.feed(text)
        assert parser.tables, page.name
        assert 'class="dataframe"' not in text, f"{page.name}: a raw DataFrame (row numbers, raw headers): publish.table"
        for table in parser.tables:
            for column, value in _cells_by_column(table):
                where = f"{page.name}, column {column!r}: {value!r}"
                assert "_" not in column, f"{where}: a header in code words (publish.header)"
                assert value not in ("NaN", "nan", "None", "True", "False"), where
                assert not re.search(r"\d[eE][+-]\d", value), where
                assert not (_is_count(column) and re.fullmatch(r"-?[\d,]+\.0+", value)), where
        prose = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", text)
        assert not re.search(r"\b(seed|run|epoch|initialisation)\(s\)", prose), page.name


def test_a_labcore_error_in_a_kernel_is_its_one_line_and_the_cell_still_fails(capsys):
    """A student's bad value: the line that says what to do, not fifteen lines of traceback; papermill still sees
    the cell fail (the error is raised as before)."""
    from IPython.core.interactiveshell import InteractiveShell

    from labcore.report import publish

    shell = InteractiveShell.instance()
    try:
        publish._in_kernels()
        capsys.readouterr()
        result = shell.run_cell("from labcore.core.config import RunConfig\nRunConfig.build(train={'lr': -1})")
        out = capsys.readouterr().out
        assert result.error_in_exec is not None, "the cell failed"
        assert "ConfigError" in out and "train.lr must be" in out, out
        assert "Traceback" not in out and "File " not in out and len(out.strip().splitlines()) == 1, out
        import sys

        assert "train.lr must be" in str(sys.last_value), "%tb and %debug find the error that was shown"
        other = shell.run_cell("1 / 0")  # any other error keeps its traceback
        assert other.error_in_exec is not None and "Traceback" in capsys.readouterr().out
    finally:
        InteractiveShell.clear_instance()


@pytest.mark.parametrize("value, shown", [(132.876, "133"), (30802.479, "30,800"), (840.197, "840"), (0.5, "0.5"),
                                          (1.15e5, "1.15 × 10<sup>5</sup>"), (2.6e5, "2.60 × 10<sup>5</sup>")])
def test_a_ratio_has_three_significant_digits_in_tables_as_in_sentences(value, shown):
    """04's ratios of single initialisations: 30,800, not 30,802.479; 1.15 × 10⁵, as the index's headline says."""
    from labcore.report.publish import cell
    from labcore.text import sci

    assert cell(value, "residual / plain") == shown and cell(value, "last/first after training") == shown
    assert sci(value, 3).replace("×10⁵", " × 10<sup>5</sup>") == shown
    assert cell(0.9345, "val_acc") == "0.934" and cell(3.14159, "train loss") == "3.142", "other numbers: decimals"


def test_pages_and_make_diff_import_without_torch():
    """The one-line error handler loads its error kinds only inside a kernel: rendering and `make diff` stay light."""
    import subprocess
    import sys

    code = "import sys, labcore.report.render, labcore.report.publish; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
