"""Histopathology tiles for flaxbench: loading, splitting, and on-device batching/augmentation.

A leaf package: it never imports flaxbench.
"""

from data_pipeline.classes import canonical_class_name
from data_pipeline.dataset import SPLIT_NAMES, Split, TileDataset, load_dataset
from data_pipeline.device import augment, eval_batch_indices, normalize, train_batch_indices
from data_pipeline.errors import DataError
from data_pipeline.images import load_image
from data_pipeline.last_dataset import LastDataset

__all__ = [
    "SPLIT_NAMES",
    "DataError",
    "LastDataset",
    "Split",
    "TileDataset",
    "augment",
    "canonical_class_name",
    "eval_batch_indices",
    "load_dataset",
    "load_image",
    "normalize",
    "train_batch_indices",
]
