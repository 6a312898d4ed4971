"""The machine's faults are never results: out of memory, a CUDA error, a full disk or a read-only folder make a run
*lost* (nothing stored, still pending, retried), never *failed*; anything else is a bug and propagates."""
import errno

import pytest
import torch

from labcore.engine import executor, jobs, raypass
from labcore import faults
from labcore.store import runs
from labcore.store.planned import Planned

from .conftest import needs_mnist, synthetic_splits
from .synthetic import use_splits
from .test_runs import _cfg


@pytest.fixture
def store(tmp_path, monkeypatch):
    use_splits(monkeypatch, lambda cfg: synthetic_splits())
    return runs.RunStore(tmp_path)


def _fail_steps(monkeypatch, exc: BaseException, times: int) -> list:
    """Make the optimizer's step raise `exc` the first `times` times (as an OOM at the first step would)."""
    calls, real = [], torch.optim.Adam.step

    def step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return calls


def _train(todo, store):
    progress = jobs.Progress({p.key: 1.0 for p in todo}, 1, headless=True)
    return jobs.train_here([[p] for p in todo], {}, {}, store, "cpu", "disabled", False, progress, None, False)


@pytest.mark.parametrize("exc, resource, fresh", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of device memory", False),
    (MemoryError(), "out of host memory", False),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), "a CUDA error", True),
    (OSError(errno.ENOSPC, "No space left on device", "/store/x"), "no space left on the disk at /store/x", False),
    (OSError(errno.EACCES, "Permission denied", "/store"), "permission denied at /store", False),
])
def test_the_machines_faults_are_classified(exc, resource, fresh):
    assert faults.classify(exc) == (resource, fresh)


@pytest.mark.parametrize("exc", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("a bug"),
                                 OSError(errno.ENOENT, "No such file")])
def test_everything_else_is_not_the_machines_fault(exc):
    assert faults.classify(exc) is None


def test_out_of_memory_is_never_stored_as_failed_and_is_retried_once(store, monkeypatch, capsys):
    cfg = _cfg()
    calls = _fail_steps(monkeypatch, torch.OutOfMemoryError("CUDA out of memory"), times=1)
    out = _train([Planned(cfg)], store)
    assert [r.key for r in out.trained] == [cfg.key()] and out.trained[0].ok and not out.lost
    assert store.state(cfg) == "stored" and len(calls) > 1
    assert "lost to out of device memory; trying it once more" in capsys.readouterr().out


def test_a_run_lost_twice_stays_pending_with_its_reason_and_the_next_pass_trains_it(store, monkeypatch, capsys):
    cfg, other = _cfg(), _cfg(lr=0.5)
    _fail_steps(monkeypatch, torch.OutOfMemoryError("CUDA out of memory"), times=2)
    out = _train([Planned(cfg), Planned(other)], store)
    assert out.lost == [(cfg.label(), "out of device memory: OutOfMemoryError: CUDA out of memory")]
    assert store.state(cfg) == "pending" and not store.path(cfg).exists(), "nothing stored, not even as failed"
    assert store.state(other) == "stored", "the next run trains as usual"
    assert f"run {cfg.label()} not trained (still pending): out of device memory (OutOfMemoryError" in capsys.readouterr().out
    monkeypatch.undo()
    use_splits(monkeypatch, lambda c: synthetic_splits())
    again = _train([Planned(cfg)], store)
    assert again.trained[0].ok and store.state(cfg) == "stored"


def test_after_a_cuda_error_the_pass_stops_and_every_remaining_run_stays_pending(store, monkeypatch):
    first, second = _cfg(), _cfg(lr=0.5)
    _fail_steps(monkeypatch, RuntimeError("CUDA error: device-side assert triggered"), times=1)
    out = _train([Planned(first), Planned(second)], store)
    assert [label for label, _ in out.lost] == [first.label(), second.label()] and not out.trained
    assert store.state(first) == store.state(second) == "pending"


def test_a_non_finite_loss_belongs_to_the_config_and_is_stored_as_failed(store):
    cfg = _cfg(lr=1e30)
    out = _train([Planned(cfg)], store)
    assert store.state(cfg) == "failed" and out.failed and "RunFailed" in out.failed[0].error


def test_any_other_error_is_a_bug_and_propagates(store, monkeypatch):
    _fail_steps(monkeypatch, ValueError("a bug in labcore"), times=5)
    with pytest.raises(ValueError, match="a bug in labcore"):
        _train([Planned(_cfg())], store)
    assert store.state(_cfg()) == "pending"


def test_a_full_disk_leaves_nothing_half_written_in_the_store(store, monkeypatch):
    cfg = _cfg()
    trained = runs.train_run(cfg, device="cpu", tracking="disabled", checkpoints=(0, 1))
    real_save = torch.save

    def save(obj, path, *args, **kwargs):
        if "checkpoints" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(faults.RunLost, match="no space left on the disk at"):
        store.put_or_lose(trained)
    assert not any(store.root.iterdir()), "no temporary folder and no partial run left behind"


def test_a_disk_that_fills_inside_torchs_serializer_is_named_like_any_full_disk(store, monkeypatch):
    """torch.save raises a RuntimeError (its C++ stream failed), not an OSError: the store names the folder and the
    space the weights need; with room to spare the same error is left as it is."""
    import shutil
    from collections import namedtuple

    trained = runs.train_run(_cfg(), device="cpu", tracking="disabled")

    def save(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:671] . PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", save)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1024))
    with pytest.raises(faults.RunLost, match=rf"no space left on the disk at {store.root}.*the weights need 0.0 MiB"):
        store.put_or_lose(trained)
    assert not any(p for p in store.root.iterdir() if not p.name.startswith(".locks"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 10**12))
    with pytest.raises(RuntimeError, match="inline_container"):
        store.put_or_lose(trained)


def test_a_full_disk_is_one_line_naming_the_path():
    line = faults.one_line(OSError(errno.ENOSPC, "No space left on device", "/runs/v2/abc"))
    assert line.startswith("error: no space left on the disk at /runs/v2/abc; free space there") and "\n" not in line
    assert faults.one_line(OSError(errno.ENOENT, "gone")) is None


def test_every_run_records_its_numeric_settings(store):
    result = runs.run(_cfg(), store, device="cpu", tracking="disabled")
    assert result.numerics == {"device": "cpu", "precision": "fp32", "threads": torch.get_num_threads(),
                               "torch": torch.__version__,
                               "deterministic": False,
                               "cudnn_benchmark": False, "tf32_matmul": False, "tf32_cudnn": False,
                               "flush_denormal": True}
    assert store.get(_cfg()).numerics == result.numerics, "stored with the run"
    det = runs.train_run(_cfg(lr=0.02), device="cpu", tracking="disabled", deterministic=True).result
    assert det.numerics["deterministic"] is True
    runs.train_run(_cfg(lr=0.03), device="cpu", tracking="disabled")
    assert not torch.are_deterministic_algorithms_enabled(), "each run sets its own settings"


def test_a_ray_task_without_a_gpu_trains_on_the_cpu_even_where_cuda_exists():
    assert raypass.task_device([]) == "cpu" and raypass.task_device(["0"]) == "cuda"


@needs_mnist
def test_make_train_with_an_injected_oom_keeps_the_run_pending(tmp_path, monkeypatch):
    """The issue's measurement: an OOM at the first optimizer step of `make train PROFILE=smoke ONLY=01_mlp_baseline`
    once stored that run as failed, and a second `make train` did not retrain it."""
    from labcore.engine import plan

    store, built = runs.RunStore(tmp_path), plan.build_plan("smoke", ["01_mlp_baseline"])
    plan.describe(built, store=store)  # the calibration's steps first: the fault is in training
    _fail_steps(monkeypatch, torch.OutOfMemoryError("CUDA out of memory"), times=2)
    out = executor.train(built, executor="local", tracking="disabled", store=store, headless=True)
    assert len(out.lost) == 1 and not out.failed
    monkeypatch.undo()
    again = executor.train(built, executor="local", tracking="disabled", store=store, headless=True)
    assert len(again.trained) == 1 and again.trained[0].ok and not again.lost


def test_fused_seeds_lost_to_memory_train_again_each_alone(store, monkeypatch, capsys):
    """A fused job the machine stops is retried as its runs, each alone; none is stored as failed."""
    cfgs = [_cfg().replace(seed=s) for s in (0, 1, 2)]
    todo = [Planned(c) for c in cfgs]
    calls = _fail_steps(monkeypatch, torch.OutOfMemoryError("CUDA out of memory"), times=1)
    fused_jobs = jobs.group_jobs(todo, torch.device("cpu"), fuse="on")
    assert [len(j) for j in fused_jobs] == [3]
    progress = jobs.Progress({p.key: 1.0 for p in todo}, 1, headless=True, jobs=fused_jobs)
    out = jobs.train_here(fused_jobs, {}, {}, store, "cpu", "disabled", False, progress, None, False)
    assert len(calls) > 1 and not out.lost and not out.failed and len(out.trained) == 3
    assert "and 2 more seeds, fused lost to out of device memory; trying its runs alone" in capsys.readouterr().out
    assert all(store.get(c).ok and not store.get(c).fused for c in cfgs), "each trained alone in the end"


@pytest.mark.parametrize("limit", [0, 1, 2])
def test_one_retry_policy_tries_each_lost_run_alone_up_to_its_limit(limit, capsys):
    """jobs.Retries is the policy of both executors (in this process and on Ray): a fused job comes back as its
    runs alone, a run alone as itself, each until it has been tried `limit` times; then it is spent (lost)."""
    cfgs = [_cfg().replace(seed=s) for s in (0, 1, 2)]
    todo = [Planned(c) for c in cfgs]
    progress = jobs.Progress({p.key: 1.0 for p in todo}, 1, headless=True, jobs=[todo])
    retries = jobs.Retries({p.key: 2.0 for p in todo}, progress, limit=limit)
    again, spent = retries.again(todo, "out of device memory")
    assert (again, spent) == (([[p] for p in todo], []) if limit else ([], todo))
    for attempt in range(2, limit + 2):  # each run alone, lost again and again
        again, spent = retries.again([todo[0]], "out of device memory")
        assert (again, spent) == (([[todo[0]]], []) if attempt <= limit else ([], [todo[0]])), attempt
    said = capsys.readouterr().out
    assert ("fused lost to out of device memory; trying its runs alone" in said) == (limit > 0)
    assert said.count("trying it once more") == max(0, limit - 1)
    if limit:
        assert progress.eta() == 6.0, "retried runs each take their own slot, with their estimate alone"


def test_fused_seeds_are_stored_each_under_its_own_key(store):
    cfgs = [_cfg().replace(seed=s) for s in (0, 1)]
    todo = [Planned(c) for c in cfgs] + [Planned(_cfg(lr=0.5))]
    grouped = jobs.group_jobs(todo, torch.device("cpu"), fuse="on")
    assert [len(j) for j in grouped] == [2, 1], "only runs that differ in their seed alone are fused"
    assert [len(j) for j in jobs.group_jobs(todo, torch.device("cpu"), fuse="off")] == [1, 1, 1]
    assert jobs.Progress({p.key: 1.0 for p in todo}, 3, headless=True, jobs=grouped).eta() == 2.0, \
        "a fused job takes one slot: its members' shares add up"
    progress = jobs.Progress({p.key: 1.0 for p in todo}, 1, headless=True, jobs=grouped)
    out = jobs.train_here(grouped, {}, {}, store, "cpu", "disabled", False, progress, None, False)
    assert len(out.trained) == 3 and [list(store.get(c).fused) for c in cfgs] == [[0, 1], [0, 1]]
    assert all(store.get(r.config).wall_seconds >= r.seconds > 0 for r in out.trained), \
        "each run's share of its job's wall time is stored beside its training time"


def test_two_runs_that_share_a_label_read_apart_in_the_training_log(capsys):
    """01's run and its long run are both mlp-d2-w16-plain-s0: the log names what else differs, as runs.html does."""
    from labcore.core.config import RunConfig
    from labcore.store.planned import Planned
    from labcore.store.runs import RunResult

    short = RunConfig.build(train={"epochs": 2})
    long = short.replace(train={"epochs": 3})
    other = short.replace(seed=1)
    assert jobs.distinct_labels([short, long, other]) == {
        short.key(): "mlp-d2-w16-plain-s0 (train.epochs 2)", long.key(): "mlp-d2-w16-plain-s0 (train.epochs 3)",
        other.key(): "mlp-d2-w16-plain-s1"}
    todo = [Planned(c) for c in (short, long)]
    progress = jobs.Progress({p.key: 1.0 for p in todo}, 1, headless=True, jobs=[[p] for p in todo])
    row = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5}
    for c in (short, long):
        progress.finished(RunResult(c, [row], {}, 1, 1.0, "cpu", "x"), "this process")
    out = capsys.readouterr().out
    assert "ok: mlp-d2-w16-plain-s0 (train.epochs 2) in" in out and "ok: mlp-d2-w16-plain-s0 (train.epochs 3) in" in out
