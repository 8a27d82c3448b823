"""Histopathology tiles for flaxbench: loading, splitting, and on-device batching/augmentation.

A leaf package: it never imports flaxbench. Its names load their modules on first use, so that
the modules without JAX (groups, split, errors) can be imported where JAX is not (the report).
"""

import importlib
import importlib.util
from typing import Any

_MODULE_OF = {
    "SPLIT_NAMES": "dataset",
    "BadFileError": "errors",
    "DataError": "errors",
    "LastDataset": "last_dataset",
    "Split": "dataset",
    "TileDataset": "dataset",
    "augment": "device",
    "augment_ops": "dataset",
    "canonical_class_name": "classes",
    "eval_batch_indices": "device",
    "load_dataset": "dataset",
    "load_image": "images",
    "normalize": "device",
    "train_batch_indices": "device",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """The package's public names and its modules, each imported when first asked for."""
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"data_pipeline.{_MODULE_OF[name]}"), name)
    if importlib.util.find_spec(f"data_pipeline.{name}") is not None:
        return importlib.import_module(f"data_pipeline.{name}")
    raise AttributeError(f"module 'data_pipeline' has no attribute '{name}'")
