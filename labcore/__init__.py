"""labcore: shared code for the lab's reproducible reports (data, models, training, probes, plots, reports)."""
from .config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import DataNotFoundError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataConfig", "DataNotFoundError", "ModelConfig", "RunConfig", "TrainConfig"]
