"""Plans: every run of a profile derived from its parameter files; estimates and ETAs from synthetic costs."""
import math

import pytest

from labcore import calibrate, executor, plan, runs
from labcore import params as lp
from labcore.config import ConfigError, RunConfig
from labcore.executor import Progress, makespan

# Runs per notebook and profile, each counted from the parameter files by hand:
#   01: 2 x seeds (a run and a long run per seed);
#   02: studies x sweep values x plain x seeds;  03: 02's plus residual twins, lab_resnet twins, resnet18/34;
#   04: deep_depths x {plain, residual} x seeds, plus what it declares it reads: 01's first MLP run and 03's
#       VGG16/19/24 and ResNet18/34 runs (5 models x 03's seeds).
EXPECTED = {
    "smoke": {"01_mlp_baseline": 2, "02_cnn_depth": 13, "03_residual": 27, "04_gradient_flow": 4 + 1 + 5},
    "quick": {"01_mlp_baseline": 6, "02_cnn_depth": 45, "03_residual": 93, "04_gradient_flow": 12 + 1 + 15},
    "full": {"01_mlp_baseline": 6, "02_cnn_depth": 75, "03_residual": 159, "04_gradient_flow": 12 + 1 + 15},
}
# Distinct runs of the whole profile: 03 holds all of 02's runs, and 04's upstream runs are 01's and 03's
# (smoke: 2 + 27 + 4; quick: 6 + 93 + 12; full: 6 + 159 + 12, with He et al.'s five depths of Table 6 and the
# lab CNN's and ResNetCNN's block sweeps).
DISTINCT = {"smoke": 33, "quick": 111, "full": 177}


@pytest.mark.parametrize("profile", sorted(EXPECTED))
def test_plan_counts_for_every_profile(profile):
    for stem, n in EXPECTED[profile].items():
        assert len(plan.notebook_runs(stem, lp.resolve_parameters(stem, profile))) == n, stem
    planned = plan.profile_runs(profile)
    assert len(planned) == DISTINCT[profile]
    assert len({p.key for p in planned}) == len(planned), "each run once"


def test_a_shared_run_is_planned_once_with_every_checkpoint_any_notebook_needs():
    cfg = RunConfig.build(model={"family": "mlp"})
    merged = plan.merge([plan.Planned(cfg, (0, 1), ("01",)), plan.Planned(cfg, (3,), ("04",)),
                         plan.Planned(cfg.replace(seed=1), (), ("01",))])
    assert len(merged) == 2
    assert merged[0].checkpoints == (0, 1, 3) and merged[0].notebooks == ("01", "04")


def test_exercise_04_plans_its_twins_and_01s_mlp_run_with_per_epoch_weights():
    p4 = lp.resolve_parameters("04_gradient_flow", "quick")
    p1 = lp.resolve_parameters("01_mlp_baseline", "quick")
    ex4 = plan.gradient_flow(**{k: p4[k] for k in ("data", "train", "deep_model", "deep_depths", "seeds",
                                                     "profile", "upstream")})
    first_01 = plan.mlp_baseline(p1["data"], p1["model"], p1["train"], p1["seeds"], p1["long_epochs"])["runs"][0]
    assert ex4["mlp"][0].key == first_01.key and ex4["mlp"][0].checkpoints == tuple(range(16))
    for (depth, residual), ps in ex4["deep"].items():
        assert all(p.cfg.model.depth == depth and p.cfg.model.residual == residual for p in ps)
        assert all(p.checkpoints == tuple(range(p.cfg.train.epochs + 1)) for p in ps)


def test_empty_seeds_fail_before_anything_runs():
    with pytest.raises(ConfigError, match="seeds is empty"):
        plan.mlp_baseline({}, {}, {}, [], 3)
    with pytest.raises(ConfigError, match="seeds is empty"):
        plan.depth_studies({"mlp": {"model": {"family": "mlp"}}}, {}, {}, [], [False])


def test_plan_validates_every_model_on_the_meta_device():
    params = lp.resolve_parameters("04_gradient_flow", "smoke")
    with pytest.raises(ConfigError, match="cifar_resnet depth must be 6n\\+2"):
        plan.notebook_runs("04_gradient_flow", {**params, "deep_model": {"family": "cifar_resnet"}})


@pytest.mark.parametrize("costs, slots, expected", [
    ([], 2, 0.0),
    ([5.0], 3, 5.0),
    ([1.0, 2.0, 3.0], 1, 6.0),  # one worker: the sum
    ([3.0, 3.0, 2.0, 2.0, 2.0], 2, 7.0),  # longest first: 3+2+2 | 3+2
    ([4.0, 1.0, 1.0, 1.0, 1.0], 2, 4.0),  # the long one alone, the rest beside it
    ([1.0] * 10, 20, 1.0),  # more workers than runs
])
def test_makespan_of_synthetic_costs(costs, slots, expected):
    assert makespan(costs, slots) == pytest.approx(expected)


def test_progress_eta_falls_as_runs_finish(capsys):
    cfgs = [RunConfig.build(seed=s) for s in range(3)]
    progress = Progress({c.key(): cost for c, cost in zip(cfgs, (10.0, 20.0, 30.0))}, slots=2, headless=True)
    assert progress.eta() == 30.0
    result = runs.RunResult(cfgs[2], [], {}, 1, 29.0, "cpu", "synthetic", estimate_seconds=30.0)
    line = progress.finished(result, "node-a")
    assert progress.eta() == 20.0 and progress.done == 1
    assert "run 1/3 ok" in line and "estimated 30.0 s" in line and "node-a" in line and line in capsys.readouterr().out


def test_estimate_arithmetic_from_synthetic_step_costs():
    cfg = RunConfig.build({"name": "cifar10", "val_size": 1000, "subset": 4000}, {"family": "mlp"},
                          {"epochs": 8, "batch_size": 128})
    costs = {calibrate.arch_key(cfg): {"step_s": 0.1, "forward_s": 0.02, "peak_model_bytes": 1000.0}}
    steps, val_batches = 8 * math.ceil(4000 / 128), 8 * math.ceil(1000 / 128)
    assert calibrate.estimate_seconds(cfg, costs) == pytest.approx(steps * 0.1 + val_batches * 0.02)
    assert calibrate.peak_bytes(cfg, costs) == 1000.0 + (4000 + 1000 + 10000) * 3 * 32 * 32
    wider = cfg.replace(model={"width": 32})
    assert calibrate.arch_key(wider) != calibrate.arch_key(cfg)
    assert calibrate.arch_key(cfg.replace(seed=3, train={"lr": 0.5})) == calibrate.arch_key(cfg), "cost ignores seed and lr"


def test_calibration_measures_real_steps_and_is_cached_per_device(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path))
    cfg = RunConfig.build({"name": "mnist"}, {"family": "mlp", "width": 8, "depth": 1}, {"batch_size": 16})
    first = calibrate.calibrate([cfg], "cpu", progress=False)[calibrate.arch_key(cfg)]
    assert first["step_s"] > 0 and first["forward_s"] > 0 and first["peak_model_bytes"] > 0
    monkeypatch.setattr(calibrate, "measure", lambda *a, **k: pytest.fail("a cached architecture was measured again"))
    assert calibrate.calibrate([cfg], "cpu", progress=False)[calibrate.arch_key(cfg)] == first


def test_summary_line_and_human_times():
    import pandas as pd

    table = pd.DataFrame({"state": ["stored", "pending", "damaged", "failed"]})
    line = plan.summary_line("quick", table, 7200.0, "cpu")
    assert line == ("plan quick: 4 runs, 1 stored, 2 pending, 1 failed (retry with RETRY_FAILED=1); "
                    "about 2.0 h of compute on cpu (estimate)")
    assert [plan.human_seconds(s) for s in (12, 600, 7200, 4 * 86400)] == ["12 s", "10.0 min", "2.0 h", "4.0 days"]


def test_bad_executor_and_unreachable_cluster_fail_at_once(monkeypatch):
    with pytest.raises(ConfigError, match="executor 'slurm' is unknown; choose one of: local, ray"):
        executor.train("smoke", executor="slurm")
    with pytest.raises(ConfigError, match="no Ray cluster answers at 127.0.0.1:1"):
        executor.check_address("127.0.0.1:1", timeout=2)
    with pytest.raises(ConfigError, match="is not host:port"):
        executor.check_address("my-cluster")
    assert executor.main(["--profile", "smoke", "--executor", "dask"]) == 2


def test_a_second_training_pass_on_the_same_profile_is_refused(tmp_path):
    store = runs.RunStore(tmp_path)
    with executor.exclusive(store, "smoke"):
        with pytest.raises(ConfigError, match="another `make train` for profile smoke is running"):
            with executor.exclusive(store, "smoke"):
                pass
    with executor.exclusive(store, "smoke"):  # released: the next pass may start
        pass


def test_default_profile_is_quick_without_a_gpu_or_cluster(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert plan.default_profile()[0] == "quick"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert plan.default_profile() == ("full", "RAY_ADDRESS names a Ray cluster (10.0.0.5:6379)")


@pytest.mark.parametrize("resources, cpus, gpus, expected", [
    ({"CPU": 2.0}, 1, 0.0, 2),
    ({"CPU": 16.0, "GPU": 1.0}, 1, 1.0, 1),  # one GPU: one run at a time
    ({"CPU": 16.0, "GPU": 1.0}, 1, 0.25, 4),  # four runs share it
    ({"CPU": 3.0}, 2, 0.0, 1),
    ({}, 1, 0.0, 1),  # never zero
])
def test_concurrent_runs_of_a_cluster(resources, cpus, gpus, expected):
    assert executor.concurrent_runs(resources, cpus, gpus) == expected
