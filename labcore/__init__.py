"""labcore: shared code for the lab's reproducible reports (data, models, training, probes, plots, reports)."""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
# name -> the module that defines it; imported on first use, so that `python -m labcore --help` needs no PyTorch
_EXPORTS = {"ConfigError": "labcore.core.config", "DataConfig": "labcore.core.config",
            "ModelConfig": "labcore.core.config", "RunConfig": "labcore.core.config",
            "TrainConfig": "labcore.core.config", "DataNotFoundError": "labcore.core.data"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """`labcore.RunConfig` and the other exports, from their modules (PEP 562)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'labcore' has no attribute {name!r}")
