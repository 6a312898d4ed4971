"""`make diff`: two builds of one profile compared number by number; settings first, seed noise respected."""
import json
import os
import shutil
from pathlib import Path

import pytest

from labcore import cli
from labcore.report import diff

from .conftest import ROOT, settled_environ


def test_a_build_compared_with_itself_has_no_differences(smoke_reports, tmp_path, capsys):
    assert cli.main(["diff", str(smoke_reports), str(smoke_reports), "--out", str(tmp_path / "d.html")]) == 0
    assert capsys.readouterr().out.startswith("diff: no differences: ")
    assert "no differences" in (tmp_path / "d.html").read_text()


@pytest.mark.slow
def test_two_builds_that_differ_in_the_learning_rate_say_which_metrics_differ_and_why(smoke_reports, tmp_path,
                                                                                      monkeypatch, capsys):
    from labcore.exercises import params as lp
    from labcore.report import build as report

    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    text = (params / "smoke" / "01_mlp_baseline.yaml").read_text().replace("lr: 1.0e-3", "lr: 3.0e-3")
    (params / "smoke" / "01_mlp_baseline.yaml").write_text(text)
    monkeypatch.setattr(lp, "PARAMETERS", params)
    monkeypatch.setenv("LABCORE_TRACKING", "disabled")
    before = settled_environ()
    report.build("smoke", ["01_mlp_baseline"], out_root=tmp_path / "b", executor="local")
    assert dict(os.environ) == before, "a build passes its kernels their environment and edits none of its own"
    a = tmp_path / "a" / "smoke"
    a.mkdir(parents=True)
    shutil.copy(smoke_reports / "01_mlp_baseline.json", a)
    assert cli.main(["diff", str(a), str(tmp_path / "b" / "smoke"), "--out", str(tmp_path / "d.html")]) == 1
    line = capsys.readouterr().out
    assert "1 report with other settings" in line
    assert "  01_mlp_baseline: train.lr: 0.001 (B: 0.003)" in line, "the setting, named on the terminal"
    result = diff.diff(a, tmp_path / "b" / "smoke")["01_mlp_baseline"]
    assert result["settings"][0] == "train.lr: 0.001 (B: 0.003)"
    differing = [m for m in result["metrics"] if m["verdict"] not in ("identical", "a time: not a result")]
    assert differing and all(m["verdict"] == "not comparable: settings differ in train.lr" for m in differing)
    assert {"val_acc", "test_acc"} <= {m["metric"] for m in differing}


def test_builds_of_two_profiles_are_refused_in_one_line(tmp_path, capsys):
    for name, profile in (("a", "smoke"), ("b", "quick")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "01_mlp_baseline.json").write_text(json.dumps({"profile": profile, "metrics": {}}))
    assert cli.main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "builds of different profiles (quick, smoke)" in err and err.count("\n") == 1


def test_a_changed_headline_and_a_metric_beyond_seed_noise_are_named():
    a = {"profile": "smoke", "parameters": {}, "headline": [["VGG order", "VGG16 ahead of VGG19"]],
         "metrics": {"results": [{"study": "vgg", "family": "vgg", "depth": 16, "residual": False, "val_acc_mean": 0.5,
                                  "val_acc_std": 0.001, "seeds": 3}]}}
    b = {**a, "headline": [["VGG order", "VGG16 and VGG19 not distinguishable"]],
         "metrics": {"results": [{**a["metrics"]["results"][0], "val_acc_mean": 0.6}]}}
    assert diff.headlines(a, b) == [("VGG order", "VGG16 ahead of VGG19", "VGG16 and VGG19 not distinguishable")]
    [row] = diff.metric_rows(a, b, [])
    assert row["metric"] == "val_acc of vgg depth 16 plain" and row["verdict"] == "differs"


def test_every_run_of_a_runs_list_is_compared_on_its_own():
    run = {"family": "mlp", "depth": 2, "width": 16, "residual": False, "seed": 1, "val_acc": 0.9, "test_acc": 0.89}
    a = {"metrics": {"runs": [run]}, "parameters": {}}
    b = {"metrics": {"runs": [{**run, "val_acc": 0.91}]}, "parameters": {}}
    rows = {r["metric"]: r["verdict"] for r in diff.metric_rows(a, b, [])}
    assert rows == {"val_acc of run mlp-d2-w16-plain-s1": "differs", "test_acc of run mlp-d2-w16-plain-s1": "identical"}


def test_make_diff_reads_its_reports_without_importing_torch():
    """`make diff` compares JSON records: it answers in a second, with no deep-learning stack to load."""
    import subprocess
    import sys

    code = "import sys, labcore.report.diff; assert 'torch' not in sys.modules, 'make diff imported torch'"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_page_only_one_build_has_is_named_as_such_not_as_other_settings(tmp_path, capsys):
    record = {"profile": "smoke", "parameters": {"seeds": [0]}, "headline": [], "metrics": {}}
    for side, stems in (("a", ("01_mlp_baseline", "02_cnn_depth")), ("b", ("01_mlp_baseline",))):
        folder = tmp_path / "checkout" / side / "reports" / "smoke"
        folder.mkdir(parents=True)
        for stem in stems:
            (folder / f"{stem}.json").write_text(json.dumps(record))
    a, b = (tmp_path / "checkout" / side / "reports" / "smoke" for side in "ab")
    assert cli.main(["diff", str(a), str(b)]) == 1, "a page missing on one side is a difference"
    out = capsys.readouterr().out
    assert "02_cnn_depth: only in A" in out and "1 report only in A; 0 reports with other settings" in out
    # Both folders end in reports/smoke: the page's name tells the two builds apart.
    assert "diff-a-reports-smoke-b-reports-smoke.html" in out
    page = Path(out.strip().splitlines()[-1].rsplit("; ", 1)[1])
    assert "Only in A: the other build has no page of this notebook." in page.read_text()


def test_a_wall_time_that_differs_is_shown_but_never_counted_against_the_builds():
    """Two builds of the same runs, one retrained: seconds_per_epoch moves with the machine's load; the results agree."""
    a = {"profile": "smoke", "parameters": {}, "headline": [], "metrics": {"seconds_per_epoch": 0.544, "val_acc": 0.9}}
    b = {**a, "metrics": {"seconds_per_epoch": 0.027, "val_acc": 0.9}}
    rows = {r["metric"]: r["verdict"] for r in diff.metric_rows(a, b, [])}
    assert rows == {"seconds_per_epoch": "a time: not a result", "val_acc": "identical"}
    line, same = diff.summary_line({"01_mlp_baseline": {"settings": [], "metrics": diff.metric_rows(a, b, []),
                                                         "headlines": []}})
    assert same and line == "no differences: 1 metric in 1 report identical or within seed noise (1 wall time differs, as times do)"
    c = {**b, "metrics": {"seconds_per_epoch": 0.027, "val_acc": 0.8}}
    assert {r["metric"]: r["verdict"] for r in diff.metric_rows(a, c, [])}["val_acc"] == "differs"
