"""A store that cannot be fooled (labcore.store.integrity): a stored run is served only while its files are those
labcore wrote, also when the damage keeps every file well-formed; a damaged run is named, counted apart, retrained,
and never blocks the others."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from labcore.core.config import RunConfig
from labcore.engine import plan
from labcore.store import runs
from labcore.store.planned import Planned

from .synthetic import synthetic_splits, use_splits


@pytest.fixture
def store(tmp_path, monkeypatch):
    use_splits(monkeypatch, lambda cfg: synthetic_splits())
    return runs.RunStore(tmp_path / "store", memo=tmp_path / "memo.json")


def _cfg(lr: float = 1e-2) -> RunConfig:
    return RunConfig.build(model={"family": "mlp", "width": 8, "depth": 1}, train={"epochs": 2, "lr": lr})


def _stored(store, cfg: RunConfig) -> RunConfig:
    runs.run(cfg, store, device="cpu", tracking="disabled", checkpoints=(0, 1))
    assert store.state(cfg, (0, 1)) == "stored"
    return cfg


def _edit_number(folder):
    record = json.loads((folder / "result.json").read_text())
    record["test"]["accuracy"] = 0.99  # well-formed, plausible, and not what training computed
    (folder / "result.json").write_text(json.dumps(record))


def _swap_weights(folder, other):
    shutil.copy(other / "model.pt", folder / "model.pt")  # another run's real weights: loads without complaint


def _record_under_other_key(folder, other):
    shutil.rmtree(folder)
    shutil.copytree(other, folder)  # a whole, self-consistent run, under a key that is not its config's


def _rewrite_in_place(folder, other):
    f = folder / "model.pt"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-200] ^= 0xFF  # one byte of a weight, same size
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # modification time restored: only ctime and content tell


@pytest.mark.parametrize("damage, why", [
    (lambda folder, other: _edit_number(folder), "result.json differs from the checksum"),
    (_swap_weights, "model.pt differs from the checksum"),
    (_record_under_other_key, "holds the config of run"),
    (_rewrite_in_place, "model.pt differs from the checksum"),
    (lambda folder, other: (folder / "checkpoints" / "epoch_1.pt").write_bytes(b"\0" * 10), "epoch_1.pt differs"),
])
def test_damage_that_keeps_files_well_formed_is_named_never_served_and_retrained(store, damage, why, capsys):
    cfg, other = _stored(store, _cfg()), _stored(store, _cfg(lr=2e-2))
    assert store.state(cfg, (0, 1)) == "stored"  # hashed once: the in-place rewrite below must still be noticed
    damage(store.path(cfg), store.path(other))
    assert store.state(cfg, (0, 1)) == "damaged" and why in store.damage(cfg)
    assert store.state(other, (0, 1)) == "stored", "damage to one run never touches another"
    with pytest.raises(runs.ConfigError):
        store.load_model(cfg, (1, 8, 8), 4) if why.startswith("model") else runs.fetch([Planned(cfg, (0, 1), ("x",))], store,
                                                                         train_missing=False)
    again = runs.run(cfg, store, device="cpu", tracking="disabled", checkpoints=(0, 1))
    assert "is damaged (" in capsys.readouterr().out and not again.cached
    assert store.state(cfg, (0, 1)) == "stored" and store.load_model(cfg, (1, 8, 8), 4) is not None


def test_a_changed_weights_file_is_caught_when_loaded_even_after_its_hash_was_remembered(store):
    cfg = _stored(store, _cfg())
    store.load_model(cfg, (1, 8, 8), 4)  # verified and remembered against size, mtime, ctime and inode
    _rewrite_in_place(store.path(cfg), None)
    fresh = runs.RunStore(store.root.parent, memo=store.digests.memo)  # another process, the memo on disk
    store.digests.save()
    with pytest.raises(runs.Damaged, match="model.pt differs from the checksum"):
        fresh.load_model(cfg, (1, 8, 8), 4)


def test_make_plan_counts_damaged_runs_apart_and_names_each(store, monkeypatch):
    cfgs = [_stored(store, _cfg(lr)) for lr in (1e-2, 2e-2)]
    _edit_number(store.path(cfgs[0]))
    planned = [Planned(c, (0, 1), ("01_mlp_baseline",)) for c in cfgs]
    table = plan.status_table(planned, store)
    line = plan.summary_line("quick", table, None, "cpu")
    assert list(table.state) == ["damaged", "stored"]
    assert "1 stored, 0 pending, 1 damaged" in line
    assert plan.by_family(table)["damaged"].tolist() == [1]


def test_a_truncated_weights_file_fails_loading_in_one_line_naming_the_run(store):
    cfg = _stored(store, _cfg())
    f = store.path(cfg) / "model.pt"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert store.state(cfg) == "damaged" and "model.pt differs" in store.damage(cfg)
    with pytest.raises(runs.Damaged, match=cfg.label()):
        store.load_model(cfg, (1, 8, 8), 4)
    assert torch.load  # the store never reached torch.load for it
