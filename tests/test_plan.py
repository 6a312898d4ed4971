"""Plans: every run of a profile derived from its parameter files; estimates and ETAs from synthetic costs."""
import math
import os

import pytest

from labcore import cli
from labcore.engine import calibrate, executor, plan, raypass
from labcore.exercises import exercise
from labcore import machine
from labcore.store import runs
from labcore.store.planned import Planned
from labcore.core.config import ConfigError, RunConfig
from labcore.engine.jobs import Progress, makespan
from labcore.text import human_seconds

# Runs per notebook and profile, each counted from the parameter files by hand:
#   01: 2 x seeds (a run and a long run per seed);
#   02: studies x sweep values x plain x seeds;  03: 02's plus residual twins, lab_resnet twins, resnet18/34;
#   04: trains nothing of its own; it reads what its module declares as UPSTREAM: 03's plain and residual twins of its
#       deep_study at deep_depths (x seeds), 01's first MLP run, 03's VGG16/19/24 and ResNet18/34 (5 x seeds).
EXPECTED = {
    "smoke": {"01_mlp_baseline": 2, "02_cnn_depth": 13, "03_residual": 27, "04_gradient_flow": 4 + 1 + 5},
    "quick": {"01_mlp_baseline": 6, "02_cnn_depth": 45, "03_residual": 93, "04_gradient_flow": 12 + 1 + 15},
    "full": {"01_mlp_baseline": 6, "02_cnn_depth": 81, "03_residual": 171, "04_gradient_flow": 12 + 1 + 15},
}
# Distinct runs of the whole profile: 03 holds all of 02's runs, and all of 04's are 01's and 03's
# (smoke: 2 + 27; quick: 6 + 93; full: 6 + 171, with He et al.'s five depths of Table 6, the lab CNN's and
# ResNetCNN's block sweeps, and the third write-up's 30-epoch ConvNets at 22 and 40 layers).
DISTINCT = {"smoke": 29, "quick": 99, "full": 177}


@pytest.mark.parametrize("profile", sorted(EXPECTED))
def test_plan_counts_for_every_profile(profile):
    for stem, n in EXPECTED[profile].items():
        assert len(exercise.planned_runs(stem, exercise.parameters(stem, profile), profile)) == n, stem
    planned = plan.profile_runs(profile)
    assert len(planned) == DISTINCT[profile]
    assert len({p.key for p in planned}) == len(planned), "each run once"


def test_a_shared_run_is_planned_once_with_every_checkpoint_any_notebook_needs():
    cfg = RunConfig.build(model={"family": "mlp"})
    merged = plan.merge([Planned(cfg, (0, 1), ("01",)), Planned(cfg, (3,), ("04",)),
                         Planned(cfg.replace(seed=1), (), ("01",))])
    assert len(merged) == 2
    assert merged[0].checkpoints == (0, 1, 3) and merged[0].notebooks == ("01", "04")


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
    assert progress.eta() == pytest.approx(20.0 * 29 / 30) and progress.done == 1  # corrected by the run so far
    assert "run 1/3 ok" in line and "estimated 30.0 s" in line and "node-a" in line and line in capsys.readouterr().out
    progress.finished(runs.RunResult(cfgs[0], [], {}, 1, 40.0, "cpu", "synthetic", estimate_seconds=10.0), "node-a")
    assert progress.eta() == pytest.approx(20.0 * 69 / 40)  # slower than estimated: the rest will be too
    assert "(1.73x the estimates so far)" in progress.eta_text()


def test_progress_never_says_0_s_while_runs_remain():
    cfgs = [RunConfig.build(seed=s) for s in range(2)]
    progress = Progress({cfgs[0].key(): 0.0, cfgs[1].key(): 0.0}, slots=1, headless=True)
    assert progress.eta() is None and progress.eta_text() == "ETA unknown (runs without an estimate remain)"
    for c in cfgs:
        progress.finished(runs.RunResult(c, [], {}, 1, 3.0, "cpu", "synthetic"), "node")
    assert progress.eta() == 0.0


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
    assert line == ("plan quick: 4 runs, 1 stored, 1 pending, 1 damaged (files changed after training; `make train` retrains them), "
                    "1 failed (retry with RETRY_FAILED=1); "
                    "about 2.0 h of compute on cpu (estimate)")
    assert [human_seconds(s) for s in (12, 600, 7200, 4 * 86400)] == ["12 s", "10.0 min", "2.0 h", "4.0 days"]


def test_bad_executor_and_unreachable_cluster_fail_at_once(monkeypatch):
    with pytest.raises(ConfigError, match="executor 'slurm' is unknown; choose one of: local, ray"):
        executor.train(plan.build_plan("smoke"), executor="slurm")
    with pytest.raises(ConfigError, match="no Ray cluster answers at 127.0.0.1:1"):
        raypass.check_address("127.0.0.1:1", timeout=2)
    with pytest.raises(ConfigError, match="is not host:port"):
        raypass.check_address("my-cluster")
    assert cli.main(["train", "--profile", "smoke", "--executor", "dask"]) == 2


def test_a_wrong_cluster_fails_before_anything_is_planned(monkeypatch, tmp_path):
    """An unreachable RAY_ADDRESS, or a driver without token authentication, is refused before the plan is
    estimated and calibrated (which takes seconds to minutes), not after."""
    import socket

    monkeypatch.setattr(executor, "describe", lambda *a, **k: pytest.fail("planned before checking the cluster"))
    store, built = runs.RunStore(tmp_path), plan.build_plan("smoke")  # the plan (no calibration: describe does that)
    with pytest.raises(ConfigError, match="no Ray cluster answers at 127.0.0.1:1"):
        executor.train(built, address="127.0.0.1:1", store=store)
    with socket.create_server(("127.0.0.1", 0)) as server:  # something answers, on loopback only
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        with pytest.raises(ConfigError, match="without token authentication"):
            executor.train(built, address=f"127.0.0.1:{server.getsockname()[1]}", store=store)


@pytest.mark.parametrize("given, pending, threads", [
    ("ray", 5.0, [1]),  # Ray asked for: planned at a Ray task's threads at once, calibrated once
    ("", 700.0, [None, 1]),  # picked because 10+ min are pending (at all threads): planned again for Ray
    ("", 5.0, [None]),  # local picked: all threads
    ("local", 700.0, [None]),
])
def test_ray_runs_are_planned_at_their_threads_without_a_wasted_calibration(monkeypatch, tmp_path, given, pending,
                                                                              threads):
    import pandas as pd

    calls = []

    def describe(*a, threads=None, **k):
        calls.append(threads)
        return {"summary": "plan smoke", "pending_seconds": pending, "planned": [], "estimates": {},
                "table": pd.DataFrame({"state": []}), "device": "cpu"}

    monkeypatch.setattr(executor, "describe", describe)
    monkeypatch.setattr(executor, "local_slots", lambda device: 2)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = executor.train(plan.build_plan("smoke"), executor=given, device="cpu", store=runs.RunStore(tmp_path))
    assert calls == threads and not out.trained


def test_make_plan_into_a_closed_pipe_exits_quietly(tmp_path):
    """`make plan | head -1`: the reader goes away; no BrokenPipeError traceback, exit status 0."""
    import subprocess
    import sys

    env = {**os.environ, "LABCORE_RUNS": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-m", "labcore", "plan", "--profile", "smoke", "--no-calibrate"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the plan is printed: every write to the pipe fails
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "BrokenPipe" not in err and "Traceback" not in err, err


def test_a_second_training_pass_on_the_same_profile_is_refused(tmp_path):
    store = runs.RunStore(tmp_path)
    with executor.exclusive(store, "smoke"):
        with pytest.raises(ConfigError, match="another `make train` or `make report` of profile smoke is training"):
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
    assert raypass.concurrent_runs(resources, cpus, gpus) == expected


@pytest.mark.parametrize("given, pending, address, slots, ray_installed, expected", [
    ("local", 9e9, None, 16, True, "local"),  # as given, whatever is pending
    ("ray", 1.0, None, 1, True, "ray"),
    ("", 599.0, None, 2, True, "local"),  # below the threshold: Ray's start-up would not pay off
    ("", 600.0, None, 2, True, "ray"),
    ("", 3600.0, None, 1, True, "local"),  # one core (or one GPU): nothing runs beside anything
    ("", 3600.0, None, 2, False, "local"),  # Ray not installed
    ("auto", None, None, 8, True, "local"),  # nothing pending
    ("", 1.0, "10.0.0.5:6379", 1, True, "ray"),  # a cluster was named
])
def test_the_executor_is_ray_only_where_it_trains_several_runs_at_once(given, pending, address, slots,
                                                                       ray_installed, expected):
    chosen, why = executor.choose_executor(given, pending, address, slots, ray_installed)
    assert chosen == expected
    assert (why is None) == (given in executor.EXECUTORS or expected == "local"), "a picked Ray says why"
    if why:
        assert why.startswith("executor ray: picked because") and "EXECUTOR=local" in why


def test_calibration_for_ray_runs_uses_their_threads_and_restores_ours():
    import torch

    before = torch.get_num_threads()
    with machine.threads(1):
        assert torch.get_num_threads() == 1 and calibrate.device_name("cpu").startswith("cpu: 1 thread of ")
    assert torch.get_num_threads() == before
    with machine.threads(None):
        assert torch.get_num_threads() == before


def test_a_build_of_some_notebooks_keeps_the_checkpoints_the_others_need():
    """Building 01 and 03, then 04 (which probes their runs at every epoch), retrains nothing for 04."""
    first = {p.key: p.checkpoints for p in plan.profile_runs("smoke", ["01_mlp_baseline", "03_residual"])}
    later = {p.key: p.checkpoints for p in plan.profile_runs("smoke", ["04_gradient_flow"])}
    assert later and all(k in first and set(v) <= set(first[k]) for k, v in later.items())
    assert any(len(v) > 1 for v in later.values())
