"""Parameters: a notebook's defaults, overridden by parameters/<profile>/<stem>.yaml, validated.

Every parameter file is read, merged over the notebook's own `parameters` cell and checked before any
notebook runs or any run is planned, so a typo fails in a second with a one-line error.
"""
from __future__ import annotations

import ast
import json

import yaml
from pathlib import Path
from typing import Any

from labcore.core.config import SECTIONS, ConfigError, ProbeConfig, from_dict, load_yaml, validate_params
from labcore.core.data import sizes
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
            if name not in SECTIONS and suffix in SECTIONS and isinstance(value, dict):
                from_dict(SECTIONS[suffix], value, name)  # e.g. lab_plain_model
        if "tracking" in params:
            check_mode(params["tracking"])
    except ConfigError as exc:
        raise ConfigError(f"{_shown(path)}: {exc}") from None
    _check_spelling(path, given)
    return params


def check_probe(probe: dict[str, Any], data: dict[str, Any]) -> None:
    """The probe's batches must fit in the training images the data section leaves (labcore.core.probes)."""
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
