"""One command line: every verb answers --help at once, bad input is one line, and the Makefile calls the verbs."""
import ast
import re
import subprocess
import sys

import pytest

from labcore import cli

from .conftest import ROOT


def test_every_verb_has_its_help(capsys):
    for verb in cli.VERBS:
        with pytest.raises(SystemExit) as stop:
            cli.main([verb, "--help"])
        assert stop.value.code == 0, verb
        assert f"labcore {verb}" in capsys.readouterr().out


def test_the_issue_s_verbs_are_there():
    wanted = {"plan", "train", "report", "verify", "diff", "lab", "check-report", "gpu-check", "bundle"}
    assert wanted <= set(cli.VERBS)


def test_help_needs_no_pytorch():
    """`python -m labcore --help` answers without importing PyTorch (the first command answers in a moment)."""
    code = "import sys, runpy; sys.argv = ['labcore', '--help']\ntry:\n    runpy.run_module('labcore', run_name='__main__')\n" \
           "except SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False"), out


def test_an_unknown_verb_or_option_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["trian"])
    assert stop.value.code == 2 and "invalid choice: 'trian'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["plan", "--profle", "smoke"])
    assert stop.value.code == 2


@pytest.mark.parametrize("shard", ["1/1", "x", "2/1", "-1/2"])
def test_a_bad_shard_is_one_line(shard, capsys):
    assert cli.main(["verify", "--profile", "smoke", f"--shard={shard}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --shard") and err.count("\n") == 1


def test_a_bad_sample_is_one_line(capsys):
    assert cli.main(["verify", "--profile", "smoke", "--sample", "some"]) == 2
    assert "--sample 'some'" in capsys.readouterr().err, "named as typed: labcore verify --sample"


def test_no_module_but_the_cli_has_a_main():
    """The verbs live in labcore/cli.py; the layers below expose functions, not command lines of their own."""
    found = []
    for path in (ROOT / "labcore").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        mains = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        if path.name not in ("cli.py", "__main__.py") and ("main" in names or mains):
            found.append(str(path.relative_to(ROOT)))
    assert not found, f"a command line outside labcore/cli.py: {found}"


def test_the_makefile_calls_the_verbs():
    makefile = (ROOT / "Makefile").read_text()
    called = set(re.findall(r"-m labcore ([a-z-]+)", makefile))
    assert called == set(cli.VERBS), f"verbs the Makefile does not call, or calls that are no verb: {called ^ set(cli.VERBS)}"


def test_version_usage_and_choices(capsys):
    from labcore.engine.jobs import FUSE_MODES

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("labcore ")
    assert cli.parser().format_usage().startswith("usage: labcore ")
    assert tuple(FUSE_MODES) == cli.FUSE_CHOICES
    with pytest.raises(SystemExit):
        cli.main(["train", "--fuse", "maybe"])
    assert "argument --fuse: invalid choice: 'maybe'" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "tpu", "mps"])
def test_an_unavailable_device_is_one_line_naming_those_there_are(device, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert cli.main(["plan", "--profile", "smoke", "--device", device, "--no-calibrate"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --device {device}: no such device here; this machine has: cpu (or auto)\n"


@pytest.mark.parametrize("variable", ["LABCORE_RUNS", "LABCORE_CACHE", "LABCORE_REPORTS"])
@pytest.mark.parametrize("verb", ["report", "train"])
def test_a_file_where_a_folder_belongs_is_one_line_before_any_training(tmp_path, monkeypatch, capsys, variable, verb):
    from labcore.store import runs

    in_the_way = tmp_path / "in-the-way"
    in_the_way.write_text("not a folder")
    monkeypatch.setenv("LABCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv(variable, str(in_the_way / "sub") if variable != "LABCORE_REPORTS" else str(in_the_way))
    monkeypatch.setattr(runs, "train_run", lambda *a, **k: pytest.fail("trained before checking its folders"))
    if verb == "train" and variable == "LABCORE_REPORTS":
        pytest.skip("make train writes no report")
    assert cli.main([verb, "--profile", "smoke", "--only", "01_mlp_baseline"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: a file stands where labcore needs a folder: {in_the_way}; move it out of the way (or point "
                   "LABCORE_RUNS / LABCORE_CACHE / LABCORE_REPORTS at a folder), then run the command again\n")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("result.json"))


def test_the_machine_faults_are_named_for_what_they_are():
    import errno

    from labcore.faults import classify

    assert classify(PermissionError(errno.EACCES, "Permission denied", "/x"))[0] == "permission denied at /x"
    assert "memory" not in classify(PermissionError(errno.EACCES, "Permission denied", "/x"))[0]
    assert classify(OSError(errno.ENOSPC, "No space left", "/y"))[0].startswith("no space left on the disk")
    assert classify(IsADirectoryError(errno.EISDIR, "Is a directory", "/z"))[0] == \
        "a folder stands where labcore writes a file: /z"


def test_make_lab_on_a_port_in_use_says_so_before_printing_a_url(capsys):
    """A URL printed for a port another server holds would open that server; nothing is started, one line says why."""
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert cli.main(["lab", "--port", str(port)]) == 2
    out = capsys.readouterr()
    assert f"error: port {port} is in use (another JupyterLab?)" in out.err and f"LAB_PORT={port + 1}" in out.err
    assert "http://" not in out.out


def test_labcore_run_by_a_python_without_its_packages_says_which_python_to_use(capsys, monkeypatch):
    """`python -m labcore plan` with the system's python (no PyTorch): one line naming the project's, no traceback."""
    def missing(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setitem(cli.VERBS, "plan", (*cli.VERBS["plan"][:2], missing, cli.VERBS["plan"][3]))
    monkeypatch.setattr(sys, "prefix", "/usr")  # the system's python
    assert cli.main(["plan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this Python (") and "lacks torch; run labcore with the project's: .venv/bin/python" in err
    assert err.count("\n") == 1
    monkeypatch.setattr(sys, "prefix", "/somewhere/.venv")  # the project's, short of a package: install it there
    assert cli.main(["plan"]) == 2
    assert "lacks torch; `make venv` installs what pyproject.toml lists" in capsys.readouterr().err
