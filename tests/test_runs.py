"""The run store: results are stored under the config's key and reused instead of retrained."""
import pytest
import torch

from labcore import runs
from labcore.config import RunConfig

from .conftest import synthetic_splits


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "load_splits", lambda cfg: synthetic_splits())
    return runs.RunStore(tmp_path)


def _cfg(**train):
    return RunConfig.build(model={"family": "mlp", "width": 8, "depth": 1}, train={"epochs": 2, "lr": 1e-2, **train})


def test_a_run_is_trained_once_then_loaded(store, monkeypatch):
    cfg = _cfg()
    first = runs.run(cfg, store, device="cpu", tracking="disabled")
    assert not first.cached and (store.path(cfg) / "model.pt").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run must not be retrained")

    monkeypatch.setattr(runs, "train_run", no_training)
    again = runs.run(cfg, store, device="cpu", tracking="disabled")
    assert again.cached and again.history == first.history and again.test["accuracy"] == first.test["accuracy"]


def test_a_changed_config_retrains_only_what_changed(store):
    base = _cfg()
    runs.run(base, store, device="cpu", tracking="disabled")
    trained = []
    real = runs.train_run

    def spy(cfg, *args, **kwargs):
        trained.append(cfg.key())
        return real(cfg, *args, **kwargs)

    runs.train_run = spy
    try:
        runs.run_many([base, base.replace(seed=1)], store, device="cpu", tracking="disabled")
    finally:
        runs.train_run = real
    assert trained == [base.replace(seed=1).key()]


def test_stored_weights_reload_to_the_same_predictions(store):
    cfg = _cfg()
    result, model, _ = runs.train_run(cfg, device="cpu", tracking="disabled")
    store.put(result, model)
    toy = synthetic_splits()
    again = store.load_model(cfg, toy.input_shape, len(toy.classes))
    x = torch.randn(3, *toy.input_shape)
    model.eval()
    assert torch.allclose(model(x), again(x))


def test_offline_tracking_writes_locally_and_never_prompts(store, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.delenv("LABCORE_TRACKING", raising=False)
    runs.run(_cfg(), store, device="cpu", tracking="offline")
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*")), "an offline W&B run was written"


def test_checkpoints_are_stored_and_a_run_without_them_is_retrained_identically(store):
    cfg = _cfg()
    plain = runs.run(cfg, store, device="cpu", tracking="disabled")
    assert not store.has_checkpoints(cfg, (0, 1))
    with_ckpt = runs.run(cfg, store, device="cpu", tracking="disabled", checkpoints=(0, 1, 2))
    assert not with_ckpt.cached and with_ckpt.history[-1]["val_loss"] == plain.history[-1]["val_loss"]
    assert runs.run(cfg, store, device="cpu", tracking="disabled", checkpoints=(0, 2)).cached
    runs.run(cfg.replace(train={"epochs": 3}), store, device="cpu", tracking="disabled", checkpoints=(3,))
    runs.run(cfg.replace(train={"epochs": 3}), store, device="cpu", tracking="disabled", checkpoints=(1,))
    assert store.checkpoint_epochs(cfg.replace(train={"epochs": 3})) == {1, 3}, "retraining keeps earlier checkpoints"
    toy = synthetic_splits()
    init = store.load_model(cfg, toy.input_shape, len(toy.classes), epoch=0)
    last = store.load_model(cfg, toy.input_shape, len(toy.classes), epoch=2)
    final = store.load_model(cfg, toy.input_shape, len(toy.classes))
    assert all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), final.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(init.state_dict().values(), final.state_dict().values()))
