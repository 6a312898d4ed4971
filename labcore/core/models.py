"""Model families. Plain and residual variants are one class with a `residual` flag.

A residual block computes x + f(x) where its plain twin computes f(x), with the same f and so
the same parameters. Where a block changes the shape, the CIFAR ResNet pads the shortcut with
zeros (no parameters) and ResNet18/34 use a 1x1 projection (the only extra parameters).
Model code never picks a device: callers move the model.

What `depth` and `width` mean per family (ModelConfig):
  mlp           depth hidden width->width layers; width units
  convnet       3 stages (width, 2*width, 4*width channels), each a 3x3 conv that changes the width
                then `depth` 3x3 conv blocks, 2x2 max-pool after each stage, linear head
  fullyconv     the convnet body, then a 1x1 conv to the classes and global average pooling
  lab_cnn       the lab's plain CNN: `depth` convolutions per block, width channels, kernel_size
  lab_resnet    the lab's ResNetCNN: `depth` residual blocks of width channels (the lab: 3, 64)
  vgg           depth 11, 13, 16, 19 or 24 (VGG configurations), width = first stage's channels (64)
  resnet        depth 18 or 34 (basic blocks), width = first stage's channels (64)
  cifar_resnet  He et al.'s 6n+2 network: depth 20, 32, 44, 56, 110...; width = first stage's (16)
"""
from __future__ import annotations

import dataclasses

import functools

import math

import torch
from torch import nn

from labcore.core.config import ConfigError, ModelConfig


def _norm1d(norm: str, n: int) -> nn.Module:
    return nn.BatchNorm1d(n) if norm == "batch" else nn.Identity()


def _norm2d(norm: str, n: int) -> nn.Module:
    return nn.BatchNorm2d(n) if norm == "batch" else nn.Identity()


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1, padding: int | None = None) -> nn.Conv2d:
    """A biased convolution, 'same' padding for odd kernels unless given."""
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=(k - 1) // 2 if padding is None else padding)


class DenseBlock(nn.Module):
    """f(x) = relu(norm(W x + b)); the MLP's hidden layer."""

    def __init__(self, width: int, norm: str) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = _norm1d(norm, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.linear(x)))


class MLP(nn.Module):
    """flatten -> linear(in, width) -> ReLU -> `depth` x DenseBlock -> linear(width, classes) (the lab's MLP)."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int, depth: int,
                 residual: bool = False, norm: str = "none") -> None:
        super().__init__()
        self.residual = residual
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU())
        self.blocks = nn.ModuleList(DenseBlock(width, norm) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # [B, C, H, W] -> [B, width]
        for block in self.blocks:
            h = h + block(h) if self.residual else block(h)
        return self.head(h)




class ConvBlock(nn.Module):
    """f(x) = relu(norm(conv3x3(x))), channels unchanged; the ConvNet's repeated layer."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.conv = _conv(channels, channels)
        self.norm = _norm2d(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x)))


class ConvNet(nn.Module):
    """Three stages of 3x3 convolutions with max-pooling between them; a linear or a fully convolutional head."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int, depth: int,
                 residual: bool = False, norm: str = "none", fully_conv: bool = False) -> None:
        super().__init__()
        c, h, w = in_shape
        if h % 8 or w % 8:
            raise ConfigError(f"convnet needs images whose sides divide by 8 (three 2x2 pools), got {h}x{w}")
        self.residual = residual
        widths = (width, 2 * width, 4 * width)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        for c_in, c_out in zip((c, *widths[:-1]), widths):
            # The width change is never residual (shapes differ), so plain and residual twins share it.
            self.transitions.append(nn.Sequential(_conv(c_in, c_out), _norm2d(norm, c_out), nn.ReLU()))
            self.stages.append(nn.ModuleList(ConvBlock(c_out, norm) for _ in range(depth)))
        self.pool = nn.MaxPool2d(2)
        if fully_conv:
            self.head = nn.Sequential(nn.Conv2d(widths[-1], num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * (h // 8) * (w // 8), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transition, blocks in zip(self.transitions, self.stages):
            x = transition(x)
            for block in blocks:
                x = x + block(x) if self.residual else block(x)
            x = self.pool(x)  # [B, C, H, W] -> [B, C, H/2, W/2]
        return self.head(x)


class LabCNN(nn.Module):
    """The lab's plain CNN: stem, three blocks of relu->conv, max-pools, global average pool, linear.

    Block 1 keeps the size (kernel k); blocks 2 and 3 use kernel 2 without padding, so each of their
    convolutions shrinks the map by one pixel: with depth 3, k 3 the maps go 32 -> 15 -> 12 -> 5 -> 2.
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int, depth: int,
                 kernel_size: int = 3) -> None:
        super().__init__()
        c = in_shape[0]
        pad = (kernel_size - 1) // 2  # whether the maps are large enough is checked by a forward pass (check_buildable)
        self.stem = nn.Sequential(_conv(c, width, kernel_size), nn.ReLU())

        def block(k: int, p: int) -> nn.Sequential:
            return nn.Sequential(*[m for _ in range(depth) for m in (nn.ReLU(), _conv(width, width, k, padding=p))])

        self.block1, self.block2, self.block3 = block(kernel_size, pad), block(2, 0), block(2, 0)
        self.pool = nn.MaxPool2d(3, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block1(self.stem(x)))
        x = self.pool(self.block2(x))
        return self.head(self.block3(x))


class BasicBlock(nn.Module):
    """conv3x3 -> norm -> relu -> conv3x3 -> norm, then relu(f(x) + shortcut(x)), or relu(f(x)) when plain.

    `shortcut` says how a residual block matches shapes when it downsamples or widens: "pad"
    (He et al.'s option A: subsample and zero-pad channels, no parameters) or "project" (1x1 conv).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, residual: bool, shortcut: str = "pad") -> None:
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(_conv(c_in, c_out, stride=stride), _norm2d(norm, c_out), nn.ReLU(),
                                  _conv(c_out, c_out), _norm2d(norm, c_out))
        self.reshape = stride != 1 or c_in != c_out
        self.extra = c_out - c_in
        self.stride = stride
        self.project = None
        if residual and self.reshape and shortcut == "project":
            self.project = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm2d(norm, c_out))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The identity, or its shape-matching version when the block downsamples or widens."""
        if not self.reshape:
            return x
        if self.project is not None:
            return self.project(x)
        x = x[:, :, :: self.stride, :: self.stride]  # [B, C, H, W] -> [B, C, H/s, W/s]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))  # zero channels up to c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return torch.relu(out + self.shortcut(x)) if self.residual else torch.relu(out)


class StagedResNet(nn.Module):
    """Stem, stages of BasicBlocks (stride 2 at each later stage's first block), global pool, linear head.

    One class for He et al.'s CIFAR ResNet (3 stages of n blocks, 16/32/64 filters) and ResNet18/34
    (4 stages, 64..512 filters), each with its plain twin (`residual=False`).
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, blocks: tuple[int, ...], width: int,
                 residual: bool, norm: str, shortcut: str) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(len(blocks))]
        self.stem = nn.Sequential(_conv(in_shape[0], width), _norm2d(norm, width), nn.ReLU())
        layers, c_in = [], width
        for i, (n, c_out) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(c_in, c_out, 2 if i > 0 and j == 0 else 1, norm, residual, shortcut))
                c_in = c_out
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
        for m in self.modules():  # He et al.'s initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class LabResNetCNN(nn.Module):
    """The lab's ResNetCNN: 3x3 stem and ReLU, `depth` blocks relu(conv(relu(conv(x))) + x), 2x2 max-pool,
    global average pool, linear head; all convolutions biased, no normalisation."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int, depth: int,
                 residual: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(in_shape[0], width), nn.ReLU())
        self.blocks = nn.Sequential(*[BasicBlock(width, width, 1, "none", residual) for _ in range(depth)])
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# VGG configurations: 3x3 convolutions per stage (5 stages, 2x2 max-pool after each); depth = convs + 3.
# VGG24 is the lab's deeper variant: VGG19 with one more convolution in each of the five stages.
VGG_STAGES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4), 24: (3, 3, 5, 5, 5)}


class VGG(nn.Module):
    """VGG for 32x32 images: five stages of 3x3 conv blocks (width, 2w, 4w, 8w, 8w), a max-pool after each
    (32 -> 1), then a linear head. With `residual`, every block after a stage's first is x + f(x)."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, stages: tuple[int, ...], width: int,
                 residual: bool = False, norm: str = "none") -> None:
        super().__init__()
        self.residual = residual
        widths = (width, 2 * width, 4 * width, 8 * width, 8 * width)
        self.transitions, self.stages = nn.ModuleList(), nn.ModuleList()
        c_in = in_shape[0]
        for n, c_out in zip(stages, widths):
            self.transitions.append(nn.Sequential(_conv(c_in, c_out), _norm2d(norm, c_out), nn.ReLU()))
            self.stages.append(nn.ModuleList(ConvBlock(c_out, norm) for _ in range(n - 1)))
            c_in = c_out
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))

    forward = ConvNet.forward  # same transitions/stages/pool/head layout, so the same forward pass


def _cifar_resnet(c: ModelConfig, s: tuple[int, int, int], k: int) -> nn.Module:
    if (c.depth - 2) % 6:
        raise ConfigError(f"cifar_resnet depth must be 6n+2 (20, 32, 44, 56, 110), got {c.depth}")
    n = (c.depth - 2) // 6
    return StagedResNet(s, k, (n, n, n), c.width, c.residual, c.norm, shortcut="pad")


def _resnet(c: ModelConfig, s: tuple[int, int, int], k: int) -> nn.Module:
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}.get(c.depth)
    if blocks is None:
        raise ConfigError(f"resnet depth must be 18 or 34 (basic blocks), got {c.depth}")
    return StagedResNet(s, k, blocks, c.width, c.residual, c.norm, shortcut="project")


def _vgg(c: ModelConfig, s: tuple[int, int, int], k: int) -> nn.Module:
    if c.depth not in VGG_STAGES:
        raise ConfigError(f"vgg depth must be one of {sorted(VGG_STAGES)}, got {c.depth}")
    return VGG(s, k, VGG_STAGES[c.depth], c.width, c.residual, c.norm)


def _lab_cnn(c: ModelConfig, s: tuple[int, int, int], k: int) -> nn.Module:
    if c.residual:
        raise ConfigError("lab_cnn has no residual variant (its kernel-2 convolutions shrink every map); "
                          "use lab_resnet, or convnet with residual: true")
    return LabCNN(s, k, c.width, c.depth, c.kernel_size)


def build_model(cfg: ModelConfig, in_shape: tuple[int, int, int], num_classes: int = 10) -> nn.Module:
    """The network that `cfg` names, for images of shape (C, H, W); impossible shapes raise ConfigError."""
    return _BUILDERS[cfg.family](cfg, tuple(in_shape), num_classes)  # ModelConfig has checked the name


def check_buildable(cfg: ModelConfig, in_shape: tuple[int, int, int], num_classes: int, where: str) -> None:
    """Build `cfg` on the meta device and run a forward pass there (shapes only: no memory, no compute):
    impossible names and shapes fail now, as a ConfigError prefixed with `where`."""
    problem = _meta_problem(cfg, tuple(in_shape), num_classes)
    if problem:
        raise ConfigError(f"{where}: {problem}")


@functools.lru_cache(maxsize=None)
def _meta_problem(cfg: ModelConfig, in_shape: tuple[int, int, int], num_classes: int) -> str | None:
    """What is wrong with building and running `cfg` on `in_shape` images, or None. Cached: a plan checks the
    same architecture for every seed and learning rate, and a first meta forward pass costs up to 2 s."""
    try:
        with torch.device("meta"):
            model = build_model(cfg, in_shape, num_classes)
            out = model(torch.empty(2, *in_shape))
    except ConfigError as exc:
        return str(exc)
    except RuntimeError as exc:  # a map shrunk to nothing, channels that do not match, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (f"{cfg.family} with depth {cfg.depth} cannot process a {in_shape[1]}x{in_shape[2]} image ({reason}); "
                "lower model.depth")
    if tuple(out.shape) != (2, num_classes):
        return f"the model returns {tuple(out.shape)} for 2 images, not (2, {num_classes})"
    return _too_large(cfg, in_shape, num_classes, count_parameters(model))


def _too_large(cfg: ModelConfig, in_shape: tuple[int, int, int], num_classes: int, n_params: int) -> str | None:
    """Why a model with `n_params` parameters cannot train on any machine labcore is meant for, naming the field
    that made it so (the one whose halving shrinks it most), or None. Training with Adam keeps 4 fp32 copies
    (weights, gradients, 2 moments): 16 bytes a parameter, against twice this machine's memory and at least 160 GB."""
    import os

    need = 16 * n_params
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 0
    if need <= max(2 * memory, 160 * 2**30):
        return None
    default = ModelConfig(cfg.family)  # the family's other fields at their defaults: which field alone is too large
    alone = []
    for field in ("width", "depth"):
        with torch.device("meta"):
            n = count_parameters(build_model(dataclasses.replace(default, **{field: getattr(cfg, field)}), in_shape,
                                             num_classes))
        alone += [field] if 16 * n > max(2 * memory, 160 * 2**30) else []
    fields = alone if len(alone) == 1 else ["width", "depth"]
    given = " and ".join(f"model.{f}={getattr(cfg, f)}" for f in fields)
    return (f"{given} give{'s' if len(fields) == 1 else ''} {n_params:,} parameters, about {need / 2**30:,.0f} GiB "
            f"to train with Adam; lower {' or '.join('model.' + f for f in fields)}")


def count_layers(model: nn.Module) -> int:
    """Weight layers (convolutions and linear layers), the way network depth is usually counted."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


_BUILDERS = {
    "mlp": lambda c, s, k: MLP(s, k, c.width, c.depth, c.residual, c.norm),
    "convnet": lambda c, s, k: ConvNet(s, k, c.width, c.depth, c.residual, c.norm),
    "fullyconv": lambda c, s, k: ConvNet(s, k, c.width, c.depth, c.residual, c.norm, fully_conv=True),
    "lab_cnn": _lab_cnn,
    "lab_resnet": lambda c, s, k: LabResNetCNN(s, k, c.width, c.depth, c.residual),
    "vgg": _vgg,
    "resnet": _resnet,
    "cifar_resnet": _cifar_resnet,
}
