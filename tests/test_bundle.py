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
