"""make bundle: what an offline GPU node has is an input (its pip freeze), and the wheels are what it lacks."""
from importlib import metadata

import pytest

from labcore.core.config import ConfigError
from labcore.engine import bundle


def test_the_lent_node_s_list_parses():
    node = bundle.read_node(bundle.LENT_NODE)
    assert node.python == "3.12.3" and node.max_mib == 60
    assert {"torch", "torchvision", "numpy", "pandas", "typing-extensions"} <= set(node.has)
    assert node.has["torch"] == "2.11.0" and node.has["pandas"] is None, "versions where the file gives them"
    assert "papermill" not in node.has, "the notebook stack is what the bundle carries"


def test_a_pip_freeze_with_its_python(tmp_path):
    freeze = tmp_path / "node.txt"
    freeze.write_text("# python 3.11.9\nTorch==2.5.1\ntyping_extensions==4.12.2\n-e git+https://x/y#egg=z\n"
                      "zope.interface @ file:///wheels/zope.whl\nrequests>=2\n\n")
    node = bundle.read_node(freeze)
    assert node.python == "3.11.9" and node.max_mib is None, "no limit unless the file states one"
    assert node.has == {"torch": "2.5.1", "typing-extensions": "4.12.2", "zope-interface": None, "requests": None}
    assert bundle.read_node(freeze, python="3.10").python == "3.10", "PYTHON_VERSION overrides the file"
    assert bundle.markers(bundle.read_node(freeze, python="3.10"))["python_full_version"] == "3.10.0"


def test_a_freeze_without_a_python_version_is_one_line(tmp_path):
    freeze = tmp_path / "node.txt"
    freeze.write_text("torch==2.5.1\n")
    with pytest.raises(ConfigError, match=r"names no Python version: add a line '# python 3.12.3'"):
        bundle.read_node(freeze)
    with pytest.raises(ConfigError, match="cannot read it"):
        bundle.read_node(tmp_path / "missing.txt")


def test_the_wheels_are_what_the_check_needs_less_what_the_node_has():
    lent = bundle.read_node(bundle.LENT_NODE)
    wanted = dict(bundle.closure(bundle.roots(), lent))
    assert {"papermill", "nbconvert", "ipykernel"} <= set(wanted), "the notebook stack"
    assert not set(wanted) & set(lent.has), "nothing the node has (in a version labcore accepts) travels again"
    assert not set(wanted) & bundle.NOT_CARRIED, "no PyTorch, Ray or W&B"
    assert wanted["papermill"] == metadata.version("papermill"), "the versions installed here, tested with labcore"
    rich = bundle.Node("3.12.3", {**lent.has, **{n: None for n in wanted if n != "papermill"}}, "rich")
    assert bundle.closure(bundle.roots(), rich) == [("papermill", wanted["papermill"])]


def test_a_node_without_labcore_s_own_requirements_gets_them():
    """A node with PyTorch and nothing else: labcore's requirements (pandas, matplotlib, ...) travel too."""
    bare = bundle.Node("3.11.7", {"torch": "2.11.0", "torchvision": "0.26.0"}, "bare")  # this Python: all is here
    wanted = dict(bundle.closure(bundle.roots(), bare))
    assert {"pandas", "matplotlib", "pyyaml", "pytest", "papermill"} <= set(wanted)


def test_a_version_labcore_refuses_is_carried_though_the_node_has_one():
    lent = bundle.read_node(bundle.LENT_NODE)
    old = bundle.Node("3.12.3", {**lent.has, "pandas": "1.0.0"}, "old pandas")  # labcore needs pandas>=2.0
    assert "pandas" in dict(bundle.closure(bundle.roots(), old))
    assert "pandas" not in dict(bundle.closure(bundle.roots(), lent)), "a version not given is taken as fine"


def test_a_requirement_this_machine_lacks_is_one_line():
    """papermill needs aiohttp on Python 3.12 only; from a 3.11 environment that lacks it, the bundle says so."""
    bare = bundle.Node("3.12.3", {"torch": "2.11.0", "torchvision": "0.26.0"}, "bare")
    try:
        metadata.distribution("aiohttp")
        pytest.skip("aiohttp is installed here")
    except metadata.PackageNotFoundError:
        pass
    with pytest.raises(ConfigError, match="the node needs aiohttp, which is not installed here"):
        bundle.closure(bundle.roots(), bare)


def test_installing_the_bundle_passes_its_paths_to_the_children_and_edits_nothing_here(tmp_path, monkeypatch):
    """On a node without the notebook stack, `install` puts the wheels in a folder of their own and returns the
    PYTHONPATH and JUPYTER_PATH its children need; this process's environment and import path stay as they were."""
    import builtins
    import os
    import sys

    real_import = builtins.__import__

    def no_papermill(name, *a, **k):
        if name == "papermill":
            raise ImportError("papermill is not on this node")
        return real_import(name, *a, **k)

    (tmp_path / "bundle" / "wheels").mkdir(parents=True)
    (tmp_path / "bundle" / "wheels" / "papermill-2.6.0-py3-none-any.whl").write_bytes(b"")
    site, pips = tmp_path / "site", []
    monkeypatch.setattr(builtins, "__import__", no_papermill)
    monkeypatch.setattr(bundle, "_pip", lambda cmd, failed: pips.append(cmd) or
                        (site / "share" / "jupyter" / "kernels" / "python3").mkdir(parents=True))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    env_before, path_before = dict(os.environ), list(sys.path)
    env = bundle.install(site, tmp_path / "bundle")
    assert dict(os.environ) == env_before and sys.path == path_before, "nothing of this process is edited"
    assert env == {"PYTHONPATH": os.pathsep.join([str(site), str(bundle.PROJECT_ROOT), "/elsewhere"]),
                   "JUPYTER_PATH": str(site / "share" / "jupyter")}
    assert pips and pips[0][-1].endswith("papermill-2.6.0-py3-none-any.whl") and "--target" in pips[0]
    assert not (site / "share" / "jupyter" / "kernels").exists(), "the node's own interpreter runs the kernels"
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert bundle.install(site, tmp_path / "bundle") == {}, "where papermill is installed, nothing to pass"
