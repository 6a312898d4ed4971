"""A result's identity: the code that computes it and its data's content, recorded with the run and checked before it
is served; what counts as a change of code, per module and per model family; the decoded cache follows the files."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from labcore.core import data
from labcore.engine import plan
from labcore.report import verify
from labcore.store import identity, runs
from labcore.store.planned import Planned

from .conftest import HAVE_MNIST, NO_DATA
from .synthetic import synthetic_splits, use_splits
from .test_runs import _cfg

MODELS_SOURCE = identity.module_path(identity.MODELS).read_text()
FAMILIES = ("mlp", "convnet", "fullyconv", "lab_cnn", "lab_resnet", "vgg", "resnet", "cifar_resnet")


@pytest.fixture
def store(tmp_path, monkeypatch):
    use_splits(monkeypatch, lambda cfg: synthetic_splits())
    return runs.RunStore(tmp_path)


# ---------------------------------------------------------------- what counts as a change of code

def test_comments_docstrings_and_formatting_change_no_fingerprint():
    source = 'def f(x):\n    """Double."""\n    return x * 2\n'
    same = '# a comment\ndef f(x):  # why\n    """Twice x, now with a longer docstring."""\n\n    return (x *\n            2)\n'
    assert identity.module_digest(source) == identity.module_digest(same)
    assert identity.module_digest(source) != identity.module_digest(source.replace("* 2", "* 3"))


def test_the_code_of_a_run_is_what_training_imports_and_nothing_that_only_reads_results():
    alone, fused = identity.code_fingerprint("alone"), identity.code_fingerprint("fused")
    for module in ("labcore.core.config", "labcore.core.data", "labcore.core.datasets", "labcore.core.models",
                   "labcore.core.train", "labcore.core.step", "labcore.machine", "labcore.store.training"):
        assert module in alone and module in fused, module
    assert set(fused) == set(alone), "one training step and loop: alone and fused runs share their code"
    assert "labcore.engine.fused" not in alone, "which runs fuse is policy, not what computes them"
    assert not [m for m in fused if m.split(".")[1] in ("analysis", "exercises", "report")], sorted(fused)
    assert not set(identity.NOT_COMPUTING) & set(fused)


def test_a_model_family_is_fingerprinted_by_its_own_code():
    halved = MODELS_SOURCE.replace("        h = self.stem(x)  #", "        h = self.stem(x / 2)  #", 1)
    assert halved != MODELS_SOURCE, "the MLP's forward moved: update this test"
    changed = [f for f in FAMILIES if identity.family_digest(MODELS_SOURCE, f) != identity.family_digest(halved, f)]
    assert changed == ["mlp"]
    block = MODELS_SOURCE.replace("class BasicBlock(nn.Module):", "class BasicBlock(nn.Module):\n    scale = 2", 1)
    changed = [f for f in FAMILIES if identity.family_digest(MODELS_SOURCE, f) != identity.family_digest(block, f)]
    assert "resnet" in changed and "cifar_resnet" in changed and "mlp" not in changed and "vgg" not in changed
    stages = MODELS_SOURCE.replace("VGG_STAGES = {11: (1, 1, 2, 2, 2)", "VGG_STAGES = {11: (1, 1, 1, 2, 2)", 1)
    changed = [f for f in FAMILIES if identity.family_digest(MODELS_SOURCE, f) != identity.family_digest(stages, f)]
    assert changed == ["vgg"]  # a constant counts for the families whose code reads it
    top = MODELS_SOURCE.replace("import torch\n", "import torch\ntorch.manual_seed(0)\n", 1)  # outside any definition
    assert all(identity.family_digest(MODELS_SOURCE, f) != identity.family_digest(top, f) for f in FAMILIES)


# ---------------------------------------------------------------- the store checks before it serves

def _train(store, cfg):
    trained = runs.train_run(cfg, device="cpu", tracking="disabled")
    store.put(trained.result, trained.model_state)
    return trained.result


def test_a_record_names_the_code_and_data_that_trained_it(store):
    result = _train(store, _cfg())
    record = json.loads((store.path(result.config) / "result.json").read_text())
    assert record["code"] == identity.code_fingerprint("alone", "mlp")
    assert record["data"] == {"name": "mnist", "sha256": "synthetic"}
    assert store.state(result.config) == "stored" and store.staleness(result.config) is None


def test_a_record_from_other_code_is_stale_and_names_the_file(store, monkeypatch):
    cfg = _train(store, _cfg()).config
    now = dict(identity.code_fingerprint("alone", "mlp"))
    monkeypatch.setattr(identity, "code_fingerprint", lambda kind="alone", family=None:
                        {**now, "labcore.core.models": "0" * 16})
    assert store.state(cfg) == "stale"
    assert store.staleness(cfg) == "trained by other code (labcore/core/models.py)"


def test_a_record_from_other_data_or_from_before_fingerprints_is_stale(store, monkeypatch):
    cfg = _train(store, _cfg()).config
    from labcore.store import training

    monkeypatch.setattr(training, "data_content", lambda name: "other")
    assert store.staleness(cfg) == "trained on other mnist data (its content changed)"
    monkeypatch.setattr(training, "data_content", lambda name: "synthetic")
    record_file = store.path(cfg) / "result.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({k: v for k, v in record.items() if k not in ("code", "data")}))
    assert store.state(cfg) == "damaged", "an edited record no longer matches the checksum written with it"
    (store.path(cfg) / "checksums.json").unlink()  # as old as it claims: from before checksums too
    assert store.state(cfg) == "stale" and "recorded before labcore kept the fingerprints" in store.staleness(cfg)


def test_a_stale_run_is_retrained_and_the_build_says_why(store, monkeypatch, capsys):
    cfg = _train(store, _cfg()).config
    from labcore.store import training

    monkeypatch.setattr(training, "data_content", lambda name: "other")
    again = runs.run(cfg, store, device="cpu", tracking="disabled")
    assert not again.cached and "is stale (trained on other mnist data" in capsys.readouterr().out
    assert again.data == {"name": "mnist", "sha256": "synthetic"}  # what it saw: the (patched) splits


def test_plan_counts_stale_runs_apart_and_names_what_changed(store, monkeypatch):
    cfgs = [_train(store, _cfg(lr=lr)).config for lr in (1e-2, 2e-2)]
    now = dict(identity.code_fingerprint("alone", "mlp"))
    monkeypatch.setattr(identity, "code_fingerprint", lambda kind="alone", family=None: {**now, "labcore.core.train": "x"})
    planned = [Planned(c) for c in cfgs] + [Planned(_cfg(lr=3e-2))]
    table = plan.status_table(planned, store)
    assert list(table.state) == ["stale", "stale", "pending"]
    line = plan.summary_line("smoke", table, None, "cpu", plan.stale_summary(planned, table, store))
    assert line == "plan smoke: 3 runs, 0 stored, 1 pending, 2 stale (trained by other code (labcore/core/train.py))"


def test_verify_keeps_stale_runs_that_repeat_one_per_configuration(store, monkeypatch):
    cfgs = [_train(store, _cfg().replace(seed=s)).config for s in (2, 0, 1)] + [_train(store, _cfg(lr=2e-2)).config]
    planned = [Planned(c) for c in cfgs]
    records = {p.key: store.get(p.cfg) for p in planned}
    chosen = verify.representatives(planned, records)
    assert [(p.cfg.seed, p.cfg.train.lr) for p in chosen] == [(0, 1e-2), (0, 2e-2)]  # lowest seed of each
    monkeypatch.setattr(identity, "code_fingerprint", lambda kind="alone", family=None: {"labcore.core.train": "new"})
    assert all(store.state(c) == "stale" for c in cfgs)
    kept, rederived = verify.keep_stale(store, planned, {chosen[0].key: True, chosen[1].key: False}, log=lambda s: None)
    assert (kept, rederived) == (3, 2)
    assert [store.state(c) for c in cfgs] == ["stored", "stored", "stored", "stale"]
    record = store.get(cfgs[0])
    assert record.kept["rederived"] == 2 and record.kept["of"] == 4 and record.code == {"labcore.core.train": "new"}
    assert verify.changed_files(store.path(cfgs[0])) == []  # the checksums follow the rewritten record


# ---------------------------------------------------------------- the decoded cache follows the files

@pytest.mark.skipif(not HAVE_MNIST, reason=NO_DATA)
def test_data_replaced_in_place_is_decoded_again_and_changes_the_fingerprint(tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(data.data_root()[0] / "MNIST", root / "MNIST")
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LABCORE_DATA", str(root))
    data.fingerprint.cache_clear()  # computed for the real data root by earlier tests
    before = data.fingerprint("mnist")
    data.fingerprint.cache_clear()
    assert data.fingerprint("mnist") == before  # from the cache: nothing decoded again
    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[8:] = bytes((b + 1) % 10 for b in raw[8:])  # each digit's label moved to the next: same path, same size
    labels.write_bytes(bytes(raw))
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 1_000_000))
    data.fingerprint.cache_clear()
    after = data.fingerprint("mnist")
    assert after["sha256"] != before["sha256"] and after["test"] == before["test"]
    assert torch.equal(data.load_raw("mnist").y_test, (data.load_raw("mnist", root).y_test))
    data.fingerprint.cache_clear()


# ---------------------------------------------------------------- every node trains with the driver's code and data

def test_a_ray_worker_with_other_code_or_data_is_refused_in_one_line(store, monkeypatch):
    from labcore.engine import raypass

    same = {kind: identity.code_fingerprint(kind) for kind in identity.ROOTS}
    raypass.check_same_code(same, "n1")  # the driver's own code: nothing to say
    other = {**same, "alone": {**same["alone"], "labcore.core.train": "0" * 16}}
    with pytest.raises(raypass.OtherCode, match=r"^Ray node n1 \(host\) has other labcore code than this driver "
                       r"\(labcore/core/train.py differ\); install this checkout there"):
        raypass.check_same_code(other, "n1 (host)")
    result = _train(store, _cfg())
    raypass.check_same_data(result)
    from labcore.store import training

    monkeypatch.setattr(training, "data_content", lambda name: "the driver's")
    with pytest.raises(raypass.OtherCode, match="on other mnist data than this driver's LABCORE_DATA holds"):
        raypass.check_same_data(result)


def test_replacing_a_record_computed_another_way_says_so(store, capsys):
    import dataclasses

    result = _train(store, _cfg())
    other = dataclasses.replace(result, device="cuda: NVIDIA H200", numerics={**result.numerics, "threads": 1})
    store.put(other)
    line = capsys.readouterr().out
    assert "replaces a record computed otherwise: device: " in line and "threads: " in line
    store.put(other)
    assert "replaces" not in capsys.readouterr().out
