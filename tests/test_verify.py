"""`make verify`: stored runs re-derived from their configs alone repeat bit for bit on the same settings, and a
record or weight file changed after training is named."""
import json

import pytest

from labcore.store.training import train_runs
import torch

from labcore.store import runs
from labcore.report import verify

from .conftest import synthetic_splits
from .synthetic import use_splits
from .test_runs import _cfg


@pytest.fixture
def store(tmp_path, monkeypatch):
    use_splits(monkeypatch, lambda cfg: synthetic_splits())
    return runs.RunStore(tmp_path)


def test_a_file_changed_after_training_is_named(store):
    cfg = _cfg()
    runs.run(cfg, store, device="cpu", tracking="disabled")
    folder = store.path(cfg)
    assert verify.changed_files(folder) == []
    record = json.loads((folder / "result.json").read_text())
    record["history"][-1]["val_acc"] = 0.99  # a number edited by hand
    (folder / "result.json").write_text(json.dumps(record))
    assert verify.changed_files(folder) == ["result.json"]
    weights = torch.load(folder / "model.pt", weights_only=True)
    torch.save({k: v + 1 for k, v in weights.items()}, folder / "model.pt")
    assert verify.changed_files(folder) == ["model.pt", "result.json"]
    (folder / "checksums.json").unlink()
    assert verify.changed_files(folder) is None, "a record from before checksums: only re-training can tell"


def test_a_rederived_run_repeats_bit_for_bit_on_the_same_settings(store):
    cfg = _cfg()
    first = runs.train_run(cfg, device="cpu", tracking="disabled")
    again = runs.train_run(cfg, device="cpu", tracking="disabled")
    diff = verify.differences(first.result, first.model_state, again.result, again.model_state)
    assert set(diff.values()) == {0.0} and verify.settings_differ(first.result, again.result) == []
    assert verify.verdict(diff, []) == ("identical (bit for bit)", True)


def test_a_fused_run_is_rederived_fused_with_the_same_seeds_and_repeats_bit_for_bit(store):
    cfgs = [_cfg().replace(seed=s) for s in (0, 1, 2)]
    first = train_runs(cfgs, "cpu", "disabled")[1]
    assert list(first.result.fused) == [0, 1, 2]
    groups: dict = {}
    again = verify.rederive(cfgs[1], first.result, "cpu", lambda c: (), groups)
    assert again.result.config == cfgs[1] and list(again.result.fused) == [0, 1, 2]
    diff = verify.differences(first.result, first.model_state, again.result, again.model_state)
    assert set(diff.values()) == {0.0}, "the same group, the same settings: bit for bit"
    assert verify.rederive(cfgs[2], first.result, "cpu", lambda c: (), groups).result.config == cfgs[2]
    assert len(groups) == 1, "one training of the group serves every member"
    alone = verify.rederive(cfgs[1], runs.train_run(cfgs[1], "cpu", "disabled").result, "cpu", lambda c: ())
    assert not alone.result.fused, "a run trained alone is re-derived alone"


@pytest.mark.parametrize("diff, why, expected, ok", [
    ({"acc": 0.0, "loss": 1e-7, "weights": 0.0}, [], "differs with the same settings: loss by 1.00\u00d710\u207b\u2077", False),
    ({"acc": 0.02, "loss": 0.05, "weights": 0.05}, ["threads: 1 then, 2 now"], "within tolerance", True),
    ({"acc": 0.021, "loss": 0.0, "weights": 0.0}, ["threads: 1 then, 2 now"], "differs beyond tolerance: acc by 0.021",
     False),
])
def test_the_verdict_at_its_boundaries(diff, why, expected, ok):
    line, good = verify.verdict(diff, why)
    assert line.startswith(expected) and good is ok


def test_a_sample_covers_every_distinct_setting_and_is_drawn_anew_unless_seeded():
    from labcore.store.planned import Planned

    planned = [Planned(_cfg(lr=0.01 * (i % 4 + 1)).replace(seed=i // 4)) for i in range(12)]  # 4 settings x 3 seeds
    chosen = verify.pick(planned, 1, seed=7)
    assert len(chosen) == 4 and {p.cfg.train.lr for p in chosen} == {0.01, 0.02, 0.03, 0.04}, "every setting"
    assert chosen == verify.pick(planned, 1, seed=7), "a given seed draws the same sample"
    draws = {tuple(p.key for p in verify.pick(planned, 1, seed)) for seed in range(20)}
    assert len(draws) > 1, "other seeds draw other seeds of the settings"
    assert len(verify.pick(planned, 2, 0)) == 8 and len(verify.pick(planned, None, 0)) == 12


def test_a_run_verify_finds_wrong_stays_flagged_until_retrained(store, capsys):
    cfg = _cfg()
    runs.run(cfg, store, device="cpu", tracking="disabled")
    store.flag(cfg, "make verify re-derived it and it differs: test_acc by 0.1")
    assert store.state(cfg) == "damaged" and "make verify re-derived it" in store.damage(cfg)
    assert runs.RunStore(store.root.parent).state(cfg) == "damaged", "another process sees the flag"
    again = runs.run(cfg, store, device="cpu", tracking="disabled")
    assert not again.cached and store.state(cfg) == "stored" and "is damaged (make verify" in capsys.readouterr().out


def test_the_index_gives_a_verdict_only_while_the_store_holds_what_it_checked(store, tmp_path, monkeypatch):
    """A verdict is about the runs as verify found them: retrained since (or from a verify that did not record
    them), the index says it checked an earlier store instead of showing it green."""
    from labcore.report import render

    monkeypatch.setenv("LABCORE_RUNS", str(tmp_path))  # the store the index reads: the test's
    cfg = _cfg()
    runs.run(cfg, store, device="cpu", tracking="disabled")
    out = tmp_path / "reports"
    out.mkdir()
    said = {"summary": "1 run checked; 1 identical", "ok": True, "time": "2026-12-07T23:00:00+0000"}
    (out / "verify.json").write_text(json.dumps({**said, "checked": verify.store_state(store, [cfg])}))
    assert verify.changed_since(verify.store_state(store, [cfg]), store) == 0
    line = render._verified(out, "smoke")
    assert line.startswith("<p class='lc-ok'>make verify (") and "earlier store" not in line and "as it was then" not in line
    checked = json.loads((out / "verify.json").read_text())["checked"]
    store.flag(cfg, "make verify re-derived it and it differs")  # flagged since (a sharded verify, say)
    assert verify.changed_since(checked, store) == 1, "a flag alone changes what the verdict was about"
    runs.run(cfg, store, device="cpu", tracking="disabled")  # retrained since
    assert verify.changed_since(json.loads((out / "verify.json").read_text())["checked"], store) == 1
    line = render._verified(out, "smoke")
    assert "lc-ok" not in line and "as it was then (1 of 1 run it checked changed since)" in line, line
    (out / "verify.json").write_text(json.dumps(said))  # a verify.json from before runs were recorded
    assert "which runs it checked was not recorded" in render._verified(out, "smoke")


@pytest.mark.slow
def test_make_verify_rederives_the_smoke_build_identically(smoke_build, tmp_path):
    result = verify.verify("smoke", sample=1, out_root=tmp_path, log=lambda line: None)
    assert result["ok"] and result["runs"] and all(r["verdict"] == "identical (bit for bit)" for r in result["runs"])
    n = len(result["runs"])
    assert result["summary"].startswith("29 runs checked (") and ": 0 damaged; " in result["summary"]
    assert f"{n} runs re-derived (1 per setting, sample seed {result['seed']}): {n} identical" in result["summary"]
    assert json.loads((tmp_path / "smoke" / "verify.json").read_text())["summary"] == result["summary"]


def test_a_run_trained_on_a_gpu_without_determinism_is_held_to_tolerances_not_bits():
    from types import SimpleNamespace

    gpu = SimpleNamespace(numerics={"device": "cuda", "deterministic": False})
    why = verify.nondeterministic(gpu)
    assert why and "DETERMINISTIC=1" in why[0]
    assert verify.nondeterministic(SimpleNamespace(numerics={"device": "cuda", "deterministic": True})) == []
    assert verify.nondeterministic(SimpleNamespace(numerics={"device": "cpu", "deterministic": False})) == []
    line, ok = verify.verdict({"acc": 0.001, "loss": 0.002, "weights": 0.01}, why)
    assert ok and line.startswith("within tolerance") and "DETERMINISTIC=1" in line
    line, ok = verify.verdict({"acc": 0.001, "loss": 0.002, "weights": 0.01}, [])
    assert not ok and "expected bit for bit" in line
