"""Typed, frozen configs for data, model and training, built strictly from dicts or YAML.

Every experiment is described by a `RunConfig`; its `key()` names the run in the run store,
so two runs with equal configs are the same run. Unknown keys, wrong types and impossible
values raise `ConfigError` with a one-line message naming the field and how to fix it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labcore.core.datasets import DATASETS, SIZES


class ConfigError(ValueError):
    """A parameter is unknown, mistyped or out of range; the message says which and how to fix it."""


# PyYAML follows YAML 1.1, where "1e-4" (no dot) is a string; accept it as the float everyone means.
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a syntax error or a non-mapping file is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}; fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter names to values, got {type(data).__name__}")
    return data


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Return `value` coerced to `tp` where lossless (int -> float, list -> tuple), else raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        return tuple(_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass `cls` from `data`, failing loudly on unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(names)}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where} is {value!r}; choose one of: {', '.join(allowed)}")


def _positive(value: int | float | None, where: str, zero_ok: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not zero_ok)):
        raise ConfigError(f"{where} must be {'>= 0' if zero_ok else '> 0'}, got {value}")




@dataclass(frozen=True)
class DataConfig:
    """Which images, and how the training set is split."""

    name: str = "mnist"  # "mnist" or "cifar10"
    val_size: int = 5000  # images drawn at random from the training set for validation (lab: 5000)
    subset: int | None = None  # keep this many training images after the split (small profiles); None = all
    test_subset: int | None = None  # evaluate on N test images drawn at random (split_seed); None = all 10,000
    split_seed: int = 0  # fixed across model seeds, so every seed sees the same train/validation split

    def __post_init__(self) -> None:
        _choice(self.name, tuple(DATASETS), "data.name")
        _positive(self.val_size, "data.val_size")
        _positive(self.subset, "data.subset")
        _positive(self.test_subset, "data.test_subset")
        n_train, n_test = SIZES[self.name]
        if self.val_size >= n_train:
            raise ConfigError(f"data.val_size={self.val_size} leaves no training images out of {self.name}'s "
                              f"{n_train:,}; lower it")
        if self.subset is not None and self.subset > n_train - self.val_size:
            raise ConfigError(f"data.subset={self.subset} is more than the {n_train - self.val_size:,} training images "
                              f"{self.name} has after {self.val_size:,} go to validation; lower it, or null for all")
        if self.test_subset is not None and self.test_subset > n_test:
            raise ConfigError(f"data.test_subset={self.test_subset} is more than {self.name}'s {n_test:,} test images; "
                              "lower it, or null for all")


FAMILIES = ("mlp", "convnet", "fullyconv", "lab_cnn", "lab_resnet", "vgg", "resnet", "cifar_resnet")
NORMS = ("none", "batch")


# Fields only some settings read (labcore.core.models, labcore.core.step): (section, field) -> (the field that
# decides, the values of it that read this one). Elsewhere the field keeps its default: another value would give
# its runs another key for the same computation, and one written in a parameter file, even at its default, would
# tell its reader it matters (check_read).
READ_ONLY_BY = {("model", "norm"): ("family", ("mlp", "convnet", "fullyconv", "vgg", "resnet", "cifar_resnet")),
                ("model", "kernel_size"): ("family", ("lab_cnn",)),
                ("train", "momentum"): ("optimizer", ("sgd",)),
                ("train", "milestones"): ("schedule", ("multistep",))}


def check_read(cfg: Any, section: str, given: Iterable[str] = (), where: str = "") -> None:
    """A ConfigError for a field of `cfg` (a `section` config) that its settings never read, where it differs from
    its default or is among the keys `given` in a parameter file (at `where`, default `section`)."""
    for (kind, name), (decides, readers) in READ_ONLY_BY.items():
        value, by = getattr(cfg, name, None), getattr(cfg, decides, None)
        if kind != section or by in readers:
            continue
        if value != type(cfg).__dataclass_fields__[name].default:
            raise ConfigError(f"{where or section}.{name}={value!r} changes nothing for {decides} {by} (read only by "
                              f"{', '.join(readers)}) yet would give its runs another key; remove it")
        if name in given:
            raise ConfigError(f"{where or section}.{name} changes nothing for {decides} {by} (read only by "
                              f"{', '.join(readers)}); remove it from the parameters")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture; see labcore.core.models for what `depth` and `width` mean in each family."""

    family: str = "mlp"  # one of FAMILIES
    depth: int = 2  # mlp: hidden width->width layers; conv families: see labcore.core.models
    width: int = 16  # units (mlp) or channels of the first stage (conv families)
    residual: bool = False  # identity skip connections; the only difference between plain and residual twins
    norm: str = "none"  # "none" or "batch" (batch norm after each linear/conv layer of a block)
    kernel_size: int = 3  # lab_cnn only: the stem's and block 1's kernel (the lab's gradient run used 4)

    def __post_init__(self) -> None:
        _choice(self.family, FAMILIES, "model.family")
        _choice(self.norm, NORMS, "model.norm")
        _positive(self.depth, "model.depth", zero_ok=True)
        _positive(self.width, "model.width")
        _positive(self.kernel_size, "model.kernel_size")
        check_read(self, "model")  # a field the family ignores must not give its runs another key


OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "multistep")
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the lab's exercise 1.1 settings."""

    epochs: int = 15
    batch_size: int = 128  # images per step (lab: 128 everywhere)
    optimizer: str = "adam"  # "adam" or "sgd" (with momentum)
    lr: float = 1e-4  # initial learning rate
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # L2 penalty, applied by the optimiser
    schedule: str = "constant"  # "constant", "cosine" (per step, to 0) or "multistep" (/10 at milestones)
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of all steps (He et al.: 32k, 48k of 64k)
    augment: bool = False  # random 32x32 crop from a 4-pixel zero padding + horizontal flip, on batched tensors
    # "fp32"; "bf16": bfloat16 autocast, weights and optimiser in fp32; "auto": bf16 where the device computes it
    # natively (a GPU with bf16; a CPU with AMX or AVX512-BF16), else fp32. The precision a run used is its recorded
    # regime (numerics["precision"]), not its identity: an "auto" run serves every machine, saying how it trained.
    precision: str = "fp32"
    channels_last: bool = True  # NHWC memory format for convolutional models: the whole quick build in 0.91x the time (2026-11, CPU)

    def __post_init__(self) -> None:
        if isinstance(self.milestones, list):  # built by hand: the same config as the tuple, equal and hashable
            object.__setattr__(self, "milestones", tuple(self.milestones))
        _positive(self.epochs, "train.epochs")
        _positive(self.batch_size, "train.batch_size")
        _positive(self.lr, "train.lr")
        _positive(self.weight_decay, "train.weight_decay", zero_ok=True)
        _choice(self.optimizer, OPTIMIZERS, "train.optimizer")
        _choice(self.schedule, SCHEDULES, "train.schedule")
        _choice(self.precision, PRECISIONS, "train.precision")
        if not all(0 < m < 1 for m in self.milestones):
            raise ConfigError(f"train.milestones must be fractions between 0 and 1, got {list(self.milestones)}")
        check_read(self, "train")  # momentum with Adam, milestones without multistep: no other key for them


# The fields every run key has hashed since the store's format 2 (2026-11); never add to these. A field added to a
# section later is hashed only where its value differs from its default (RunConfig.keyed), so the runs stored before
# it keep their keys, and setting it otherwise gives new ones.
KEYED_ALWAYS: dict[str, tuple[str, ...]] = {
    "data": ("name", "val_size", "subset", "test_subset", "split_seed"),
    "model": ("family", "depth", "width", "residual", "norm", "kernel_size"),
    "train": ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "milestones",
              "augment", "precision", "channels_last"),
}


def _plain(value: Any) -> Any:
    """A field's value as `to_dict` writes it (tuples become lists), to compare with a default."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class RunConfig:
    """One training run: a pure function of this config (the seed included)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0  # model initialisation and batch order

    @classmethod
    def build(cls, data: dict | None = None, model: dict | None = None, train: dict | None = None,
              seed: int = 0) -> "RunConfig":
        """Build from plain dicts (a notebook's parameters), strictly."""
        return cls(from_dict(DataConfig, data, "data"), from_dict(ModelConfig, model, "model"),
                   from_dict(TrainConfig, train, "train"), _check_type(seed, int, "seed"))

    def replace(self, **sections: dict[str, Any]) -> "RunConfig":
        """A copy with some fields changed, e.g. `cfg.replace(model={"depth": 8}, seed=1)`."""
        seed = sections.pop("seed", self.seed)
        parts = {name: from_dict(type(getattr(self, name)), {**dataclasses.asdict(getattr(self, name)), **upd}, name)
                 for name, upd in sections.items()}
        return dataclasses.replace(self, seed=_check_type(seed, int, "seed"), **parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able form (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def key(self) -> str:
        """Stable short hash of what makes this run itself (`keyed`): the run store's name for this run."""
        blob = json.dumps(self.keyed(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def keyed(self) -> dict[str, Any]:
        """What the key hashes: every field of KEYED_ALWAYS, and each field added since only where it differs from
        its default. A new setting whose default reproduces the old behaviour so re-keys no stored run."""
        out = self.to_dict()
        for name in KEYED_ALWAYS:
            section = getattr(self, name)
            defaults = {f.name: _plain(f.default if f.default is not dataclasses.MISSING else f.default_factory())
                        for f in dataclasses.fields(section)}
            out[name] = {k: v for k, v in out[name].items() if k in KEYED_ALWAYS[name] or v != defaults[k]}
        return out

    def label(self) -> str:
        """Short human-readable name, e.g. 'mlp-d2-w16-plain-s0'."""
        m = self.model
        return f"{m.family}-d{m.depth}-w{m.width}-{'res' if m.residual else 'plain'}-s{self.seed}"


@dataclass(frozen=True)
class ProbeConfig:
    """How gradients are measured (the lab: 11 training batches of 128, fresh models in training mode)."""

    batches: int = 11  # training batches per measurement
    batch_size: int = 128
    seed: int = 0  # which training images form the batches
    over_training_batches: int = 3  # batches per checkpoint when following gradients over epochs (cheaper)

    def __post_init__(self) -> None:
        for name in ("batches", "batch_size", "over_training_batches"):
            _positive(getattr(self, name), f"probe.{name}")


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def validate_params(params: dict[str, Any]) -> None:
    """Check the sections of a notebook's parameters that are configs, before anything runs."""
    for name, cls in SECTIONS.items():
        if name in params:
            check_read(from_dict(cls, params[name], name), name, params[name] or ())
    if "probe" in params:
        from_dict(ProbeConfig, params["probe"], "probe")
    if "seed" in params:
        _check_type(params["seed"], int, "seed")
    if "seeds" in params:
        _check_type(params["seeds"], tuple[int, ...], "seeds")
    if "residual" in params:
        _check_type(params["residual"], tuple[bool, ...], "residual")
