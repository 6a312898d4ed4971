"""The `lab` profile (the lab notebook's own runs at its settings), bf16 autocast on CPUs that compute it natively as a
recorded regime, a build of some studies only, and pages that leave out the sections a build has no runs for."""
from __future__ import annotations

import json
import types

import pytest
import torch

from labcore import machine
from labcore.analysis import claims, reference
from labcore.core.config import ConfigError, RunConfig
from labcore.engine import plan
from labcore.exercises import exercise
from labcore.report import render, sections, verify
from labcore.report.build import _sections
from labcore.store import provenance, runs
from labcore.store.planned import Planned
from labcore.store.training import train_run

from .synthetic import synthetic_splits, use_splits


# ---------------------------------------------------------------- the lab profile's plan

@pytest.fixture(scope="module")
def lab_plan() -> dict[str, list[Planned]]:
    """The lab profile's runs per notebook."""
    return {stem: exercise.planned_runs(stem, exercise.parameters(stem, "lab"), "lab")
            for stem in ("01_mlp_baseline", "02_cnn_depth", "03_residual", "04_gradient_flow")}


def test_the_lab_profile_is_the_lab_notebooks_runs_at_its_settings(lab_plan):
    runs_ = {p.key: p for p in plan.merge(p for ps in lab_plan.values() for p in ps)}
    by_family = {}
    for p in runs_.values():
        by_family.setdefault((p.cfg.model.family, p.cfg.train.precision), []).append(p.cfg)
    assert sorted(by_family) == [("lab_cnn", "auto"), ("lab_cnn", "fp32"), ("lab_resnet", "auto"), ("mlp", "fp32")]
    assert all(len(cfgs) == 3 and sorted(c.seed for c in cfgs) == [0, 1, 2] for cfgs in by_family.values())
    for cfgs in by_family.values():
        for c in cfgs:  # 45,000/5,000 (MNIST 55,000/5,000), batch 128, no augmentation, Adam, constant rate
            assert (c.data.val_size, c.data.subset, c.data.test_subset) == (5000, None, None)
            assert (c.train.batch_size, c.train.augment, c.train.optimizer, c.train.schedule) == (128, False, "adam", "constant")
    mlp = by_family[("mlp", "fp32")][0]
    assert (mlp.model.width, mlp.model.depth, mlp.train.lr, mlp.train.epochs) == (16, 2, 1e-4, 15)
    cnn = by_family[("lab_cnn", "auto")][0]
    assert (cnn.model.width, cnn.model.depth, cnn.model.kernel_size, cnn.train.lr, cnn.train.epochs) == (16, 3, 3, 1e-3, 10)
    res = by_family[("lab_resnet", "auto")][0]
    assert (res.model.width, res.model.depth, res.model.residual, res.train.epochs) == (64, 3, True, 10)
    assert not reference.differences("lab_cnn", cnn) and not reference.differences("lab_resnet", res)
    assert not reference.differences("mlp_mnist", mlp)


def test_the_lab_profile_plans_nothing_of_the_other_write_ups():
    groups = exercise.plan("04_gradient_flow", exercise.parameters("04_gradient_flow", "lab"), "lab")
    assert exercise.present(groups) == ["mlp", "lab_pair", "twins"]  # no deep twins, no ranking
    pair = groups["lab_pair"]
    assert [c.model.kernel_size for c in pair["plain"]] == [4, 4, 4]  # as the lab's gradient run built it
    assert pair["residual"][0].model.width == 64 and pair["plain"][0].data.val_size == 5000
    assert exercise.plan("01_mlp_baseline", exercise.parameters("01_mlp_baseline", "lab"), "lab")["long"] == []


# ---------------------------------------------------------------- bf16 where the device computes it natively

@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, False, "bf16"), (False, True, "bf16"),
                                                        (True, True, "bf16"), (False, False, "fp32")])
def test_auto_precision_follows_the_cpu(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    cpu = torch.device("cpu")
    assert machine.resolve_precision("auto", cpu) == expected
    assert machine.resolve_precision("fp32", cpu) == "fp32" and machine.resolve_precision("bf16", cpu) == "bf16"
    native, why = machine.native_bf16(cpu)
    assert native == (expected == "bf16") and ("AMX" in why or "AVX512-BF16" in why)


@pytest.mark.parametrize("native", [True, False])
def test_the_plan_says_which_precision_and_why(monkeypatch, native):
    monkeypatch.setattr(machine, "native_bf16", lambda device: (native, "this CPU has AMX" if native else "no AMX"))
    d = plan.describe(plan.build_plan("lab"), calibrate=False, store=runs.RunStore("/nonexistent-store"))
    line = d["summary"]
    assert f"precision auto: 6 runs in {'bfloat16 autocast' if native else 'fp32'} here" in line
    assert ("this CPU has AMX" if native else "no AMX") in line


@pytest.mark.parametrize("native", [True, False])
def test_a_run_records_the_precision_it_trained_in(tmp_path, monkeypatch, native):
    use_splits(monkeypatch, lambda cfg: synthetic_splits())
    monkeypatch.setattr(machine, "native_bf16", lambda device: (native, "faked"))
    cfg = RunConfig.build(data={"name": "mnist", "subset": 64, "val_size": 32, "test_subset": 32},
                          model={"family": "mlp", "width": 8}, train={"epochs": 1, "batch_size": 32, "precision": "auto"})
    trained = train_run(cfg, "cpu", "disabled")
    assert trained.result.numerics["precision"] == ("bf16" if native else "fp32")
    assert trained.result.precision == trained.result.numerics["precision"]
    forced = train_run(cfg, "cpu", "disabled", precision="fp32")  # make verify re-derives in the recorded one
    assert forced.result.numerics["precision"] == "fp32"
    store = runs.RunStore(tmp_path)
    store.put(trained.result, trained.model_state)
    assert store.get(cfg).precision == trained.result.precision  # served from the store, whatever this machine has


def test_verify_rederives_in_the_recorded_precision(monkeypatch):
    seen = {}

    def fake_train_run(cfg, device, tracking, checkpoints, compile=False, deterministic=False, precision=None):
        seen["precision"] = precision
        return "trained"

    monkeypatch.setattr(runs, "train_run", fake_train_run)
    cfg = RunConfig.build(model={"family": "mlp"}, train={"precision": "auto"})
    rec = types.SimpleNamespace(config=cfg, numerics={"precision": "bf16", "deterministic": False}, fused=(),
                                compiled=False)
    assert verify.rederive(cfg, rec, "cpu", lambda c: ()) == "trained" and seen["precision"] == "bf16"
    old = types.SimpleNamespace(config=RunConfig.build(model={"family": "mlp"}), numerics={"threads": 2}, fused=(),
                                compiled=False, device="cpu")
    verify.rederive(old.config, old, "cpu", lambda c: ())
    assert seen["precision"] == "fp32"  # a record from before precision was recorded: its config's
    now = types.SimpleNamespace(config=old.config, numerics={"threads": 2, "precision": "bf16"}, device="cpu")
    assert verify.settings_differ(old, now) == ["precision: fp32 then, bf16 now"]


def test_pages_say_how_their_runs_were_computed():
    record = {"profile": "lab", "parameters": {}, "left_out": ["VGG16, VGG19 and VGG24"],
              "provenance": {"regimes": [{"precision": "bf16", "runs": 6}, {"precision": "fp32", "runs": 3}],
                             "bf16_here": "6 of these runs trained in bfloat16 autocast; this CPU has neither"}}
    notes = render.banner_notes(record)
    assert notes[0].startswith("Precision: 6 runs in bfloat16 autocast, 3 runs in fp32")
    assert "this CPU has neither" in notes[1]
    assert "Left out of this build: VGG16, VGG19 and VGG24 (profile lab plans no runs for them)." == notes[2]
    assert render.banner_notes({"profile": "quick", "provenance": {"regimes": [{"precision": "fp32", "runs": 9}]}}) == []
    result = types.SimpleNamespace(precision="bf16")
    monkey = provenance.bf16_here([result, types.SimpleNamespace(precision="fp32")], torch.device("meta"))
    assert monkey.startswith("1 of these runs trained in bfloat16") and "emulated" in monkey
    assert provenance.bf16_here([types.SimpleNamespace(precision="fp32")], torch.device("cpu")) is None


def test_a_difference_from_the_lab_says_by_how_much_and_why():
    table = reference.compare("lab_cnn", {"val_acc": [0.60, 0.61, 0.605], "train_loss": [1.30, 1.31, 1.32]})
    sentence = claims.agreement_sentence(table)
    assert "val_acc 0.605" in sentence and "disagrees with" in sentence and "(ours is +0.045 from it)" in sentence
    assert "Likeliest reason for the difference: the lab's 0.56 and 1.31 are one run" in sentence
    agreeing = reference.compare("lab_cnn", {"val_acc": [0.559, 0.56, 0.561]})
    assert "Likeliest reason" not in claims.agreement_sentence(agreeing)


# ---------------------------------------------------------------- one study of any profile

def test_select_keeps_the_groups_and_only_the_chosen_studies():
    a, b = (Planned(RunConfig.build(model={"family": "mlp"}, seed=s), study=name) for s, name in ((0, "a"), (1, "b")))
    untrained = RunConfig.build(model={"family": "mlp"}, seed=5)
    groups = {"a": [a], "b": [b], "deep": {(1, False): [a, b]}, "pair": {"plain": [untrained]}}
    chosen = exercise.select(groups, ["a"])
    assert chosen == {"a": [a], "b": [], "deep": {(1, False): [a]}, "pair": {"plain": [untrained]}}
    assert exercise.present(chosen) == ["a", "deep", "pair"]
    assert exercise.select(groups, None) is groups
    assert exercise.present(exercise.select(groups, [])) == ["pair"]


def test_studies_select_runs_and_notebooks(capsys):
    built = plan.build_plan("smoke", None, ["vgg"])
    assert sorted(built.pages) == ["02_cnn_depth", "03_residual", "04_gradient_flow"]
    assert "01_mlp_baseline left out (none of their runs is selected)" in capsys.readouterr().out
    runs_ = built.runs
    assert {p.study for p in runs_} == {"vgg"} and {p.cfg.model.family for p in runs_} == {"vgg"}
    with pytest.raises(ConfigError, match="no study 'vggg' in profile smoke; its studies: 01_mlp_baseline: runs, long"):
        plan.build_plan("smoke", None, ["vggg"])


# ---------------------------------------------------------------- sections a build leaves out

def _cell(kind: str, text: str, *tags: str) -> dict:
    return {"cell_type": kind, "metadata": {"tags": list(tags)}, "source": text, "id": text[:8].strip("# ")}


def test_sections_without_their_runs_become_one_note_each():
    nb = {"cells": [_cell("markdown", "# Title"), _cell("code", "setup()"),
                    _cell("markdown", "## VGG", "needs:vgg"), _cell("code", "vgg()", "needs:vgg"),
                    _cell("markdown", "## He", "needs:cifar_resnet"), _cell("code", "he()", "needs:cifar_resnet"),
                    _cell("markdown", "## Either", "needs:vgg|resnet"), _cell("code", "rank()", "needs:vgg|resnet"),
                    _cell("code", "both()", "needs:vgg", "needs:resnet"), _cell("code", "publish()")]}
    out, left = sections.leave_out(nb, {"resnet"}, "profile lab does not plan")
    kinds = [(c["cell_type"], "".join(c["source"])[:12]) for c in out["cells"]]
    assert left == ["VGG", "He", "part of Either"]
    assert [k for k, _ in kinds] == ["markdown", "code", "markdown", "markdown", "markdown", "code", "markdown", "code"]
    notes = [c["source"] for c in out["cells"] if "left-out" in c["metadata"]["tags"]]
    assert notes[0] == ("### VGG\n\n*Left out of this build:* this section needs the runs of `vgg`, which profile lab "
                        "does not plan.")
    assert notes[2].startswith("*Left out of this build:* the rest of this section needs the runs of `vgg`")
    everything, none_left = sections.leave_out(nb, {"vgg", "resnet", "cifar_resnet"}, "")
    assert everything == nb and none_left == []
    assert nb["cells"][2]["source"] == "## VGG"  # the notebook itself is never changed


def test_the_build_leaves_out_the_lab_profiles_absent_sections(tmp_path):
    page = exercise.plan_page("02_cnn_depth", "lab")
    source, left = _sections("02_cnn_depth", page.present, "profile lab does not plan", tmp_path)
    cells = json.loads(source.read_text())["cells"]
    assert left == ["VGG16, VGG19 and VGG24", "He et al.'s plain networks: shallow against deep"]
    assert not [c for c in cells if "needs:vgg" in c["metadata"].get("tags", [])]
    assert [c for c in cells if "needs:lab_cnn_fp32" in c["metadata"].get("tags", [])]
    source, left = _sections("04_gradient_flow", exercise.plan_page("04_gradient_flow", "lab").present, "", tmp_path)
    assert [t.split(" ")[0] for t in left] == ["part", "2.", "3.", "4.", "6."]  # the twins' boxes, sections 2-4, 6


def test_a_summary_takes_the_variables_the_build_made():
    def summary(a: int, b: int | None, c: str = "default") -> tuple:
        return a, b, c

    from labcore.report import publish

    assert publish.call(summary, {"a": 1, "other": 2}) == (1, None, "default")
    assert publish.call(summary, {"a": 1, "b": 2, "c": "x"}) == (1, 2, "x")


def test_diff_names_a_change_of_precision():
    from labcore.report import diff

    a = {"provenance": {"regimes": [{"precision": "bf16", "runs": 6}, {"precision": "fp32", "runs": 3}]}}
    b = {"provenance": {"regimes": [{"precision": "fp32", "runs": 9}]}}
    assert "precision of its runs: 6 runs bf16, 3 runs fp32 (B: 9 runs fp32)" in diff.settings(a, b)
    assert diff.settings(b, {"provenance": {"regimes": [{"runs": 9}]}}) == []  # before precision was recorded: fp32
