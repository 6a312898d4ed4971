"""Parameters: a notebook's defaults, overridden by parameters/<profile>/<stem>.yaml, validated.

Every parameter file is read, merged over the notebook's own `parameters` cell and checked before any
notebook runs or any run is planned, so a typo fails in a second with a one-line error.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from labcore.core.config import SECTIONS, ConfigError, ProbeConfig, from_dict, load_yaml, validate_params
from labcore.core.data import sizes
from labcore.paths import PROJECT_ROOT
from labcore.store.tracking import check_mode

NOTEBOOKS = PROJECT_ROOT / "notebooks"
PARAMETERS = PROJECT_ROOT / "parameters"
PROFILES = ("smoke", "quick", "full")


def notebook_stems() -> list[str]:
    """All exercise notebooks, in order."""
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def check_selection(profile: str, only: list[str] | None) -> None:
    """A one-line ConfigError for an unknown profile or notebook name."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    stems = notebook_stems()
    for name in only or []:
        if name not in stems:
            raise ConfigError(f"no notebook named {name!r}; available: {', '.join(stems)}")


def parse_only(text: str) -> list[str] | None:
    """ONLY=01_mlp_baseline,02_cnn_depth.ipynb -> ['01_mlp_baseline', '02_cnn_depth']; empty -> None (all)."""
    return [s.strip().removesuffix(".ipynb") for s in text.split(",") if s.strip()] or None


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


def _merge(base: Any, override: Any) -> Any:
    """Deep merge: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in override.items()}}
    return override


def _shown(path: Path) -> str:
    """A path as the user knows it: relative to the project where possible."""
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _load_with_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A parameter file, merged over the file its `include:` names (same folder), recursively.

    Lets exercise 03 reuse exercise 02's studies verbatim, so their runs share store keys.
    """
    if path in seen:
        raise ConfigError(f"{_shown(path)}: include cycle through {', '.join(p.name for p in seen)}")
    given = load_yaml(path)
    include = given.pop("include", None)
    if include is None:
        return given
    if not isinstance(include, str):
        raise ConfigError(f"{_shown(path)}: include must be a file name, got {include!r}")
    return _merge(_load_with_includes(path.parent / include, (*seen, path)), given)


def parameter_file(stem: str, profile: str) -> str:
    """parameters/<profile>/<stem>.yaml, as the user knows it (relative to the project where possible)."""
    return _shown(PARAMETERS / profile / f"{stem}.yaml")


def merged_parameters(stem: str, profile: str) -> dict[str, Any]:
    """Notebook defaults overridden by parameters/<profile>/<stem>.yaml, every config section type-checked.
    (labcore.exercises.exercise.parameters also plans with them, building every model on the meta device.)"""
    path = PARAMETERS / profile / f"{stem}.yaml"
    if not path.is_file():
        raise ConfigError(f"no parameter file {_shown(path)} for notebook {stem} "
                          f"in profile {profile}; create it (copy another profile's)")
    defaults = notebook_defaults(stem)
    given = _load_with_includes(path)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"{_shown(path)}: unknown parameter {unknown[0]!r} for {stem}; "
                          f"valid: {', '.join(defaults)}")
    if "profile" in given:
        raise ConfigError(f"{_shown(path)}: 'profile' is set by the build (it names this folder); remove it")
    params = _merge(defaults, given)
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
