"""The facts about each dataset, in one table: image shape, classes, official sizes, normalisation.

A leaf module (it imports nothing from labcore), so that configs can check names and sizes and data can
load images from the same facts without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    """What labcore knows about one dataset before loading a single image."""

    shape: tuple[int, int, int]  # (C, H, W) of one image
    classes: tuple[str, ...]  # in label order
    sizes: tuple[int, int]  # official (train, test) image counts
    mean: tuple[float, ...]  # per channel, of images scaled to [0, 1] (the lab's constants, lab-reference.md "Data")
    std: tuple[float, ...]
    torchvision_dir: str  # where torchvision's own layout keeps it under the data root


DATASETS: dict[str, Dataset] = {
    "mnist": Dataset((1, 28, 28), tuple(str(i) for i in range(10)), (60_000, 10_000), (0.1307,), (0.3081,),
                     "MNIST/raw"),
    "cifar10": Dataset((3, 32, 32), ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                     "truck"), (50_000, 10_000), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                       "cifar-10-batches-py"),
}
# Views of the table for the common questions (no second home: each is computed from DATASETS).
SHAPES = {name: d.shape for name, d in DATASETS.items()}
CLASSES = {name: d.classes for name, d in DATASETS.items()}
SIZES = {name: d.sizes for name, d in DATASETS.items()}
