"""make bundle: what an offline GPU node has is an input (its pip freeze), and the wheels are what it lacks."""
from importlib import metadata

import pytest

from labcore.core.config import ConfigError
from labcore.engine import bundle


def test_the_lent_node_s_list_parses():
    node = bundle.read_node(bundle.LENT_NODE)
    assert node.python == "3.12.3"
    assert {"torch", "torchvision", "numpy", "pandas", "typing-extensions"} <= node.has
    assert "papermill" not in node.has, "the notebook stack is what the bundle carries"


def test_a_pip_freeze_with_its_python(tmp_path):
    freeze = tmp_path / "node.txt"
    freeze.write_text("# python 3.11.9\nTorch==2.5.1\ntyping_extensions==4.12.2\n-e git+https://x/y#egg=z\n"
                      "zope.interface @ file:///wheels/zope.whl\nrequests>=2\n\n")
    node = bundle.read_node(freeze)
    assert node.python == "3.11.9"
    assert node.has == {"torch", "typing-extensions", "zope-interface", "requests"}
    assert bundle.read_node(freeze, python="3.10").python == "3.10", "PYTHON_VERSION overrides the file"
    assert bundle.markers(bundle.read_node(freeze, python="3.10"))["python_full_version"] == "3.10.0"


def test_a_freeze_without_a_python_version_is_one_line(tmp_path):
    freeze = tmp_path / "node.txt"
    freeze.write_text("torch==2.5.1\n")
    with pytest.raises(ConfigError, match=r"names no Python version: add a line '# python 3.12.3'"):
        bundle.read_node(freeze)
    with pytest.raises(ConfigError, match="cannot read it"):
        bundle.read_node(tmp_path / "missing.txt")


def test_the_wheels_are_the_stack_less_what_the_node_has(tmp_path):
    lent = bundle.read_node(bundle.LENT_NODE)
    wanted = dict(bundle.closure(bundle.NEEDED, lent))
    assert {"papermill", "nbconvert", "ipykernel"} <= set(wanted)
    assert not set(wanted) & lent.has, "nothing the node has travels again"
    assert wanted["papermill"] == metadata.version("papermill"), "the versions installed here, tested with labcore"
    rich = bundle.Node("3.12.3", lent.has | (frozenset(wanted) - {"papermill"}), "rich")
    assert bundle.closure(bundle.NEEDED, rich) == [("papermill", wanted["papermill"])]
