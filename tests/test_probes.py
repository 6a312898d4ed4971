"""Gradient probes: they match autograd, leave no hooks, and change nothing in the model."""
import pandas as pd
import pytest

import torch
from torch import nn

from labcore.core import probes
from labcore.core.config import ModelConfig
from labcore.core.models import build_model

from .conftest import synthetic_splits

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _setup(family="convnet", depth=1, norm="batch", residual=False, device="cpu"):
    torch.manual_seed(0)
    toy = synthetic_splits(n=256, shape=(3, 16, 16))
    model = build_model(ModelConfig(family=family, depth=depth, width=4, norm=norm, residual=residual), toy.input_shape, 4)
    return model.to(device), probes.probe_batches(toy, n_batches=3, batch_size=32)


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_norms_match_plain_backward(device):
    model, batches = _setup(device=device)
    df = probes.gradient_norms(model, batches)
    assert len(df) == 3 * len(list(model.parameters()))
    for b, (x, y) in enumerate(batches):
        reference = _setup(device=device)[0]  # a fresh copy: same seed, same weights
        reference.train()
        reference.zero_grad()
        nn.functional.cross_entropy(reference(x.to(device)), y.to(device)).backward()
        for name, p in reference.named_parameters():
            row = df[(df.param == name) & (df.batch == b)].iloc[0]
            assert row.norm == pytest.approx(p.grad.norm().item(), rel=1e-5)
            assert row.max_abs == pytest.approx(p.grad.abs().max().item(), rel=1e-5)


def test_probing_changes_nothing_and_leaves_no_hooks():
    model, batches = _setup()
    model.eval()
    sentinel = {n: torch.full_like(p, 7.0) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = sentinel[n].clone()  # a pending gradient must survive the probe untouched
    before = {k: v.clone() for k, v in model.state_dict().items()}  # weights and BN running statistics
    probes.gradient_norms(model, batches)
    probes.first_conv_gradient(model, batches)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "parameters and buffers unchanged"
    assert all(torch.equal(p.grad, sentinel[n]) for n, p in model.named_parameters()), "no gradient written"
    assert not model.training, "mode restored"
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks, "hooks removed"


def test_hooks_are_removed_even_when_the_forward_pass_fails():
    model, _ = _setup()
    with pytest.raises(RuntimeError):
        probes.layer_order(model, torch.zeros(2, 5, 16, 16))  # wrong channel count
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_order_follows_the_forward_pass_not_registration():
    model, batches = _setup(depth=1)
    order = probes.layer_order(model, batches[0][0])
    # ConvNet registers all transitions before all stages; the forward pass interleaves them.
    assert order.index("transitions.0.0") < order.index("stages.0.0.conv") < order.index("transitions.1.0")
    assert order[-1] == "head.1"


def test_first_conv_gradient_is_the_mean_autograd_gradient():
    model, batches = _setup(norm="none")
    grad = probes.first_conv_gradient(model, batches)
    w = model.transitions[0][0].weight
    expected = sum(torch.autograd.grad(nn.functional.cross_entropy(model(x), y), [w])[0] for x, y in batches) / 3
    assert grad.shape == w.shape and torch.allclose(grad, expected, atol=1e-7)


def test_layer_norms_and_flow_aggregate_the_tidy_table():
    model, batches = _setup(norm="none")
    df = probes.gradient_norms(model, batches)
    layers = probes.layer_norms(df)
    conv = df[(df.layer == "transitions.0.0") & (df.batch == 0)]
    expected = (conv.norm ** 2).sum() ** 0.5
    assert layers[(layers.layer == "transitions.0.0") & (layers.batch == 0)].norm.iloc[0] == pytest.approx(expected)
    fl = probes.flow(df)
    assert list(fl.depth) == sorted(fl.depth) and (fl.max_abs >= fl.mean_abs).all()
    s = probes.summary(df)
    assert s["batches"] == 3 and s["parameters"] == len(list(model.parameters())) and s["std"] > 0


@pytest.mark.parametrize("family, depth, extra", [("mlp", 2, {}), ("lab_cnn", 2, {}), ("lab_resnet", 1, {"residual": True}),
                                                 ("vgg", 11, {"norm": "batch"}), ("resnet", 18, {"norm": "batch"}),
                                                 ("cifar_resnet", 8, {"norm": "batch", "residual": True}),
                                                 ("fullyconv", 1, {})])
def test_probes_work_on_every_family(family, depth, extra):
    torch.manual_seed(0)
    toy = synthetic_splits(n=64, shape=(3, 32, 32))
    model = build_model(ModelConfig(family=family, depth=depth, width=4, **extra), toy.input_shape, 4)
    df = probes.gradient_norms(model, probes.probe_batches(toy, n_batches=1, batch_size=8))
    assert df.norm.notna().all() and (df.depth >= 0).all()
    assert df.depth.max() == len(probes.layer_order(model, toy.x_train[:2].float())) - 1


def test_layer_norms_keep_seeds_and_epochs_apart():
    model, batches = _setup(norm="none")
    one = probes.gradient_norms(model, batches[:1])
    both = pd.concat([one.assign(seed=0, epoch=0), one.assign(seed=1, epoch=0), one.assign(seed=0, epoch=1)])
    layers = probes.layer_norms(both)
    assert len(layers) == 3 * len(probes.layer_norms(one))  # not summed across seeds or epochs
    assert probes.attenuation_by_epoch(layers) == pytest.approx({0: probes.attenuation(probes.layer_norms(one)),
                                                                1: probes.attenuation(probes.layer_norms(one))})


def test_before_after_probes_the_initial_and_the_trained_weights(tmp_path, monkeypatch):
    from labcore.store import runs
    from labcore.core.config import RunConfig
    from labcore.core.probes import before_after, probe_batches

    from .synthetic import synthetic_splits, use_splits

    toy = synthetic_splits(n=256, shape=(1, 28, 28), classes=10)  # MNIST's shape: load_model builds for it
    use_splits(monkeypatch, lambda cfg: toy)
    store = runs.RunStore(tmp_path)
    cfg = RunConfig.build(model={"family": "mlp", "width": 8, "depth": 2}, train={"epochs": 1, "lr": 1e-2})
    runs.run(cfg, store, device="cpu", tracking="disabled", checkpoints=(0,))
    batches = probe_batches(toy, 2, 32)
    table = before_after(store, cfg, batches)
    assert set(table.state) == {"initialisation", "after training"}
    assert table.position.min() == 0 and table.position.max() == 1
    at_init = table[table.state == "initialisation"].sort_values(["depth", "batch"]).norm.to_numpy()
    from labcore.core.probes import gradient_norms, layer_norms
    ckpt = layer_norms(gradient_norms(store.load_model(cfg, epoch=0), batches)).sort_values(["depth", "batch"])
    assert abs(at_init - ckpt.norm.to_numpy()).max() < 1e-6, "init is rebuilt exactly from config and seed"
