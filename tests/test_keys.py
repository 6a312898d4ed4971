"""A run's key survives a new setting: a field added with a default that reproduces the old behaviour leaves every
stored key unchanged; set to another value, it changes the key (labcore.core.config.RunConfig.keyed)."""
from __future__ import annotations

import dataclasses

import pytest

from labcore.core.config import KEYED_ALWAYS, DataConfig, ModelConfig, RunConfig, TrainConfig
from labcore.engine import plan

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
# One new field per section, with the default that changes nothing (the example for train).
NEW = {"data": ("crop_border", int, 0), "model": ("dropout", float, 0.0), "train": ("label_smoothing", float, 0.0)}


def _with_new_field(section: str) -> type:
    """The section's config class with one more, defaulted field (what adding a setting to labcore looks like)."""
    name, tp, default = NEW[section]
    return dataclasses.make_dataclass(SECTIONS[section].__name__, [(name, tp, dataclasses.field(default=default))],
                                      bases=(SECTIONS[section],), frozen=True)


def _moved(cfg: RunConfig, section: str, **values) -> RunConfig:
    """`cfg` with `section` rebuilt as the class with the new field (at its default unless `values` set it)."""
    current = dataclasses.asdict(getattr(cfg, section))
    return dataclasses.replace(cfg, **{section: _with_new_field(section)(**current, **values)})


@pytest.fixture(scope="module")
def plans() -> dict[str, list]:
    """The smoke and quick plans, planned once for this module."""
    return {profile: plan.profile_runs(profile) for profile in ("smoke", "quick")}


@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_a_defaulted_new_field_keeps_every_key_of_a_profile(plans, profile):
    assert plans[profile]
    for section in SECTIONS:
        for p in plans[profile]:
            assert _moved(p.cfg, section).key() == p.key, (section, p.cfg.label())


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_a_new_field_set_otherwise_changes_the_key(section):
    cfg = RunConfig.build(model={"family": "mlp"})
    name, tp, default = NEW[section]
    other = tp(1) if tp is int else 0.1
    assert _moved(cfg, section, **{name: other}).key() != cfg.key()
    assert _moved(cfg, section, **{name: default}).key() == cfg.key()


def test_the_fields_keyed_always_are_still_fields():
    """A field of KEYED_ALWAYS removed from its section would change what old records hash to; a field added to a
    section later belongs outside KEYED_ALWAYS (hashed only where it differs from its default)."""
    for section, cls in SECTIONS.items():
        assert set(KEYED_ALWAYS[section]) <= {f.name for f in dataclasses.fields(cls)}, section
    base = RunConfig.build(data={"name": "mnist"}, model={"family": "mlp"})
    assert base.replace(train={"precision": "auto"}).key() != base.key()
    assert base.replace(data={"split_seed": 1}).key() != base.key()
