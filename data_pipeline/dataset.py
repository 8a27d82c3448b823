"""`load_dataset(spec.data)`: read the source, select classes, split, and return numpy arrays."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import numpy as np

from data_pipeline.device import AUGMENT_OPS, NORMALIZE_MODES
from data_pipeline.errors import DataError
from data_pipeline.sources.folder_source import load_folder
from data_pipeline.sources.synthetic import load_synthetic
from data_pipeline.sources.tfds_source import load_tfds
from data_pipeline.sources.tiles import SourceTiles
from data_pipeline.split import split_indices

logger = logging.getLogger(__name__)

# Keys of spec.data applied on device at every step: they leave the loaded tiles as they are.
DEVICE_KEYS = ("augment", "normalize")
SOURCE_FORMS = "'tfds:colorectal_histology' (or tfds:NAME), 'folder:PATH' (folder or .zip) or 'synthetic'"


@dataclasses.dataclass(frozen=True)
class Split:
    """One of train/val/test: images, labels and stable tile ids, row-aligned."""

    images: np.ndarray  # uint8 (N, H, W, 3), RGB
    labels: np.ndarray  # int32 (N,), index into TileDataset.classes
    ids: tuple[str, ...]  # path relative to the folder/zip root, TFDS filename, or synthetic/<class>/<k>


@dataclasses.dataclass(frozen=True)
class TileDataset:
    """The three splits plus what they were made from."""

    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]  # canonical lower-case names in label order
    source: str  # "tfds:colorectal_histology", "folder:/abs/path" or "synthetic"
    synthetic: bool
    image_size: tuple[int, int]  # (H, W) of every image
    skipped_files: tuple[str, ...]  # bad files skipped with skip_bad_files=True


def _get(cfg: Any, key: str, default: Any) -> Any:
    """`cfg.key` for a ConfigDict or a mapping, `default` when absent."""
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _positive_int_or_none(value: Any, key: str) -> int | None:
    """Validate an optional positive integer key."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"spec.data.{key} must be a positive integer or None, got {value!r}")
    return int(value)


def _check_device_options(cfg: Any) -> None:
    """Fail before decoding anything if augment/normalize name something unknown."""
    ops = _get(cfg, "augment", ())
    ops = (ops,) if isinstance(ops, str) else tuple(ops or ())
    for op in ops:
        if op not in AUGMENT_OPS:
            raise DataError(
                f"unknown augmentation '{op}' in spec.data.augment; known: {', '.join(AUGMENT_OPS)}"
            )
    mode = _get(cfg, "normalize", "unit")
    if mode not in NORMALIZE_MODES:
        raise DataError(f"unknown spec.data.normalize '{mode}'; known: {', '.join(NORMALIZE_MODES)}")


def _read_source(cfg: Any, source: str, image_size: int | None) -> tuple[str, SourceTiles]:
    """Dispatch on the `spec.data.source` string; returns (canonical source, tiles)."""
    classes = _get(cfg, "classes", None)
    if not isinstance(source, str):
        raise DataError(f"spec.data.source must be a string, one of {SOURCE_FORMS}; got {source!r}")
    if source == "synthetic":
        per_class = _get(cfg, "synthetic_per_class", 625)
        size = _get(cfg, "synthetic_size", 150)
        return source, load_synthetic(classes, per_class, size, image_size)
    kind, _, target = source.partition(":")
    if kind == "tfds" and target:
        data_dir = _get(cfg, "tfds_data_dir", None)
        data_dir = os.path.expanduser(data_dir) if isinstance(data_dir, str) else data_dir
        return source, load_tfds(target, data_dir, classes, image_size)
    if kind == "folder" and target:
        path = os.path.abspath(os.path.expanduser(target))
        skip = _get(cfg, "skip_bad_files", False)
        if not isinstance(skip, bool):
            raise DataError(f"spec.data.skip_bad_files must be True or False, got {skip!r}")
        return f"folder:{path}", load_folder(path, classes, image_size, skip)
    raise DataError(f"unknown spec.data.source '{source}'; use {SOURCE_FORMS}")


def _subset(tiles: SourceTiles, indices: np.ndarray) -> Split:
    """The rows `indices` of `tiles` as a Split."""
    return Split(
        images=tiles.images[indices],
        labels=tiles.labels[indices].astype(np.int32),
        ids=tuple(tiles.ids[i] for i in indices),
    )


def load_dataset(cfg: Any) -> TileDataset:
    """Load, select and split the tiles described by `cfg` (= spec.data); DataError if impossible."""
    _check_device_options(cfg)
    image_size = _positive_int_or_none(_get(cfg, "image_size", None), "image_size")
    source, tiles = _read_source(cfg, _get(cfg, "source", None), image_size)
    if len(tiles.classes) < 2:
        raise DataError(
            f"spec.data.classes selects a single class ('{tiles.classes[0]}') of {source}; a classifier "
            "needs at least two: list more classes, or None for all"
        )
    if tiles.skipped_files:
        logger.warning(
            "skipped %d bad files in %s (spec.data.skip_bad_files=True): %s",
            len(tiles.skipped_files), source, ", ".join(tiles.skipped_files),
        )
    split, seed = _get(cfg, "split", (0.7, 0.15, 0.15)), _get(cfg, "split_seed", 0)
    train, val, test = split_indices(tiles.labels, tiles.ids, tiles.classes, split, seed)
    return TileDataset(
        train=_subset(tiles, train),
        val=_subset(tiles, val),
        test=_subset(tiles, test),
        classes=tiles.classes,
        source=source,
        synthetic=source == "synthetic",
        image_size=(int(tiles.images.shape[1]), int(tiles.images.shape[2])),
        skipped_files=tiles.skipped_files,
    )


def _tiles_key(cfg: Any) -> str:
    """What `load_dataset(cfg)` returns depends on this alone: spec.data without its device keys."""
    items = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return json.dumps({k: v for k, v in items.items() if k not in DEVICE_KEYS}, sort_keys=True, default=repr)


class LastDataset:
    """`load_dataset` that reuses the last dataset it loaded while spec.data asks for the same tiles.

    A study's rows differ in model and normalisation, not in their tiles: this decodes a large
    folder once per study instead of once per row and seed.
    """

    def __init__(self) -> None:
        self._key: str | None = None
        self._dataset: TileDataset | None = None

    def load(self, cfg: Any) -> TileDataset:
        """The dataset of `cfg`, reused if the last call's `cfg` differed only in augment/normalize."""
        _check_device_options(cfg)
        key = _tiles_key(cfg)
        if key != self._key:
            self._key, self._dataset = None, None  # let the old tiles go before decoding new ones
            self._dataset = load_dataset(cfg)
            self._key = key
        return self._dataset
