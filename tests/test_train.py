"""Training and evaluation: a tiny fit lowers the loss, histories and metrics have what reports need."""
import math

import torch

from labcore.core.config import ModelConfig, TrainConfig
from labcore.core.models import build_model
from labcore.core.train import evaluate, fit, seed_everything

KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}


def _model(toy):
    seed_everything(0)
    return build_model(ModelConfig(family="mlp", width=16, depth=1), toy.input_shape, len(toy.classes))


def test_fit_lowers_the_loss_and_returns_a_full_history(toy):
    model = _model(toy)
    history = fit(model, toy, TrainConfig(epochs=4, lr=1e-2, batch_size=32), seed=0)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert all(set(r) == KEYS for r in history)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["val_acc"] > 0.9


def test_fit_is_reproducible_for_a_seed(toy):
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=32)
    a = fit(_model(toy), toy, cfg, seed=1)
    b = fit(_model(toy), toy, cfg, seed=1)
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]


def test_schedules_and_sgd_run(toy):
    for cfg in (TrainConfig(epochs=2, optimizer="sgd", lr=0.1, schedule="multistep", milestones=(0.5,)),
                TrainConfig(epochs=2, lr=1e-2, schedule="cosine", augment=False, weight_decay=1e-4)):
        history = fit(_model(toy), toy, cfg, seed=0)
        assert history[-1]["lr"] < cfg.lr  # decayed by the end


def test_evaluate_reports_accuracy_loss_per_class_and_confusion(toy):
    model = _model(toy)
    fit(model, toy, TrainConfig(epochs=3, lr=1e-2, batch_size=32), seed=0)
    ev = evaluate(model, toy.x_test, toy.y_test, toy)
    assert 0.9 < ev["accuracy"] <= 1 and math.isfinite(ev["loss"])
    cm = torch.tensor(ev["confusion"])
    assert cm.shape == (4, 4) and cm.sum() == len(toy.y_test)
    assert abs(cm.diag().sum().item() / cm.sum().item() - ev["accuracy"]) < 1e-6
    assert set(toy.classes) <= set(ev["report"]) and "precision" in ev["report_text"]
    assert len(ev["predictions"]) == len(toy.y_test)


def _conv_run(toy3, **train):
    seed_everything(0)
    model = build_model(ModelConfig(family="convnet", width=8, depth=1), toy3.input_shape, len(toy3.classes))
    history = fit(model, toy3, TrainConfig(epochs=2, lr=1e-3, batch_size=32, **train), seed=0)
    return model, history


def test_channels_last_and_bf16_agree_with_fp32_on_a_tiny_run():
    from labcore.core.train import memory_format

    from .conftest import synthetic_splits

    toy3 = synthetic_splits(n=128, shape=(3, 16, 16))
    model, ref = _conv_run(toy3, channels_last=False)
    fast_model, fast = _conv_run(toy3, channels_last=True)
    assert memory_format(fast_model, TrainConfig(channels_last=True)) == torch.channels_last
    assert fast_model.transitions[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert [round(r["train_loss"], 4) for r in fast] == [round(r["train_loss"], 4) for r in ref]
    _, half = _conv_run(toy3, channels_last=False, precision="bf16")
    for a, b in zip(ref, half):  # bf16 keeps ~3 significant digits: the same run, to within 2 %
        assert abs(a["train_loss"] - b["train_loss"]) < 0.02 * a["train_loss"]
        assert abs(a["val_acc"] - b["val_acc"]) <= 0.05


def test_channels_last_is_not_used_for_narrow_convolutions_or_mlps(toy):
    from labcore.core.train import memory_format

    narrow = build_model(ModelConfig(family="resnet", depth=34, width=4), (3, 32, 32))
    assert memory_format(narrow, TrainConfig(channels_last=True)) == torch.contiguous_format
    assert memory_format(_model(toy), TrainConfig(channels_last=True)) == torch.contiguous_format


def test_compiled_training_matches_eager_training(toy):
    """The path `make train` takes for runs estimated longer than 20 minutes (torch.compile)."""
    cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=64)
    eager = fit(_model(toy), toy, cfg, seed=0)
    compiled = fit(_model(toy), toy, cfg, seed=0, compile=True)
    assert abs(eager[0]["train_loss"] - compiled[0]["train_loss"]) < 1e-3 * eager[0]["train_loss"]
    assert eager[0]["val_acc"] == compiled[0]["val_acc"]


def test_progress_bars_only_on_a_terminal_or_in_jupyter(monkeypatch):
    import io
    import sys

    from labcore.machine import show_progress

    monkeypatch.delenv("LABCORE_HEADLESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # redirected to a log file
    assert not show_progress()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert show_progress()
    monkeypatch.setenv("LABCORE_HEADLESS", "1")
    assert not show_progress()


def test_training_steps_never_wait_for_the_device(monkeypatch):
    """Every read of a tensor's value on the host (item, float, tolist, bool) waits for a GPU to finish; labcore's
    code may do it per epoch, never per step: 4 times as many steps make no more of them (W&B's per-step losses
    included). (PyTorch's own CPU Adam reads its step counter; on a GPU labcore uses the fused optimizer, which
    does not.)"""
    import sys

    import torch

    from labcore.store.tracking import Tracker

    from .synthetic import synthetic_splits

    reads = []
    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        real = getattr(torch.Tensor, name)
        def read(self, *a, _real=real, _n=name, **k):
            if "/labcore/" in sys._getframe(1).f_code.co_filename:  # labcore's own reads only
                reads.append(_n)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)

    class FakeRun:
        def log(self, row, step=None):
            pass

    counts = []
    for n in (256, 1024):  # 2 and 8 steps of 128 per epoch
        splits = synthetic_splits(n=n)
        tracker = Tracker("disabled", "x", {})
        tracker.run = FakeRun()  # buffering as a W&B run would
        model = build_model(ModelConfig("mlp", 1, 8), splits.input_shape, len(splits.classes))
        reads.clear()
        fit(model, splits, TrainConfig(epochs=2, lr=1e-2), seed=0, progress=False, step_every=1,
            on_step=tracker.log_step, on_epoch=lambda e, row, m: tracker.log(row, step=e))
        counts.append(len(reads))
    assert counts[0] == counts[1], f"host reads grew with the steps: {counts}"


def test_the_compiled_step_sees_only_full_batches(toy, monkeypatch):
    """A static batch shape: compiled code (and its CUDA graph) is never rebuilt for the epoch's shorter last batch,
    which runs eagerly on the same parameters."""
    seen = []

    def fake_compile(model, mode=None):
        return lambda x: seen.append(len(x)) or model(x)

    monkeypatch.setattr(torch, "compile", fake_compile)
    n = len(toy.y_train)
    assert n % 48, "the toy split must leave a short last batch"
    fit(_model(toy), toy, TrainConfig(epochs=2, lr=1e-2, batch_size=48), seed=0, compile=True)
    assert seen and set(seen) == {48} and len(seen) == 2 * (n // 48)

