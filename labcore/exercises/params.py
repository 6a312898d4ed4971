"""Parameters: a notebook's defaults, overridden by parameters/<profile>/<stem>.yaml, validated.

Every parameter file is read, merged over the notebook's own `parameters` cell and checked before any
notebook runs or any run is planned, so a typo fails in a second with a one-line error. How one profile's
parameters differ from another's, in effect (`differences`, `against_full`), is said here too: a page's banner
names its settings reduced against full's, and `make diff` the settings two builds ran with.
"""
from __future__ import annotations

import ast
import dataclasses
import json

import yaml
from pathlib import Path
from typing import Any

from labcore.core.config import SECTIONS, ConfigError, ProbeConfig, check_read, from_dict, load_yaml, validate_params
from labcore.paths import PROJECT_ROOT
from labcore.store.tracking import check_mode

NOTEBOOKS = PROJECT_ROOT / "notebooks"
PARAMETERS = PROJECT_ROOT / "parameters"
PROFILES = ("smoke", "quick", "lab", "full")


def notebook_stems() -> list[str]:
    """All exercise notebooks, in order."""
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def parse_list(text: str) -> list[str] | None:
    """STUDIES=lab_cnn,lab_resnet -> ['lab_cnn', 'lab_resnet']; empty -> None (all)."""
    return [s.strip() for s in text.split(",") if s.strip()] or None


def parse_only(text: str) -> list[str] | None:
    """ONLY=01_mlp_baseline,02_cnn_depth.ipynb -> ['01_mlp_baseline', '02_cnn_depth']; empty -> None (all)."""
    return [s.removesuffix(".ipynb") for s in parse_list(text) or []] or None


def notebook_defaults(stem: str) -> dict[str, Any]:
    """The values of the notebook's `parameters` cell (read as papermill reads it: each `name = literal`).

    Parsed here with `ast` rather than through `papermill.inspect_notebook`: importing papermill (nbformat's
    validator, jsonschema's grammars) costs about 7 s, paid by every `make plan`/`train` and every kernel
    that plans another notebook's runs.
    """
    path = NOTEBOOKS / f"{stem}.ipynb"
    cells = json.loads(path.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ConfigError(f"notebooks/{stem}.ipynb has no cell tagged 'parameters'")
    source = "".join(tagged[0]["source"]) if isinstance(tagged[0]["source"], list) else tagged[0]["source"]
    defaults = {}
    for node in ast.parse(source).body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        if not isinstance(target, ast.Name):
            raise ConfigError(f"notebooks/{stem}.ipynb, parameters cell line {node.lineno}: only `name = value` "
                              "assignments belong there (papermill injects values by name)")
        try:
            defaults[target.id] = ast.literal_eval(node.value)
        except ValueError:
            raise ConfigError(f"notebooks/{stem}.ipynb, parameters cell: {target.id} must be a literal "
                              "(a number, string, list or dict), so YAML can override it") from None
    return defaults


def _shown(path: Path) -> str:
    """A path as the user knows it: relative to the project where possible."""
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _as_text(ours: Any, theirs: Any, where: str = "") -> tuple[str, str] | None:
    """(dotted key, text) of the first value that labcore's loader reads as a number and PyYAML's safe loader (what
    papermill's -f uses) as text, e.g. ('train.lr', '1e-3'), or None where the two loaders agree."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return next(filter(None, (_as_text(v, theirs.get(k), f"{where}{k}.") for k, v in ours.items())), None)
    if isinstance(ours, list) and isinstance(theirs, list):
        return next(filter(None, (_as_text(a, b, f"{where.rstrip('.')}[{i}].") for i, (a, b) in
                                  enumerate(zip(ours, theirs)))), None)
    return (where.rstrip("."), theirs) if isinstance(ours, float) and isinstance(theirs, str) else None


MAX_FILE_BYTES = 1 << 20  # a parameter file is a few hundred bytes; anything near this is not one


def _load_plain(path: Path) -> dict[str, Any]:
    """A parameter file as labcore reads it; a file too large to be parameters, or not UTF-8 text, is one line
    naming it."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{_shown(path)} is {path.stat().st_size:,} bytes, not a parameter file (at most "
                          f"{MAX_FILE_BYTES:,}); check that it is the YAML you meant")
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{_shown(path)} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML") from None
    return load_yaml(path)


def _check_spelling(path: Path, given: dict[str, Any]) -> None:
    """A parameter file must read as papermill reads it: labcore's loader and PyYAML's safe loader must agree (a
    float written without a dot, 1e-3, is text to YAML 1.1: refused, naming the key and the spelling that works)."""
    found = _as_text(given, yaml.safe_load(path.read_text()) or {})
    if found:
        key, text = found
        raise ConfigError(f"{_shown(path)}: {key} is written {text}, which YAML 1.1 (PyYAML, so papermill) reads as "
                          f"text; write {text.replace('e', '.0e', 1) if '.' not in text else text}")


def parameter_file(stem: str, profile: str) -> str:
    """parameters/<profile>/<stem>.yaml, as the user knows it (relative to the project where possible)."""
    return _shown(PARAMETERS / profile / f"{stem}.yaml")


def merged_parameters(stem: str, profile: str) -> dict[str, Any]:
    """Notebook defaults overridden by parameters/<profile>/<stem>.yaml, every config section type-checked.
    (labcore.exercises.exercise.plan_page also plans with them, building every model on the meta device.)"""
    path = PARAMETERS / profile / f"{stem}.yaml"
    if not path.is_file():
        raise ConfigError(f"no parameter file {_shown(path)} for notebook {stem} "
                          f"in profile {profile}; create it (copy another profile's)")
    defaults = notebook_defaults(stem)
    given = _load_plain(path)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"{_shown(path)}: unknown parameter {unknown[0]!r} for {stem}; "
                          f"valid: {', '.join(defaults)}")
    if "profile" in given:
        raise ConfigError(f"{_shown(path)}: 'profile' is set by the build (it names this folder); remove it")
    params = {**defaults, **given}  # as papermill injects a parameter file: each top-level value replaces the cell's
    if "profile" in defaults:  # the notebook learns which profile it renders (04 plans its upstream in it)
        params["profile"] = profile
    try:
        validate_params(params)
        for name, value in params.items():
            suffix = name.rsplit("_", 1)[-1]
            if name not in SECTIONS and suffix in SECTIONS and isinstance(value, dict):  # e.g. lab_plain_model
                try:
                    check_read(from_dict(SECTIONS[suffix], value, name), suffix, value, name)
                except ConfigError as exc:  # the section's own checks say 'model.': say it as the file does
                    said = str(exc)
                    raise ConfigError(name + said[len(suffix):] if said.startswith(f"{suffix}.") else said) from None
        if "tracking" in params:
            check_mode(params["tracking"])
    except ConfigError as exc:
        raise ConfigError(f"{_shown(path)}: {exc}") from None
    _check_spelling(path, given)
    return params


def _effective(section: str, value: dict[str, Any]) -> dict[str, Any]:
    """A parameters section with the config's defaults filled in (what the run would use)."""
    return {**{f.name: f.default for f in dataclasses.fields(SECTIONS[section])}, **value}


def differences(params: dict[str, Any], reference: dict[str, Any], prefix: str = "", other: str = "full",
                none: str = "all") -> list[str]:
    """'key: value (full: value)' for every leaf where `params` differs from `reference` in effect (dotted keys; a
    config section's missing keys read as their defaults, a missing `residual` as plain only, or in a study as the
    notebook's); studies only one side has are named together in one line. `other` names the reference, `none` how
    a missing or None value reads."""
    out, absent = [], []
    for key in dict.fromkeys([*params, *reference]):
        a, b, name = params.get(key), reference.get(key), f"{prefix}{key}"
        if key in SECTIONS and isinstance(a, dict) and isinstance(b, dict):
            a, b = _effective(key, a), _effective(key, b)
        if key == "residual":  # unset: plain only at the top; a study's inherits the notebook's
            unset = [False] if not prefix else "the notebook's"
            a, b = a if a is not None else unset, b if b is not None else unset
        if prefix.endswith("studies.") and isinstance(b, dict) and a is None:
            absent.append(key)
        elif prefix.endswith("studies.") and isinstance(a, dict) and b is None:
            out.append(f"{name}: only in this profile")
        elif key in SECTIONS and (a is None) != (b is None):  # a study's own section on one side only
            out += [f"{name}.{k}: {_short(v, 'none')} ({other}: the notebook's)" for k, v in (a or {}).items()]
            out += [f"{name}.{k}: the notebook's ({other}: {_short(v, 'none')})" for k, v in (b or {}).items()]
        elif isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{name}.", other, none)
        elif json.dumps(a, default=str) != json.dumps(b, default=str):  # a tuple default equals its list
            empty = none if key in ("subset", "test_subset") else "none"  # a None subset means all images
            out.append(f"{name}: {_short(a, empty)} ({other}: {_short(b, empty)})")
    if absent:
        out.append(f"{prefix}: {', '.join(absent)} not run here ({other} runs them)".replace(".:", ":"))
    return out


def _short(value: Any, none: str = "all") -> str:
    """A value as one line of YAML; None as `none`."""
    return none if value is None else yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def against_full(stem: str, profile: str, params: dict[str, Any]) -> list[str] | None:
    """How notebook `stem`'s `params` in `profile` differ from the full profile's (`differences`), for the page's
    banner; None for full itself, or without a full parameter file."""
    if profile == "full":
        return None
    try:
        full = merged_parameters(stem, "full")  # only compared, never planned: no need to plan it
    except ConfigError:
        return None
    return differences({k: v for k, v in params.items() if k != "profile"},  # set by the build: always differs
                       {k: v for k, v in full.items() if k != "profile"})


def check_probe(probe: dict[str, Any], data: dict[str, Any]) -> None:
    """The probe's batches must fit in the training images the data section leaves (labcore.core.probes)."""
    from labcore.core.data import sizes  # here: `make diff` reads these parameters without importing torch

    cfg = from_dict(ProbeConfig, probe, "probe")
    n_train = sizes(from_dict(SECTIONS["data"], data, "data"))[0]
    if cfg.batches * cfg.batch_size > n_train:
        raise ConfigError(f"probe.batches x probe.batch_size = {cfg.batches} x {cfg.batch_size} = "
                          f"{cfg.batches * cfg.batch_size:,} images, more than the {n_train:,} training images "
                          "data leaves; lower one of them, or raise data.subset")


def datasets_needed(params: dict[str, Any]) -> set[str]:
    """Dataset names in the parameters' data sections (`data`, `*_data`)."""
    return {v.get("name", "mnist") for k, v in params.items()
            if (k == "data" or k.endswith("_data")) and isinstance(v, dict)}
