"""Models: output shapes, parameter counts, and residual = identity + the same block."""
import pytest
import torch

from labcore.config import ConfigError, ModelConfig
from labcore.models import MLP, build_model, count_parameters


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
