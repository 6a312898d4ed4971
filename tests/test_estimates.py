"""Estimates that answer in seconds and survive a busy machine: a coarse FLOP-based estimate for what is not timed
yet, timings taken under load never kept for good, and finished runs correcting the rest."""
import pytest

from labcore.engine import calibrate, jobs, plan
from labcore.store import runs
from labcore.core.config import ModelConfig, RunConfig, TrainConfig


def _cfgs():
    data = {"name": "cifar10", "val_size": 1000, "subset": 2000}
    return [RunConfig.build(data, {"family": "convnet", "depth": d, "width": 8}, {"epochs": 1}) for d in range(1, 9)]


def test_a_coarse_estimate_times_a_few_architectures_and_scales_the_rest_by_their_flops(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path))
    monkeypatch.setattr(calibrate, "busy", lambda: False)
    rate, overhead = 30e-3 / 1e9, 0.002  # 30 ms per forward GFLOP, 2 ms per step
    timed = []

    def measure(cfg, device="auto", **kw):
        timed.append(cfg.model.depth)
        return {"step_s": overhead + rate * calibrate.size(cfg)[0], "forward_s": 0.001, "peak_model_bytes": 1.0,
                "n_params": 1, "timed_steps": 3}

    monkeypatch.setattr(calibrate, "measure", measure)
    cfgs = _cfgs()
    costs = calibrate.coarse(cfgs, "cpu", progress=False)
    assert len(timed) == calibrate.COARSE_TIMED and not {7, 8} & set(timed), "a few, never the costliest quarter"
    deepest = costs[calibrate.arch_key(cfgs[-1])]
    assert deepest["coarse"] and deepest["step_s"] == pytest.approx(overhead + rate * calibrate.size(cfgs[-1])[0], rel=0.05)
    exact = calibrate.calibrate(cfgs, "cpu", progress=False)  # the timed ones are cached; the rest measured now
    assert not any(c.get("coarse") for c in exact.values()) and len(timed) == len(cfgs)


def test_a_timing_taken_on_a_busy_machine_is_taken_again_once_it_is_idle(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path))
    cfg = _cfgs()[0]
    monkeypatch.setattr(calibrate, "measure", lambda c, d="auto", **kw: {"step_s": 2.0, "forward_s": 1.0,
                                                                   "peak_model_bytes": 1.0, "n_params": 1})
    monkeypatch.setattr(calibrate, "busy", lambda: True)
    monkeypatch.setattr(calibrate, "other_load", lambda: 2.0)
    assert calibrate.calibrate([cfg], "cpu")[calibrate.arch_key(cfg)]["busy"]
    assert "this machine is busy (2 other threads ready to run" in capsys.readouterr().out
    assert calibrate.calibrate([cfg], "cpu")[calibrate.arch_key(cfg)]["step_s"] == 2.0, "still busy: kept for now"
    monkeypatch.setattr(calibrate, "busy", lambda: False)
    monkeypatch.setattr(calibrate, "measure", lambda c, d="auto", **kw: {"step_s": 0.1, "forward_s": 0.05,
                                                                   "peak_model_bytes": 1.0, "n_params": 1})
    again = calibrate.calibrate([cfg], "cpu")[calibrate.arch_key(cfg)]
    assert again["step_s"] == 0.1 and not again["busy"], "the outlier did not stay for good"


def test_load_that_arrives_while_a_step_is_timed_marks_the_timing_for_another_try(tmp_path, monkeypatch):
    """The first look found the machine idle; another process began calibrating at once: the look after the
    timing sees it, and the timing is not kept for good (a two-thread step timed so ran 38x high here)."""
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path))
    cfg = _cfgs()[0]
    looks = iter([False, True])  # calibrate's own look before, then one after the timing (no schedstat here)
    monkeypatch.setattr(calibrate, "busy", lambda: next(looks))
    seen = []
    monkeypatch.setattr(calibrate, "measure", lambda c, d="auto", loaded=False, **kw: seen.append(loaded) or {
        "step_s": 4.6, "forward_s": 1.0, "peak_model_bytes": 1.0, "n_params": 1})
    assert calibrate.calibrate([cfg], "cpu", progress=False)[calibrate.arch_key(cfg)]["busy"]
    assert seen == [False], "idle when it began: timed by the wall clock as usual"
    monkeypatch.setattr(calibrate, "busy", lambda: False)
    monkeypatch.setattr(calibrate, "measure", lambda c, d="auto", **kw: {"step_s": 0.12, "forward_s": 0.02,
                                                                   "peak_model_bytes": 1.0, "n_params": 1})
    again = calibrate.calibrate([cfg], "cpu", progress=False)[calibrate.arch_key(cfg)]
    assert again["step_s"] == 0.12 and not again["busy"], "taken again on an idle machine"


@pytest.mark.parametrize("waited, busy", [(0.03, False), (calibrate.WAITED_BUSY, False), (0.21, True), (1.0, True)])
def test_a_timing_whose_threads_waited_for_a_cpu_is_busy_whatever_the_looks_said(tmp_path, monkeypatch, waited, busy):
    """Another process's load that comes and goes between two looks is seen in the seconds this process's threads
    spent waiting for a CPU while timed (0.03 per second idle here, 1.0 beside two busy processes)."""
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path))
    monkeypatch.setattr(calibrate, "busy", lambda: False)
    monkeypatch.setattr(calibrate, "measure", lambda c, d="auto", **kw: {
        "step_s": 1.0, "forward_s": 0.1, "peak_model_bytes": 1.0, "n_params": 1, "waited": waited})
    cfg = _cfgs()[0]
    got = calibrate.calibrate([cfg], "cpu", progress=False)[calibrate.arch_key(cfg)]
    assert got["busy"] is busy and "waited" not in got


def test_a_step_is_timed_with_trainings_settings_and_the_process_keeps_its_own(monkeypatch):
    import torch

    cfg = RunConfig(model=ModelConfig("mlp", 1, 8), train=TrainConfig(batch_size=16))
    torch.use_deterministic_algorithms(True, warn_only=True)
    seen = []
    monkeypatch.setattr(calibrate, "_median_time", lambda fn, clock, sync: seen.append(
        torch.are_deterministic_algorithms_enabled()) or (0.01, 5))
    try:
        m = calibrate.measure(cfg, "cpu")
        assert seen == [False, False], "timed as training runs it (machine.configure)"
        assert torch.are_deterministic_algorithms_enabled(), "the planning process's own settings are back"
        assert m["waited"] is None or m["waited"] >= 0
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_timing_of_other_training_code_is_another_architectures():
    cfg = _cfgs()[0]
    calibrate._code.cache_clear()
    before = calibrate.arch_key(cfg)
    real = calibrate.identity.code_fingerprint
    try:
        calibrate.identity.code_fingerprint = lambda kind, family=None: {**real(kind, family), "labcore.core.step": "x"}
        calibrate._code.cache_clear()
        assert calibrate.arch_key(cfg) != before, "an edited step is timed again"
    finally:
        calibrate.identity.code_fingerprint = real
        calibrate._code.cache_clear()
    assert calibrate.arch_key(cfg) == before


def test_finished_runs_teach_the_estimate_of_the_runs_still_to_train():
    cfg = _cfgs()[0]
    n_train, n_val = 2000, 1000
    steps = 1 * ((n_train + 127) // 128 + ((n_val + 127) // 128) / 3)
    done = runs.RunResult(cfg, [], {}, 1, seconds=steps * 0.05, device="cpu: 2 threads", data_source="x")
    learned = calibrate.learned([done, done.__class__(**{**done.__dict__, "device": "cuda: H100"})], "cpu: 2 threads")
    assert learned[calibrate.arch_key(cfg)]["step_s"] == pytest.approx(0.05) and learned[calibrate.arch_key(cfg)]["learned_from"] == 1
    twin = cfg.replace(seed=1)
    assert calibrate.estimate_seconds(twin, learned) == pytest.approx(steps * 0.05), "same architecture, another seed"


def test_what_a_run_takes_besides_its_steps_is_learned_from_runs_that_recorded_their_wall_time():
    """Building, testing, W&B: `seconds` leaves them out, a smoke run is mostly them; the median of what stored runs
    on this device took besides, never below 0, and nothing from runs elsewhere or before wall time was recorded."""
    cfg = _cfgs()[0]
    here = "cpu: 2 threads"

    def run(seconds, wall, device=here, status="ok", resumed=None):
        return runs.RunResult(cfg, [], {}, 1, seconds=seconds, device=device, data_source="x", wall_seconds=wall,
                              status=status, resumed=resumed)

    assert jobs.overhead_per_run([run(1.0, None), run(1.0, 9.0, "cuda: H100")], here) is None
    assert jobs.overhead_per_run([run(30.0, 12.0, resumed={"epoch": 3})], here) is None, "seconds of every attempt"
    assert jobs.overhead_per_run([run(1.0, 1.4), run(2.0, 2.6), run(0.5, 1.5), run(1.0, 99.0, status="failed")],
                              here) == (pytest.approx(0.6), 3)
    assert jobs.overhead_per_run([run(1.0, 0.9)], here) == (0.0, 1), "a clock's jitter is not a negative cost"


def test_the_eta_is_wall_time_learned_from_the_finished_runs_jobs():
    """Three runs estimated 1 s each plus 0.5 s besides; the first trained in 2 s and took 2.5 s more (building,
    testing, W&B): the rest are expected to take 2 x 1 s + 2.5 s each, not the 1 s their steps alone would say."""
    from labcore.engine.jobs import Progress
    from labcore.store.planned import Planned

    a, b, c = (Planned(cfg) for cfg in _cfgs()[:3])
    progress = Progress({p.key: 1.0 for p in (a, b, c)}, 1, headless=True, jobs=[[a], [b], [c]], overhead=0.5)
    assert progress.eta() == pytest.approx(4.5), "before any run: the estimates with the overhead"
    row = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5}
    progress.finished(runs.RunResult(a.cfg, [row], {}, 1, seconds=2.0, device="cpu", data_source="x",
                                     estimate_seconds=1.0, wall_seconds=4.5), "this process")
    assert progress.eta() == pytest.approx(2 * (2.0 + 2.5))
    assert "(2.00x the estimates so far, 2.5 s a run besides)" in progress.eta_text()
    resumed = runs.RunResult(b.cfg, [row], {}, 1, seconds=30.0, device="cpu", data_source="x",
                             estimate_seconds=1.0, wall_seconds=3.0, resumed={"epoch": 1})
    progress.finished(resumed, "this process")  # its seconds span every attempt, its wall time the last alone
    assert progress.besides() == 2.5, "a resumed run teaches nothing about the time besides"


def test_make_plan_names_its_profile_first_and_the_others_cost_only_when_known(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    profile, first = plan.choose_profile("")
    assert profile == "quick" and first.startswith("profile quick: picked because no CUDA GPU and no RAY_ADDRESS here")
    assert "PROFILE=full for the lab's settings" in first and "estimate" not in first, "nothing measured before it"
    monkeypatch.setattr(calibrate, "calibrate", lambda cfgs, device="auto", progress=True, cached_only=False, members=1: {})
    assert plan.other_cost("quick") == "PROFILE=full: `make plan PROFILE=full` estimates what it would cost here"


def test_an_architecture_that_runs_out_of_memory_while_timed_is_estimated_not_fatal(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path))
    monkeypatch.setattr(calibrate, "busy", lambda: False)
    cfgs = _cfgs()[:3]

    def measure(cfg, device="auto", **kw):
        if cfg.model.depth == 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return {"step_s": 0.01 * cfg.model.depth, "forward_s": 0.001, "peak_model_bytes": 1.0, "n_params": 1}

    monkeypatch.setattr(calibrate, "measure", measure)
    costs = calibrate.calibrate(cfgs, "cpu")
    assert costs[calibrate.arch_key(cfgs[2])]["coarse"] and costs[calibrate.arch_key(cfgs[2])]["step_s"] > 0
    assert "could not time convnet-d3-w8-plain-s0" in capsys.readouterr().out


def test_steps_are_timed_with_batch_making_and_by_cpu_time_on_one_thread(monkeypatch):
    """A one-thread step is timed by its thread's CPU time, which other work on the machine cannot stretch, and
    includes making the batch as `fit` does (for the MLPs, as long as the arithmetic)."""
    import itertools

    from labcore import machine

    cfg = RunConfig(model=ModelConfig("mlp", 1, 8), train=TrainConfig(batch_size=16))
    made, real_batches = [], calibrate.batches
    monkeypatch.setattr(calibrate, "batches", lambda *a, **k: made.append(1) or real_batches(*a, **k))
    ticks = itertools.count()
    monkeypatch.setattr(calibrate.time, "thread_time", lambda: 0.5 * next(ticks))
    with machine.threads(1):
        m = calibrate.measure(cfg, "cpu")
    assert made and m["step_s"] == m["forward_s"] == 0.5 and m["timed_steps"] >= calibrate.MAX_STEPS
    # More threads on a loaded machine: no slower than one thread (their wall-clock time is what load distorts).
    with machine.threads(2):
        loaded = calibrate.measure(cfg, "cpu", loaded=True)
    assert loaded["one_thread_step_s"] == 0.5 and loaded["step_s"] <= 0.5
