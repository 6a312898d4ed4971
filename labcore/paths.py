"""Where things live: the project root, the data root, caches and the run store (all overridable by env)."""
from __future__ import annotations

import os
from pathlib import Path

# The checkout this package was imported from (labcore/ sits in it); used for defaults and provenance.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = PROJECT_ROOT / "data"


def data_root() -> tuple[Path, bool]:
    """The data root and whether labcore may download into it (only into its own default ./data)."""
    given = os.environ.get("LABCORE_DATA")
    if given:
        return Path(given).expanduser().resolve(), False
    return DEFAULT_DATA, True


def cache_dir() -> Path:
    """Decoded-tensor cache, never inside the data root: $LABCORE_CACHE or <project>/.cache/labcore."""
    return Path(os.environ.get("LABCORE_CACHE") or PROJECT_ROOT / ".cache" / "labcore").expanduser().resolve()


def runs_dir() -> Path:
    """The run store: $LABCORE_RUNS or <project>/.cache/runs."""
    return Path(os.environ.get("LABCORE_RUNS") or PROJECT_ROOT / ".cache" / "runs").expanduser().resolve()


def reports_dir() -> Path:
    """Generated reports: $LABCORE_REPORTS or <project>/reports."""
    return Path(os.environ.get("LABCORE_REPORTS") or PROJECT_ROOT / "reports").expanduser().resolve()


def check_folders(folders: dict[str, Path]) -> None:
    """Raise NotADirectoryError naming the file, before any work, where a file stands in the way of one of these
    folders ({variable: folder}: the run store, caches, reports), which labcore creates as it needs them."""
    import errno

    for variable, folder in folders.items():
        for part in [folder, *folder.parents]:
            if part.exists():
                if not part.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, f"{variable} needs a folder at {folder}", str(part))
                break
