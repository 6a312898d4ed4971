"""The GPU path's tests: `make gpu-check` runs them on the lent GPU (LABCORE_TEST_DEVICE=cuda); everywhere else they
run on the CPU, so the code they cover is exercised in every CI run. Synthetic data: no dataset needed."""
import os

import pytest
import torch

from labcore.engine import jobs
from labcore.store import runs
from labcore.core.config import ModelConfig, RunConfig, TrainConfig
from labcore.store.planned import Planned
from labcore.machine import configure
from labcore.core.models import build_model
from labcore.core.train import fit, fit_members

from .conftest import settled_environ
from .synthetic import synthetic_splits, use_splits

DEVICE = torch.device(os.environ.get("LABCORE_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
pytestmark = pytest.mark.gpu


def _fit(device: torch.device, **train) -> list[dict]:
    """Two epochs of a small ConvNet on synthetic images, seeded, on `device`."""
    splits = synthetic_splits(shape=(3, 16, 16)).to(device)
    configure(device)
    torch.manual_seed(0)
    model = build_model(ModelConfig("convnet", 1, 8), (3, 16, 16), len(splits.classes)).to(device)
    return fit(model, splits, TrainConfig(epochs=2, lr=1e-2, **train), seed=0, progress=False)


def test_fit_on_the_device_agrees_with_the_cpu():
    here, cpu = _fit(DEVICE), _fit(torch.device("cpu"))
    for a, b in zip(here, cpu):  # TF32 and other kernels move the last digits on a GPU, not the learning
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05)
        assert abs(a["val_acc"] - b["val_acc"]) <= 0.05


def test_bf16_trains():
    history = _fit(DEVICE, precision="bf16")
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.skipif(DEVICE.type != "cuda", reason="compiling on the CPU takes minutes; the GPU check runs it")
def test_compiled_training_with_cuda_graphs_agrees_with_eager():
    splits = synthetic_splits(shape=(3, 16, 16)).to(DEVICE)
    histories = []
    for compile in (False, True):
        torch.manual_seed(0)
        model = build_model(ModelConfig("convnet", 1, 8), (3, 16, 16), len(splits.classes)).to(DEVICE)
        histories.append(fit(model, splits, TrainConfig(epochs=2, lr=1e-2), seed=0, progress=False, compile=compile))
    assert histories[1][-1]["train_loss"] == pytest.approx(histories[0][-1]["train_loss"], rel=0.05)


def test_a_run_out_of_device_memory_is_retried_not_stored_as_failed(tmp_path, monkeypatch):
    use_splits(monkeypatch, lambda cfg: synthetic_splits())
    calls, real = [], torch.optim.Adam.step

    def step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            if DEVICE.type == "cuda":
                torch.empty(2**45, dtype=torch.uint8, device=DEVICE)  # 32 TiB: a real CUDA out-of-memory error
            raise torch.OutOfMemoryError("out of memory (injected)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    cfg = RunConfig.build(model={"family": "mlp", "width": 8, "depth": 1}, train={"epochs": 1, "lr": 1e-2})
    store = runs.RunStore(tmp_path)
    progress = jobs.Progress({cfg.key(): 1.0}, 1, headless=True)
    out = jobs.train_here([[Planned(cfg)]], {}, {}, store, DEVICE.type, "disabled", False, progress, None, False)
    assert out.trained and out.trained[0].ok and not out.lost and store.state(cfg) == "stored"
    assert out.trained[0].numerics["device"] == DEVICE.type


@pytest.mark.slow
def test_gpu_check_runs_here_on_tiny_sizes_and_leaves_the_environment_as_it_was(tmp_path, capsys):
    """`make gpu-check DEVICE=cpu` (its verb, in this process): the very script the GPU machine runs, on tiny sizes,
    so it cannot rot; its children (pytest, the build, the timings) get their environment passed, and this
    process's is unchanged."""
    import json
    import os

    from labcore.cli import main

    from .conftest import HAVE_MNIST, NO_DATA

    if not HAVE_MNIST:
        pytest.skip(NO_DATA)
    before = settled_environ()
    assert main(["gpu-check", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert dict(os.environ) == before, "gpu-check edited its own process's environment"
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"gpu-check: wrote {tmp_path / 'gpu-check.json'}"
    result = json.loads((tmp_path / "gpu-check.json").read_text())
    assert result["device"] == "cpu" and result["tests"]["failed"] == 0 and result["tests"]["passed"] >= 3
    assert result["notebooks"] == {"01_mlp_baseline": "ok"}
    assert result["full_estimate_s"]["one_at_a_time"] > 0 and result["full_estimate_s"]["packed"] > 0
    resnet = result["timing"]["resnet8"]
    assert resnet["alone_s_per_step"] > 0 and resnet["fused_s_per_step"] > 0 and resnet["shared_s_per_step"] > 0
    assert set(resnet["throughput_gain"]) == {"fused", "fractional"} and (tmp_path / "gpu-check.log").is_file()
    assert result["estimate"]["fused_runs"] > 0 and result["estimate"]["fused_s"] > 0, "the MLP's seeds fuse on a CPU"


def test_a_fractional_gpu_caps_the_process_memory_and_a_whole_one_does_not(monkeypatch):
    from labcore import machine

    capped = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: capped.append((f, d)))
    assert machine.share_gpu(0.25) == 0.25 and capped == [(0.25, 0)]
    assert machine.share_gpu(1.0) is None and machine.share_gpu(0.0) is None and len(capped) == 1


def _host_reads(train_one_epoch) -> int:
    """How many times a tensor's value was read back to the host (what .item(), float() and .tolist() do, and what
    makes the host wait for a GPU), counted in the profiler's trace of one epoch on the CPU."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_one_epoch()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_no_host_sync_in_the_training_step(optimizer):
    """The step never reads a value back: the host reads per epoch (the epoch's sums, validation), never per step,
    so an epoch of 4x as many steps reads exactly as often; the same for fused seeds (labcore.engine.fused). With Adam
    only on a GPU: on the CPU PyTorch's Adam reads its step count per parameter (labcore's GPU path uses the
    fused CUDA Adam, which keeps it on the device)."""

    if optimizer == "adam" and DEVICE.type == "cpu":
        pytest.skip("on the CPU, PyTorch's Adam reads its step count back (fused or not); `make gpu-check` runs this")
    images = synthetic_splits(n=512, shape=(3, 16, 16)).to(DEVICE)
    configure(DEVICE)

    def epoch(batch_size: int, together: bool) -> int:
        cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=batch_size, augment=True, optimizer=optimizer)
        make = lambda: build_model(ModelConfig("convnet", 1, 8, norm="batch"), (3, 16, 16), len(images.classes)).to(DEVICE)  # noqa: E731
        if together:
            return _host_reads(lambda: fit_members([make(), make()], images, cfg, [0, 1], progress=False,
                                                       on_step=lambda step, loss: None, step_every=1))
        return _host_reads(lambda: fit(make(), images, cfg, 0, progress=False, on_step=lambda step, loss: None,
                                       step_every=1))

    for together in (False, True):
        few, many = epoch(128, together), epoch(32, together)  # 4 and 16 steps
        assert few == many, f"{'fused: ' if together else ''}{many - few} more host reads for 12 more steps"
