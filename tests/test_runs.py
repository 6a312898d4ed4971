"""The run store: results are stored under the config's key and reused instead of retrained."""
from pathlib import Path

import pytest

from labcore import cli
from labcore.core.train import init_model
import torch

from labcore.analysis import claims
from labcore.store import runs
from labcore.store import training
from labcore.core.config import RunConfig
from labcore.store.planned import Planned

from .conftest import synthetic_splits
from .synthetic import use_splits


@pytest.fixture
def store(tmp_path, monkeypatch):
    use_splits(monkeypatch, lambda cfg: synthetic_splits())
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
        runs.fetch([Planned(base), Planned(base.replace(seed=1))], store, device="cpu", tracking="disabled")
    finally:
        runs.train_run = real
    assert trained == [base.replace(seed=1).key()]


def test_stored_weights_reload_to_the_same_predictions(store):
    cfg = _cfg()
    trained = runs.train_run(cfg, device="cpu", tracking="disabled")
    store.put(trained.result, trained.model_state)
    toy = synthetic_splits()
    again = store.load_model(cfg, toy.input_shape, len(toy.classes))
    model = init_model(cfg, "cpu", toy.input_shape, len(toy.classes))
    model.load_state_dict(trained.model_state)
    x = torch.randn(3, *toy.input_shape)
    assert torch.allclose(model.eval()(x), again(x))


def test_offline_tracking_writes_locally_and_never_prompts(store, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.delenv("LABCORE_TRACKING", raising=False)
    runs.run(_cfg(), store, device="cpu", tracking="offline")
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*")), "an offline W&B run was written"


def test_checkpoints_are_stored_and_a_run_without_them_is_retrained_identically(store):
    cfg = _cfg()
    plain = runs.run(cfg, store, device="cpu", tracking="disabled")
    assert store.state(cfg, (0, 1)) == "pending", "stored, but without those checkpoints"
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


def test_a_run_whose_loss_becomes_nan_is_stored_as_failed_and_not_retried(store, monkeypatch):
    cfg = _cfg(optimizer="sgd", lr=1e12)  # diverges within the first epoch
    first = runs.run(cfg, store, device="cpu", tracking="disabled")
    assert not first.ok and "training loss became nan" in first.error and store.state(cfg) == "failed"
    assert claims.failures([first]) == [f"{cfg.label()} ({cfg.key()}): {first.error}"]
    assert first.summary()["status"] == "failed" and first.summary()["test_acc"] != first.summary()["test_acc"]
    calls = []
    real = runs.train_run
    monkeypatch.setattr(runs, "train_run", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = runs.run(cfg, store, device="cpu", tracking="disabled")
    assert again.cached and not again.ok and not calls, "a failed run is not retried on its own"
    runs.run(cfg, store, device="cpu", tracking="disabled", retry_failed=True)
    assert calls == [1], "RETRY_FAILED=1 trains it again"


def test_only_the_configs_own_failure_is_stored_and_a_bug_in_labcore_propagates(store, monkeypatch):
    from labcore.core.train import RunFailed

    def nan_loss(*a, **k):
        raise RunFailed("training loss became nan in epoch 1")

    monkeypatch.setattr(training, "fit_members", nan_loss)
    result = runs.run(_cfg(), store, device="cpu", tracking="disabled")
    assert not result.ok and result.error.startswith("RunFailed: training loss became nan")

    def shape_error(*a, **k):  # models are built on the meta device before anything trains: this would be a bug
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (128x64 and 32x10)")

    monkeypatch.setattr(training, "fit_members", shape_error)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        runs.run(_cfg(lr=0.3), store, device="cpu", tracking="disabled")
    assert store.state(_cfg(lr=0.3)) == "pending"

    def bug(*a, **k):
        raise KeyError("val_acc")

    monkeypatch.setattr(training, "fit_members", bug)
    with pytest.raises(KeyError):
        runs.run(_cfg(lr=0.5), store, device="cpu", tracking="disabled")
    assert store.state(_cfg(lr=0.5)) == "pending", "nothing half-written enters the store"


@pytest.mark.parametrize("damage, why", [
    (lambda folder: (folder / "result.json").write_text('{"history": [{"epoch": 1, "trai'), "result.json unreadable"),
    (lambda folder: (folder / "model.pt").unlink(), "model.pt is missing"),
    (lambda folder: (folder / "checkpoints" / "epoch_1.pt").write_bytes(b""), "checkpoints/epoch_1.pt is missing or empty"),
])
def test_a_damaged_record_is_named_and_retrained(store, capsys, damage, why):
    cfg = _cfg()
    runs.run(cfg, store, device="cpu", tracking="disabled", checkpoints=(0, 1))
    damage(store.path(cfg))
    assert store.state(cfg) == "damaged" and why in store.damage(cfg) and store.get(cfg) is None
    again = runs.run(cfg, store, device="cpu", tracking="disabled", checkpoints=(1,))
    assert not again.cached and again.ok and store.state(cfg, (0, 1)) == "stored"
    assert f"{cfg.label()} ({cfg.key()}) is damaged ({why}" in capsys.readouterr().out
    assert not [p for p in store.root.iterdir() if p.name.startswith(f".{cfg.key()}")], "no temporary folders left"


def test_a_second_process_asking_for_a_run_in_training_waits_and_reuses_it(store, tmp_path):
    """Two trainings of the same store at once: the second waits for the run's lock, then loads the run."""
    import subprocess
    import sys
    import textwrap

    cfg = _cfg()
    with store.lock(cfg):
        script = textwrap.dedent(f"""
            from labcore.analysis import claims
            from labcore.store import runs
            from labcore.core.config import RunConfig
            from tests.synthetic import synthetic_splits  # not conftest: importing it makes a temporary folder
            from labcore.store import training
            training.load_splits = lambda cfg: synthetic_splits()
            training.data_content = lambda name: "synthetic"
            runs.train_run = lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained"))
            cfg = RunConfig.build(model={{"family": "mlp", "width": 8, "depth": 1}}, train={{"epochs": 2, "lr": 1e-2}})
            print("cached" if runs.run(cfg, runs.RunStore({str(tmp_path)!r}), device="cpu", tracking="disabled").cached else "?")
        """)
        waiter = subprocess.Popen([sys.executable, "-c", script], cwd=str(Path(__file__).parent.parent),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = waiter.stdout.readline()  # blocks until the second process is waiting for the lock
        assert "waiting: another process is training" in first, first + waiter.stderr.read()[-1000:]
        trained = runs.train_run(cfg, device="cpu", tracking="disabled")
        store.put(trained.result, trained.model_state)
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0 and out.strip() == "cached", err[-1000:]


def test_failure_note_names_each_failed_run_and_counts_against_all():
    cfg = _cfg()
    ok = runs.RunResult(cfg, [], {"accuracy": 0.5}, 1, 1.0, "cpu", "toy")
    bad = runs.RunResult(cfg.replace(seed=1), [], {}, 1, 1.0, "cpu", "toy", status="failed", error="RunFailed: nan")
    assert claims.failure_note([]) == "Failed runs: none of 0."
    assert claims.failure_note([ok, ok]) == "Failed runs: none of 2."
    note = claims.failure_note([ok, bad, ok])
    assert note.startswith("**Failed runs: 1 of 3**") and f"{bad.config.label()} ({bad.key}): RunFailed: nan" in note


def test_failed_runs_are_left_out_of_the_per_depth_curves_and_make_the_table_mean_nan(monkeypatch):
    from labcore.analysis import plots, sweep

    use_splits(monkeypatch, lambda data: synthetic_splits())
    cfg = _cfg()
    row = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5}
    ok = runs.RunResult(cfg, [row, {**row, "epoch": 2}], {"accuracy": 0.5}, 1, 1.0, "cpu", "toy")
    bad = runs.RunResult(cfg.replace(seed=1), [], {}, 1, 1.0, "cpu", "toy", status="failed", error="x")
    assert plots.curves_by([ok, bad], lambda c: c.model.depth) == {1: [ok.history]}
    agg = sweep.aggregate(sweep.table({"mlp": [ok, bad]}))
    assert agg.loc[0, "seeds"] == 2 and agg.loc[0, "test_acc_mean"] != agg.loc[0, "test_acc_mean"], "NaN, not 0.5"


def test_wandb_writes_only_inside_the_project(tmp_path):
    """A fresh process with an empty HOME: every W&B file lands under WANDB_DIR, none in ~/.cache or ~/.config; the
    process's environment is as it was once the runs are finished, fused seeds' runs (open together) too."""
    import os
    import subprocess
    import sys

    home, wb = tmp_path / "home", tmp_path / "project" / ".cache" / "wandb"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "XDG_"))}
    env.update(HOME=str(home), WANDB_DIR=str(wb), LABCORE_TRACKING="offline")
    code = ("import os\nfrom labcore.store.tracking import Tracker\nbefore = dict(os.environ)\n"
            "t = Tracker('offline', 'mlp-d1-w8-plain-s0-12345678', {'a': 1}, group='01_x/runs', tags=('smoke',))\n"
            "t.log({'loss': 1.0}); t.finish({'acc': 0.5})\n"
            "seeds = [Tracker('offline', f'mlp-s{i}', {}, alongside=True) for i in range(2)]  # fused seeds\n"
            "for s in seeds: s.finish()  # in the order opened: the first one opened set W&B's settings\n"
            "after = {k: v for k, v in os.environ.items() if k != 'WANDB_SERVICE'}  # W&B's own, to reuse its service\n"
            "assert after == before, 'the run left W&B settings in the environment'\n")
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300, cwd=tmp_path)
    assert len(list((wb / "wandb").glob("offline-run-*"))) == 6, "the offline runs are in the project"
    outside = [p for p in home.rglob("*") if "wandb" in str(p.relative_to(home))]
    assert not outside, f"W&B wrote outside the project: {outside[:3]}"
    # README's line, as written, from the project root: every run, once each (not the latest-run link again).
    wandb_cli = str(Path(sys.executable).parent / "wandb")
    sync = subprocess.run(f"{wandb_cli} sync --dry-run .cache/wandb/wandb/offline-run-*", shell=True, env=env,
                          cwd=tmp_path / "project", capture_output=True, text=True, timeout=120)
    assert "Would sync 6 run(s)" in sync.stdout + sync.stderr and "latest-run" not in sync.stdout + sync.stderr
    assert "wandb sync .cache/wandb/wandb/offline-run-*" in (Path(__file__).parent.parent / "README.md").read_text()


def test_wandb_run_names_find_the_run_and_groups_name_notebook_and_study(store, monkeypatch):
    import wandb

    seen = []

    logged, watched = [], []

    class FakeRun:
        summary: dict = {}

        def log(self, row, step=None):
            logged.append((step, row))

        def watch(self, model, log, log_freq):
            watched.append((log, log_freq))

        def finish(self): pass

    monkeypatch.setattr(wandb, "init", lambda **kw: seen.append(kw) or FakeRun())
    a, b = _cfg(batch_size=16), _cfg(batch_size=16, lr=0.5)  # same label, different runs; 32 steps per epoch
    runs.fetch([Planned(a, study="vgg"), Planned(b, study="vgg")], store, device="cpu", tracking="offline",
               notebook="02_cnn_depth", profile="quick", train_missing=True)
    assert a.label() == b.label() and seen[0]["name"] != seen[1]["name"], "names are unique"
    assert seen[0]["name"] == f"{a.label()}-{a.key()[:8]}"
    assert seen[0]["group"] == "02_cnn_depth/vgg" and "quick" in seen[0]["tags"]
    # As the lab used W&B: the per-step training loss, and every layer's gradient and parameter histograms.
    steps = [s for s, row in logged if "batch/train_loss" in row]
    assert steps == [20, 40, 60] * 2, "every 20th of each run's 64 steps"
    epochs = [s for s, row in logged if "val_acc" in row]
    assert epochs == [32, 64] * 2, "each epoch at its last step, on the same axis as the batches"
    assert watched == [("all", 100)] * 2


def test_make_clean_names_offline_runs_never_synced(tmp_path, monkeypatch, capsys):
    from labcore.store import tracking

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    (tmp_path / "wandb" / "offline-run-1-aaa").mkdir(parents=True)
    (tmp_path / "wandb" / "offline-run-2-bbb").mkdir()
    (tmp_path / "wandb" / "offline-run-2-bbb" / "run-bbb.wandb.synced").write_text("")
    assert [p.name for p in tracking.unsynced_runs()] == ["offline-run-1-aaa"]
    assert cli.main(["check-clean"]) == 1
    err = capsys.readouterr().err
    assert "1 W&B offline run never synced (offline-run-1-aaa)" in err and "make clean FORCE=1" in err
    (tmp_path / "wandb" / "offline-run-1-aaa" / "run-aaa.wandb.synced").write_text("")
    assert cli.main(["check-clean"]) == 0


def test_wandb_histograms_are_rarer_for_a_model_on_a_gpu():
    """Each histogram is read back to the host: on a GPU every 1000 steps (under 1 % of the step time), not 100."""
    from labcore.store import tracking

    watched = []
    t = tracking.Tracker("disabled", name="x", config={})
    t.run = type("FakeRun", (), {"watch": lambda self, model, log, log_freq: watched.append(log_freq)})()
    t.watch(torch.nn.Linear(2, 2))
    t.watch(torch.nn.Linear(2, 2, device="meta"))  # stands for a GPU: any device but the CPU
    assert watched == [tracking.WATCH_EVERY, tracking.WATCH_EVERY_GPU] == [100, 1000]


def test_a_class_never_predicted_has_no_precision_and_stays_out_of_the_averages():
    """0 of 0 is no value, not 0.000 (the stored report's zero_division=0); its F1 is 0 (its images were all
    missed) and the averages' precision is taken over the classes that have one."""
    import math

    from sklearn.metrics import classification_report, confusion_matrix

    from labcore.store.result import class_table

    y, pred = [0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 0, 1]  # class 2 never predicted
    test = {"report": classification_report(y, pred, labels=[0, 1, 2], target_names=["a", "b", "c"],
                                            output_dict=True, zero_division=0),
            "confusion": confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()}
    t = class_table(test)
    assert math.isnan(t.loc["c", "precision"]) and t.loc["c", "F1"] == 0.0 and t.loc["c", "recall"] == 0.0
    assert t.loc["a", "precision"] == 0.5 and t.loc["b", "precision"] == 0.5
    assert t.loc["macro avg", "precision"] == 0.5 and t.loc["weighted avg", "precision"] == 0.5
    assert t.loc["accuracy", "F1"] == 0.5 and t.loc["accuracy", "support (images)"] == 6
    from labcore.report import publish

    caption = publish.table(t).caption
    assert "a class never predicted a precision" in caption, "the dash under the table says why it is there"
