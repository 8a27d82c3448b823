"""Which source `spec.data.source` names, and how to read it: all at once, by its own splits, or listed first."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.sources.folder_source import decode_listed, listed_tiles, load_folder, open_class_folders
from data_pipeline.sources.synthetic import load_synthetic
from data_pipeline.sources.tfds_source import decode_tfds_tiles, load_tfds, open_tfds_split
from data_pipeline.sources.tiles import SourceTiles

SOURCE_FORMS = "'tfds:colorectal_histology' (or tfds:NAME), 'folder:PATH' (folder or .zip) or 'synthetic'"


def spec_value(cfg: Any, key: str, default: Any) -> Any:
    """`cfg.key` for a ConfigDict or a mapping, `default` when absent."""
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def folder_path(cfg: Any, target: str) -> tuple[str, bool]:
    """The absolute folder or zip path of a `folder:` source, and spec.data.skip_bad_files."""
    return os.path.abspath(os.path.expanduser(target)), _skip_bad_files(cfg)


def read_source(cfg: Any, source: str, image_size: int | None) -> tuple[str, SourceTiles]:
    """Dispatch on the `spec.data.source` string; returns (canonical source, tiles)."""
    classes = spec_value(cfg, "classes", None)
    if not isinstance(source, str):
        raise DataError(f"spec.data.source must be a string, one of {SOURCE_FORMS}; got {source!r}")
    if source == "synthetic":
        per_class = spec_value(cfg, "synthetic_per_class", 625)
        size = spec_value(cfg, "synthetic_size", 150)
        return source, load_synthetic(classes, per_class, size, image_size)
    kind, _, target = source.partition(":")
    if kind == "folder" and target:
        path, skip = folder_path(cfg, target)
        return f"folder:{path}", load_folder(path, classes, image_size, skip)
    if kind == "tfds" and target:
        return source, load_tfds(target, _tfds_data_dir(cfg), classes, image_size, _skip_bad_files(cfg))
    raise DataError(f"unknown spec.data.source '{source}'; use {SOURCE_FORMS}")


def _skip_bad_files(cfg: Any) -> bool:
    """spec.data.skip_bad_files, checked."""
    skip = spec_value(cfg, "skip_bad_files", False)
    if not isinstance(skip, bool):
        raise DataError(f"spec.data.skip_bad_files must be True or False, got {skip!r}")
    return skip


def _tfds_data_dir(cfg: Any) -> str | None:
    """spec.data.tfds_data_dir with `~` expanded (None: TFDS's default)."""
    data_dir = spec_value(cfg, "tfds_data_dir", None)
    return os.path.expanduser(data_dir) if isinstance(data_dir, str) else data_dir


def split_reader(
    cfg: Any, source: Any, image_size: int | None, split: Sequence[Any]
) -> tuple[str, Callable[[str, Sequence[str] | None], SourceTiles], Callable[[str], str]]:
    """(canonical source, read(split name, classes) -> tiles, where(split name) -> text) for named splits."""
    kind, _, target = source.partition(":") if isinstance(source, str) else ("", "", "")
    if kind == "folder" and target:
        path, skip = folder_path(cfg, target)
        return (f"folder:{path}", lambda name, classes: load_folder(path, classes, image_size, skip, within=name),
                lambda name: f"'{path}' folder '{name}'")
    if kind == "tfds" and target:
        data_dir, skip = _tfds_data_dir(cfg), _skip_bad_files(cfg)
        return (source, lambda name, classes: load_tfds(target, data_dir, classes, image_size, skip, split=name),
                lambda name: f"TFDS dataset '{target}' split '{name}'")
    raise DataError(f"spec.data.split {tuple(split)!r} names splits of the source, which only 'folder:PATH' (its "
                    f"folders) and 'tfds:NAME' sources have; for {source!r} give three numbers, e.g. (0.7, 0.15, 0.15)")


# (tiles listed, images None; decode(ids) -> their images) of one source split, while it is open
Listing = tuple[SourceTiles, Callable[[Sequence[str]], np.ndarray]]
OpenListing = Callable[[str | None, Sequence[str] | None], contextlib.AbstractContextManager[Listing]]


def listing_of(cfg: Any, source: Any, image_size: int | None) -> tuple[str, OpenListing, Callable[[str], str]] | None:
    """(canonical source, open(split folder or None, classes), where(split name)) if `source` can be listed; else None.

    Folders, zips and TFDS datasets can: their tiles' ids and labels are known before any tile is
    decoded. Not with spec.data.skip_bad_files: which files are bad, and so which tiles each split
    holds, is only known once every tile has been decoded.
    """
    kind, _, target = source.partition(":") if isinstance(source, str) else ("", "", "")
    if _skip_bad_files(cfg):
        return None
    if kind == "folder" and target:
        path, _ = folder_path(cfg, target)

        @contextlib.contextmanager
        def open_folder(within: str | None, classes: Sequence[str] | None) -> Iterator[Listing]:
            with open_class_folders(path, classes, within) as folders:
                yield listed_tiles(folders), functools.partial(decode_listed, folders, image_size=image_size)

        return f"folder:{path}", open_folder, lambda name: f"'{path}' folder '{name}'"
    if kind == "tfds" and target:
        data_dir = _tfds_data_dir(cfg)

        @contextlib.contextmanager
        def open_tfds(within: str | None, classes: Sequence[str] | None) -> Iterator[Listing]:
            split = open_tfds_split(target, data_dir, classes, within)
            yield split.tiles, functools.partial(decode_tfds_tiles, split, image_size=image_size)

        return source, open_tfds, lambda name: f"TFDS dataset '{target}' split '{name}'"
    return None
