"""Models: output shapes, parameter counts, and residual = identity + the same block."""
import pytest
import torch

from labcore.core.config import ConfigError, ModelConfig
from labcore.core.models import MLP, build_model, count_parameters


@pytest.mark.parametrize("depth", [0, 2, 5])
def test_mlp_shape_and_the_labs_parameter_count(depth):
    model = build_model(ModelConfig(family="mlp", width=16, depth=depth), (1, 28, 28), 10)
    assert model(torch.zeros(7, 1, 28, 28)).shape == (7, 10)
    # 784->16, depth x 16->16, 16->10, all with biases (lab-reference.md, exercise 1.1).
    assert count_parameters(model) == (784 * 16 + 16) + depth * (16 * 16 + 16) + (16 * 10 + 10)


def test_mlp_plain_and_residual_have_the_same_parameters():
    plain = build_model(ModelConfig(family="mlp", depth=4, width=32), (3, 32, 32))
    res = build_model(ModelConfig(family="mlp", depth=4, width=32, residual=True), (3, 32, 32))
    assert count_parameters(plain) == count_parameters(res)


def test_mlp_residual_is_identity_plus_the_block():
    torch.manual_seed(0)
    res = MLP((1, 4, 4), 3, width=8, depth=2, residual=True)
    x = torch.randn(5, 1, 4, 4)
    h = res.stem(x)
    expected = res.head(h + res.blocks[0](h) + res.blocks[1](h + res.blocks[0](h)))
    assert torch.allclose(res(x), expected)
    res.residual = False  # the same weights without skips compute the plain chain
    assert torch.allclose(res(x), res.head(res.blocks[1](res.blocks[0](h))))


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ConfigError, match="model.family"):
        ModelConfig(family="transformer")


# (family, two depths, width, extra config): every family at two depths.
FAMILIES = [
    ("mlp", (1, 3), 16, {}),
    ("convnet", (1, 2), 4, {}),
    ("fullyconv", (1, 2), 4, {}),
    ("lab_cnn", (2, 3), 8, {}),
    ("lab_resnet", (1, 3), 8, {}),
    ("vgg", (16, 24), 4, {}),
    ("resnet", (18, 34), 4, {"norm": "batch"}),
    ("cifar_resnet", (20, 32), 4, {"norm": "batch"}),
]
NO_RESIDUAL = {"lab_cnn"}
PROJECTION = {"resnet"}  # 1x1 projection shortcuts: the residual twin has those extra parameters


@pytest.mark.parametrize("family, depths, width, extra", FAMILIES)
def test_every_family_builds_at_two_depths_with_matching_twins(family, depths, width, extra):
    sizes = []
    for depth in depths:
        for residual in (False, True):
            if residual and family in NO_RESIDUAL:
                continue
            cfg = ModelConfig(family=family, depth=depth, width=width, residual=residual, **extra)
            model = build_model(cfg, (3, 32, 32), 10).eval()
            assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10), cfg
            sizes.append((depth, residual, count_parameters(model)))
    by_depth = {}
    for depth, residual, n in sizes:
        by_depth.setdefault(depth, {})[residual] = n
    for depth, counts in by_depth.items():
        if True in counts and family not in PROJECTION:
            assert counts[True] == counts[False], f"{family}-{depth}: plain and residual differ in parameters"
        if family in PROJECTION:
            assert counts[True] > counts[False]
    assert by_depth[depths[1]][False] > by_depth[depths[0]][False], "deeper means more parameters"


def test_lab_cnn_matches_the_labs_shapes_and_size():
    model = build_model(ModelConfig(family="lab_cnn", depth=3, width=16, kernel_size=3), (3, 32, 32))
    x = torch.zeros(1, 3, 32, 32)
    x = model.pool(model.block1(model.stem(x)))
    assert x.shape[-1] == 15
    x = model.block2(x)
    assert x.shape[-1] == 12
    x = model.pool(x)
    assert x.shape[-1] == 5
    assert model.block3(x).shape[-1] == 2  # 32 -> pool 15 -> 12 -> pool 5 -> 2 (lab-reference.md)
    # stem 3->16 (3x3), block 1: 3 x 16->16 (3x3), blocks 2 and 3: 6 x 16->16 (2x2), linear 16->10; all biased.
    expected = (3 * 16 * 9 + 16) + 3 * (16 * 16 * 9 + 16) + 6 * (16 * 16 * 4 + 16) + (16 * 10 + 10)
    assert count_parameters(model) == expected
    assert isinstance(model.block1[0], torch.nn.ReLU), "every convolution in a block is preceded by a ReLU"


def test_count_layers_counts_weight_layers():
    from labcore.core.models import count_layers

    assert count_layers(build_model(ModelConfig(family="convnet", depth=12, width=4), (3, 32, 32))) == 40
    assert count_layers(build_model(ModelConfig(family="cifar_resnet", depth=56, width=4), (3, 32, 32))) == 56
    assert count_layers(build_model(ModelConfig(family="vgg", depth=16, width=4), (3, 32, 32))) == 14  # 13 conv + 1 linear


def test_lab_resnet_matches_the_labs_size():
    model = build_model(ModelConfig(family="lab_resnet", depth=3, width=64, residual=True), (3, 32, 32))
    conv = 64 * 64 * 9 + 64
    assert count_parameters(model) == (3 * 64 * 9 + 64) + 3 * 2 * conv + (64 * 10 + 10)


def test_residual_block_is_identity_plus_the_plain_block():
    from labcore.core.models import BasicBlock, ConvNet

    torch.manual_seed(0)
    block = BasicBlock(4, 4, 1, "none", residual=True)
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(block(x), torch.relu(x + block.body(x)))
    block.residual = False
    assert torch.allclose(block(x), torch.relu(block.body(x)))
    # Downsampling block with option-A shortcut: subsample, zero-pad channels.
    down = BasicBlock(4, 8, 2, "none", residual=True)
    short = down.shortcut(x)
    assert short.shape == (2, 8, 4, 4) and torch.equal(short[:, :4], x[:, :, ::2, ::2]) and not short[:, 4:].any()
    net = ConvNet((3, 32, 32), 10, width=4, depth=1, residual=True)
    h = net.transitions[0](torch.randn(1, 3, 32, 32))
    assert torch.allclose(h + net.stages[0][0](h), h + torch.relu(net.stages[0][0].conv(h)))


@pytest.mark.parametrize("cfg, message", [
    (dict(family="cifar_resnet", depth=21), "6n\\+2"),
    (dict(family="resnet", depth=50), "18 or 34"),
    (dict(family="vgg", depth=17), "vgg depth"),
    (dict(family="lab_cnn", depth=3, residual=True), "no residual variant"),
])
def test_impossible_models_fail_clearly(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_model(ModelConfig(**cfg), (3, 32, 32))


@pytest.mark.parametrize("family, depth, kernel, shape", [
    ("lab_cnn", d, k, (3, 32, 32)) for d in (1, 2, 3, 4, 5) for k in (3, 4, 5)] + [
    ("vgg", 16, 3, (1, 28, 28)), ("vgg", 16, 3, (3, 32, 32)), ("convnet", 3, 3, (1, 28, 28))])
def test_meta_check_agrees_with_a_real_forward_pass(family, depth, kernel, shape):
    """check_buildable (a forward pass on the meta device) accepts exactly what a real forward pass accepts."""
    from labcore.core.models import check_buildable

    cfg = ModelConfig(family=family, depth=depth, width=4, kernel_size=kernel)
    try:
        real_ok = build_model(cfg, shape)(torch.zeros(2, *shape)).shape == (2, 10)
    except (RuntimeError, ConfigError):  # ConfigError: a family that needs the size to build its head
        real_ok = False
    try:
        check_buildable(cfg, shape, 10, "model")
        meta_ok = True
    except ConfigError as exc:
        assert str(exc).startswith("model: ") and f"{shape[1]}x{shape[2]}" in str(exc), exc
        meta_ok = False
    assert meta_ok == real_ok


def test_a_model_too_large_to_train_names_the_field_and_its_parameter_count():
    from labcore.core.config import ConfigError, ModelConfig
    from labcore.core.models import check_buildable

    with pytest.raises(ConfigError) as err:
        check_buildable(ModelConfig("mlp", 2, 2_000_000, False, "none"), (1, 28, 28), 10, "parameters/quick/x.yaml")
    assert "model.width=2000000 gives 8,001,594,000,010 parameters" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="model.width=40000 and model.depth=700 give .* lower model.width or"):
        check_buildable(ModelConfig("mlp", 700, 40_000, False, "none"), (1, 28, 28), 10, "x")  # neither alone
    check_buildable(ModelConfig("mlp", 2, 4096, False, "none"), (1, 28, 28), 10, "x")  # 20 M parameters: fine
