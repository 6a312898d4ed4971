"""labcore: shared code for the lab's reproducible reports (data, models, training, probes, plots, reports)."""
from labcore.core.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from labcore.core.data import DataNotFoundError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataConfig", "DataNotFoundError", "ModelConfig", "RunConfig", "TrainConfig"]
