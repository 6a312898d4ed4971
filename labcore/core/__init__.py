"""The lab itself: configs, datasets, data, models, training and probes. Imports nothing of labcore above it
(only the package's base modules: paths, files, machine)."""
