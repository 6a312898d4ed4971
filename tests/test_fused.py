"""Fused seeds (labcore.engine.fused): members trained as one batched model agree with runs trained alone, for every
family; a member that fails fails alone; each member is stored as its own run. Synthetic data, CPU (and CUDA in
`make gpu-check`, through LABCORE_TEST_DEVICE)."""
import dataclasses
import os

import pytest

from labcore.core.train import init_model
import torch

from labcore.engine import fused, jobs
from labcore.store import runs
from labcore.core.config import FAMILIES, ModelConfig, RunConfig, TrainConfig
from labcore.core.models import build_model
from labcore.core.train import fit, fit_members
from labcore.store.training import train_runs

from .synthetic import synthetic_splits, use_splits

DEVICE = torch.device(os.environ.get("LABCORE_TEST_DEVICE") or "cpu")
pytestmark = pytest.mark.gpu  # `make gpu-check` runs these on CUDA too
# Every family at its smallest sensible size, with batch norm where the family has it, and SGD for one of them:
# both optimizers and BatchNorm's per-member statistics are what fusing must keep apart.
SIZES = {"mlp": (2, 16), "convnet": (2, 8), "fullyconv": (2, 8), "lab_cnn": (1, 8), "lab_resnet": (2, 8),
         "vgg": (11, 8), "resnet": (18, 8), "cifar_resnet": (8, 8)}
# The stated tolerance, after two epochs. The first step's loss agrees to 1e-6 in every family; after that, the
# same arithmetic grouped differently moves the last float bits, max pooling breaks ties among equal (zero)
# activations differently, and Adam turns the float noise of a zero gradient (a bias before BatchNorm) into a full
# step: measured here, at most 1.8 % in the training loss (convnet), where a 1e-7 change of the initial weights
# alone moves it 0.5-0.9 %. The learning is the same; the last digits are not, as between two GPUs.
LOSS_RTOL, ACC_ATOL, WEIGHTS_RTOL = 0.03, 0.05, 0.05


def _models(family: str, seeds: list[int], shape: tuple[int, int, int]) -> tuple[ModelConfig, list[torch.nn.Module]]:
    depth, width = SIZES[family]
    norm = "batch" if family not in ("mlp", "lab_cnn", "lab_resnet") else "none"  # the lab's CNNs have no norm layers
    cfg = ModelConfig(family, depth, width, residual=family in ("lab_resnet",), norm=norm)
    out = []
    for s in seeds:
        torch.manual_seed(s)  # as runs.init_model: the member's own seed, then its weights
        out.append(build_model(cfg, shape, 4).to(DEVICE))
    return cfg, out


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_members_agree_with_runs_trained_alone(family):
    assert set(SIZES) == set(FAMILIES), "every family is tested"
    shape = (1, 28, 28) if family == "mlp" else (3, 32, 32)
    splits = synthetic_splits(n=256, shape=shape).to(DEVICE)
    train = TrainConfig(epochs=2, batch_size=48, lr=3e-4, augment=family != "mlp",
                        optimizer="sgd" if family == "vgg" else "adam", weight_decay=1e-4)
    seeds = [0, 1, 2]
    _, alone_models = _models(family, seeds, shape)
    alone = [fit(m, splits, train, s, progress=False) for m, s in zip(alone_models, seeds)]
    _, members = _models(family, seeds, shape)
    together, failed = fit_members(members, splits, train, seeds, progress=False)
    assert not failed
    one_batch, one_step = synthetic_splits(n=48, shape=shape).to(DEVICE), dataclasses.replace(train, epochs=1)
    first = fit_members(_models(family, [0, 1], shape)[1], one_batch, one_step, [0, 1], progress=False)[0][0][0]
    first_alone = fit(_models(family, [0], shape)[1][0], one_batch, one_step, 0, progress=False)[0]
    assert first["train_loss"] == pytest.approx(first_alone["train_loss"], rel=1e-5), "one step: the same loss"
    for a, t in zip(alone, together):
        for ra, rt in zip(a, t):
            assert rt["train_loss"] == pytest.approx(ra["train_loss"], rel=LOSS_RTOL)
            assert rt["val_loss"] == pytest.approx(ra["val_loss"], rel=LOSS_RTOL)
            assert abs(rt["val_acc"] - ra["val_acc"]) <= ACC_ATOL and abs(rt["train_acc"] - ra["train_acc"]) <= ACC_ATOL
    # Each member's own weights were written back into its module, close to its twin trained alone (relative L2
    # over the whole model), and they are not one another's.
    def vec(params) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in params])  # reshape: `fit` made convolutions channels-last

    for m, a in zip(members, alone_models):
        assert (vec(m.parameters()) - vec(a.parameters())).norm() <= WEIGHTS_RTOL * vec(a.parameters()).norm(), family
    assert not torch.equal(vec(members[0].parameters()), vec(members[1].parameters()))


def test_a_member_whose_loss_explodes_fails_alone():
    shape = (1, 28, 28)
    splits = synthetic_splits(n=256, shape=shape)
    _, members = _models("mlp", [0, 1], shape)
    with torch.no_grad():
        next(members[1].parameters()).fill_(float("nan"))  # member 1 is broken from the start
    alone_model = _models("mlp", [0], shape)[1][0]
    train = TrainConfig(epochs=2, batch_size=48, lr=1e-3)
    alone = fit(alone_model, splits, train, 0, progress=False)
    histories, failed = fit_members(members, splits, train, [0, 1], progress=False)
    assert list(failed) == [1] and "non" not in failed[1] and "nan in epoch 1" in failed[1]
    assert len(histories[1]) == 1, "its history stops at the epoch that failed, as alone"
    assert len(histories[0]) == 2 and histories[0][-1]["train_loss"] == pytest.approx(alone[-1]["train_loss"], rel=LOSS_RTOL)


def test_fused_runs_are_stored_as_separate_runs_that_say_so(tmp_path, monkeypatch):
    use_splits(monkeypatch, lambda cfg: synthetic_splits(n=256, shape=(1, 28, 28)))
    cfgs = [RunConfig.build({"name": "mnist"}, {"family": "mlp", "depth": 1, "width": 8}, {"epochs": 2}, seed=s)
            for s in (0, 1, 2)]
    assert len({fused.group_key(c) for c in cfgs}) == 1 and len({c.key() for c in cfgs}) == 3
    store = runs.RunStore(tmp_path)
    trained = train_runs(cfgs, "cpu", "disabled", checkpoints=[(0, 1), (), ()], estimate_seconds=1.0)
    for t in trained:
        store.put_or_lose(t)
    for i, c in enumerate(cfgs):
        r = store.get(c)
        assert r.ok and list(r.fused) == [0, 1, 2] and r.config.seed == c.seed and len(r.history) == 2
    assert store.checkpoint_epochs(cfgs[0]) == {0, 1} and store.checkpoint_epochs(cfgs[1]) == set()
    # The epoch-0 checkpoint is the member's own initialisation, the one a run alone starts from.
    init = init_model(cfgs[0], "cpu", (1, 28, 28), 4)
    assert all(torch.equal(a, b) for a, b in zip(init.state_dict().values(),
                                                  store.load_model(cfgs[0], (1, 28, 28), 4, epoch=0).state_dict().values()))
    with pytest.raises(AssertionError, match="seed only"):
        train_runs([cfgs[0], cfgs[0].replace(train={"lr": 0.5})], "cpu", "disabled")


def test_where_fusing_pays():
    mlp = RunConfig.build({"name": "mnist"}, {"family": "mlp"}, {})
    cnn = RunConfig.build({"name": "cifar10"}, {"family": "cifar_resnet", "depth": 20}, {})
    assert fused.pays(mlp, torch.device("cpu")) and not fused.pays(cnn, torch.device("cpu"))
    assert fused.pays(cnn, torch.device("cuda"))


def test_on_a_gpu_auto_follows_what_gpu_check_measured_there(tmp_path, monkeypatch):
    """FUSE=auto on a GPU: fused until `make gpu-check` has timed the card, then whatever packed best there."""
    monkeypatch.setenv("LABCORE_CACHE", str(tmp_path))
    monkeypatch.setattr(fused, "device_info", lambda device: "cuda: NVIDIA H100 80GB HBM3")
    gpu = torch.device("cuda")
    cnn = RunConfig.build({"name": "cifar10"}, {"family": "cifar_resnet", "depth": 20}, {})
    planned = [jobs.Planned(cnn.replace(seed=s)) for s in (0, 1, 2)]
    assert fused.measured_packing(gpu) is None and [len(j) for j in jobs.group_jobs(planned, gpu)] == [3]
    path = fused.record_packing(gpu, "fractional", {"resnet56": {}})
    assert path.name == "packing-cuda-NVIDIA-H100-80GB-HBM3.json" and fused.measured_packing(gpu) == "fractional"
    assert [len(j) for j in jobs.group_jobs(planned, gpu)] == [1, 1, 1], "sharing won: each run alone"
    fused.record_packing(gpu, "fused", {})
    assert [len(j) for j in jobs.group_jobs(planned, gpu)] == [3]
    assert [len(j) for j in jobs.group_jobs(planned, torch.device("cpu"))] == [1, 1, 1], "the CPU keeps its table"


def test_each_fused_member_is_its_own_offline_wandb_run(tmp_path, monkeypatch):
    """W&B finishes an open run when a new one starts, unless told otherwise: fused members' runs are all open at
    once, each logs its own epochs and per-step losses, and each is finished."""
    pytest.importorskip("wandb", reason="the GPU check's machine has no wandb")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    use_splits(monkeypatch, lambda cfg: synthetic_splits(n=256, shape=(1, 28, 28)))
    cfgs = [RunConfig.build({"name": "mnist"}, {"family": "mlp", "depth": 1, "width": 8}, {"epochs": 2}, seed=s)
            for s in (0, 1)]
    trained = train_runs(cfgs, "cpu", "offline", groups=["01_mlp_baseline/runs", "04_gradient_flow/mlp"])
    assert all(t.result.ok for t in trained)
    assert len(list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))) == 2
