"""Tiles from a folder of class subfolders, or a .zip of one (read in place, never extracted).

Layout: ROOT/<class>/<tiles>, where ROOT is the folder or zip itself, or its only top-level
directory when that holds class folders rather than tiles (the Kather zip has
`Kather_texture_2016_image_tiles_5000/01_TUMOR/...`). Tiles may sit in subfolders of a class
folder; symbolic links to folders are followed. Files directly in ROOT (README.txt, .csv)
are ignored; hidden files (`.DS_Store`, `._*`, `Thumbs.db`, `__MACOSX/`) are ignored
everywhere (file_tree.py lists and reads the folder or zip). Inside a class folder, a file
without an image extension or one that fails to decode is a bad file: an error, or skipped with
`spec.data.skip_bad_files=True`. Tile ids are paths relative to ROOT with `/`, so a folder and
its zip give the same ids.

A ROOT whose folders are all split names (train/, val/, test/, ...) holds a split of its own:
`load_folder(..., within="train")` reads ROOT/train/<class>/<tiles> (ids keep the `train/`), and
reading such a ROOT as class folders is an error that says how to use its split.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from data_pipeline.classes import canonical_class_name, check_unique, select_classes
from data_pipeline.errors import BadFileError, DataError
from data_pipeline.images import (
    IMAGE_EXTENSIONS,
    UndecodableImage,
    center_crop,
    decode_image,
    decode_in_order,
    is_image_name,
    resize_square,
)
from data_pipeline.sources.file_tree import open_tree, visible
from data_pipeline.sources.tiles import SourceTiles, collect_tiles
from data_pipeline.split import SPLIT_WORDS, named_split_hint

logger = logging.getLogger(__name__)


def _empty_class_folders(folders: list[str], prefix: str, with_files: set[str]) -> list[str]:
    """Class-level folders (directly under the root `prefix`) that hold no visible file."""
    inside = [f[len(prefix) + 1 :] if prefix else f for f in folders if not prefix or f.startswith(prefix + "/")]
    return sorted({f for f in inside if f and "/" not in f} - with_files)


def _find_root(paths: list[str]) -> tuple[str, list[str]]:
    """Descend into a single top-level directory that holds class folders, not tiles."""
    top_dirs = {p.split("/", 1)[0] for p in paths if "/" in p}
    if len(top_dirs) != 1:
        return "", paths
    (top,) = top_dirs
    inner = [p[len(top) + 1 :] for p in paths if p.startswith(top + "/")]
    holds_tiles = any("/" not in p and is_image_name(p) for p in inner)
    holds_folders = any("/" in p for p in inner)
    if holds_folders and not holds_tiles:
        return top, inner
    return "", paths


def _check_requested_not_empty(requested: Sequence[str] | None, empty: list[str], path: str) -> None:
    """DataError if a requested class is one of the class folders that hold no files."""
    if requested is None or isinstance(requested, str):
        return
    empty_by_name = {canonical_class_name(folder): folder for folder in empty}
    for name in requested:
        folder = empty_by_name.get(canonical_class_name(str(name)))
        if folder is not None:
            raise DataError(
                f"class '{name}' from spec.data.classes: its folder '{folder}' in '{path}' holds no files"
            )


def _one_class_folder(path: str, prefix: str, folder: str, files: list[str]) -> DataError:
    """The error for a source with a single class folder, with a hint if that folder looks like the root."""
    hint = ""
    subfolders = sorted({f.split("/")[1] for f in files if f.count("/") >= 2})
    if len(subfolders) > 1:
        loose = [f for f in files if f.count("/") == 1]
        fixes = []
        if os.path.isdir(path):
            fixes.append(f"point spec.data.source at '{os.path.join(path, prefix, folder)}'")
        else:
            fixes.append(f"zip the folders in '{'/'.join(filter(None, (prefix, folder)))}/' at the archive's top")
        if loose:
            fixes.append(f"move the files directly in it ({', '.join(loose[:2])}) elsewhere")
        listed = ", ".join(subfolders[:4]) + (", ..." if len(subfolders) > 4 else "")
        hint = f" Its files sit in subfolders ({listed}): if these are the classes, {' or '.join(fixes)}."
    return DataError(
        f"'{path}' holds a single class folder, '{folder}'; training needs at least two classes.{hint}"
    )


def _enter_split_folder(path: str, prefix: str, paths: list[str], name: str) -> tuple[str, list[str]]:
    """(prefix, paths) below the split folder `name` of the root; DataError naming the folders there if it is missing."""
    inner = [p[len(name) + 1 :] for p in paths if p.startswith(name + "/")]
    if not inner:
        folders = sorted({p.split("/", 1)[0] for p in paths if "/" in p})
        raise DataError(
            f"'{path}' has no folder '{name}' with files, which spec.data.split names; its folders: "
            f"{', '.join(folders) or 'none'}"
        )
    return (f"{prefix}/{name}" if prefix else name), inner


def _refuse_split_folders(path: str, folders: list[str]) -> None:
    """DataError if the class folders of `path` are really split folders (train/, test/, ...)."""
    names = [canonical_class_name(folder) for folder in folders]
    if len(folders) < 2 or not all(name in SPLIT_WORDS for name in names):
        return
    hint = named_split_hint(folders)
    fix = (f"to train on its own split set {hint}, or point spec.data.source at one folder of class folders" if hint
           else "point spec.data.source at a folder of class folders")
    raise DataError(f"'{path}' holds split folders ({', '.join(folders)}), not class folders: {fix}")


def _files_by_class_folder(path: str, paths: list[str]) -> dict[str, list[str]]:
    """The files of each class folder (first path component) of root-relative `paths`; DataError if none."""
    by_folder: dict[str, list[str]] = {}
    for rel in paths:
        if "/" in rel:
            by_folder.setdefault(rel.split("/", 1)[0], []).append(rel)
    if not by_folder:
        raise DataError(
            f"no class subfolders with files in '{path}'; expected "
            f"<root>/<class>/<tile>{'|'.join(IMAGE_EXTENSIONS)}"
        )
    return by_folder


def class_folder_names(path: str) -> list[str]:
    """The class folders with files of folder or zip `path`, as `load_folder` finds them, sorted."""
    with open_tree(path) as (all_paths, _folders, _read, _display):
        _prefix, paths = _find_root(visible(all_paths))
        return sorted(_files_by_class_folder(path, paths))


@dataclasses.dataclass(frozen=True)
class ListedTile:
    """One file of a selected class folder, not yet read: its label, id, name in messages, and reader."""

    label: int
    id: str
    display: str
    read: Callable[[], bytes]


@dataclasses.dataclass(frozen=True)
class ClassFolders:
    """The selected classes of a folder or zip source and their files, readable while the source is open."""

    classes: tuple[str, ...]
    tiles: list[ListedTile]
    where: str


@contextlib.contextmanager
def open_class_folders(path: str, requested_classes: Sequence[str] | None, within: str | None = None,
                       min_classes: int = 2) -> Iterator[ClassFolders]:
    """The files of the selected classes under folder or zip `path` (under its split folder `within`), by class.

    A source with fewer than `min_classes` class folders is refused (training needs two; testing a
    trained run, one will do). The files can be read until the context ends.
    """
    with open_tree(path) as (all_paths, all_folders, read, display):
        prefix, paths = _find_root(visible(all_paths))
        if within is not None:
            within = within.strip("/")
            prefix, paths = _enter_split_folder(path, prefix, paths, within)
        id_prefix = f"{within}/" if within is not None else ""
        by_folder = _files_by_class_folder(path, paths)
        if within is None:
            _refuse_split_folders(path, sorted(by_folder))
        empty = _empty_class_folders(visible(all_folders), prefix, set(by_folder))
        if empty and requested_classes is None:
            raise DataError(
                f"class folder(s) {', '.join(empty)} in '{path}' hold no files; remove them, or list the "
                "classes to use in spec.data.classes"
            )
        _check_requested_not_empty(requested_classes, empty, path)
        folders = sorted(by_folder)
        if len(folders) < min_classes:
            raise _one_class_folder(path, prefix, folders[0], by_folder[folders[0]])
        where = f"'{path}'" if within is None else f"'{path}' folder '{within}'"
        canonical = check_unique(folders, f"class folders of {where}")
        classes = select_classes(canonical, requested_classes, f"the class folders of {where}")
        folder_of = dict(zip(canonical, folders))
        tiles = []
        for label, name in enumerate(classes):
            for rel in sorted(by_folder[folder_of[name]]):
                inner = f"{prefix}/{rel}" if prefix else rel
                tiles.append(ListedTile(label, id_prefix + rel, display(inner), functools.partial(read, inner)))
        yield ClassFolders(tuple(classes), tiles, where)


def decode_listed_tile(tile: ListedTile, image_size: int | None,
                       crop: int | None = None) -> tuple[np.ndarray, str | None] | Exception:
    """(uint8 RGB tile at `image_size`, 'WxH' it was resized from or None), or the error that makes it a bad file.

    `crop` keeps the central `crop` px square before any resize (a tile smaller than that is a DataError).
    """
    try:
        if not is_image_name(tile.id):
            raise UndecodableImage(f"not an image (supported extensions: {' '.join(IMAGE_EXTENSIONS)})")
        image = decode_image(tile.read(), tile.id)
    except (UndecodableImage, OSError, zipfile.BadZipFile) as error:
        return error
    if crop:
        image = center_crop(image, crop, tile.display)
    if not image_size or image.shape[:2] == (image_size, image_size):
        return image, None
    return resize_square(image, image_size), f"{image.shape[1]}x{image.shape[0]}"


def bad_file(tile: ListedTile, error: Exception) -> BadFileError:
    """The error for a tile that is not a readable image, naming it and the setting that skips such files."""
    return BadFileError(tile.display, str(error), "remove it or set spec.data.skip_bad_files=True to skip such files")


def decode_tiles(tiles: Sequence[ListedTile], image_size: int | None, crop: int | None, skip_bad_files: bool,
                 skipped: list[tuple[ListedTile, Exception]], resized_from: collections.Counter,
                 ) -> Iterator[tuple[ListedTile, np.ndarray]]:
    """(tile, uint8 RGB image) of each of `tiles` in order, decoded on one thread per usable core.

    A file that is not a readable image is a DataError naming it, or with `skip_bad_files` is put in
    `skipped` with its error. `resized_from` counts the tiles resized to `image_size` by their size
    before (after `crop`, the central square kept first).
    """
    decode = functools.partial(decode_listed_tile, image_size=image_size, crop=crop)
    for tile, outcome in zip(tiles, decode_in_order(decode, tiles)):
        if isinstance(outcome, Exception):
            if not skip_bad_files:
                raise bad_file(tile, outcome) from outcome
            skipped.append((tile, outcome))
            continue
        image, size_before = outcome
        if size_before:
            resized_from[size_before] += 1
        yield tile, image


def log_distorting_resizes(resized_from: collections.Counter, tiles: int, image_size: int | None, where: str) -> None:
    """Warn where resizing `tiles` tiles to `image_size` stretched some (not square) or mixed tile sizes (which then
    show the same tissue at different magnifications); `resized_from` counts the resized ones by 'WxH'."""
    if not resized_from:
        return
    sizes = dict(resized_from)
    if tiles > sum(sizes.values()):
        sizes[f"{image_size}x{image_size}"] = tiles - sum(sizes.values())
    stretched = {size: n for size, n in sizes.items() if len(set(size.split("x"))) > 1}
    by_count = sorted(sizes.items(), key=lambda kv: -kv[1])
    if stretched:
        example, count = max(stretched, key=stretched.get), sum(stretched.values())
        logger.warning("in %s, %d %s not square (e.g. %s px) and %s stretched to %dx%d px "
                       "(spec.data.image_size); crop them square to keep their shapes", where, count,
                       "tiles are" if count > 1 else "tile is", example, "were" if count > 1 else "was",
                       image_size, image_size)
    if len(sizes) > 1:
        logger.warning("in %s, tiles of %d sizes (%s) were resized to %dx%d px (spec.data.image_size): the same "
                       "tissue now shows at different magnifications", where, len(sizes),
                       ", ".join(f"{n} at {size}" for size, n in by_count[:4]) + (", ..." if len(by_count) > 4 else ""),
                       image_size, image_size)


def load_folder(
    path: str,
    requested_classes: Sequence[str] | None,
    image_size: int | None,
    skip_bad_files: bool,
    within: str | None = None,
    min_classes: int = 2,
    crop: int | None = None,
) -> SourceTiles:
    """Decode the tiles of the selected classes under folder or zip `path` (under its split folder `within`).

    A source with fewer than `min_classes` class folders is refused (training needs two; testing a
    trained run, one will do). `crop` keeps each tile's central `crop` px square before any resize.
    Tiles are decoded on one thread per usable core.
    """
    skipped: list[tuple[ListedTile, Exception]] = []
    resized: collections.Counter = collections.Counter()
    with open_class_folders(path, requested_classes, within, min_classes) as source:
        decoded = decode_tiles(source.tiles, image_size, crop, skip_bad_files, skipped, resized)
        images, labels, ids = collect_tiles(((tile.id, tile.label, image) for tile, image in decoded),
                                            len(source.tiles), source.where)
    log_distorting_resizes(resized, len(ids), image_size, source.where)
    return SourceTiles(
        images=images,
        labels=labels,
        ids=tuple(ids),
        classes=source.classes,
        skipped_files=tuple(tile.id for tile, _ in skipped),
        resized_from=dict(resized),
    )


def listed_tiles(source: ClassFolders) -> SourceTiles:
    """The tiles of `source` as `load_folder` would give them when none is bad, but not decoded: `images` is None."""
    return SourceTiles(
        images=None,
        labels=np.asarray([tile.label for tile in source.tiles], dtype=np.int32),
        ids=tuple(tile.id for tile in source.tiles),
        classes=source.classes,
    )


def decode_listed(source: ClassFolders, ids: Sequence[str], image_size: int | None,
                  resized_from: collections.Counter | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) images of the tiles `ids` of the open `source`, in that order; a bad file is a DataError.

    `resized_from` counts the tiles resized to `image_size` by their size before ('WxH'); without it, resizes that
    stretch or mix tile sizes are warned about here."""
    by_id = {tile.id: tile for tile in source.tiles}
    tiles = [by_id[tile_id] for tile_id in ids]
    resized = collections.Counter() if resized_from is None else resized_from
    decoded = decode_tiles(tiles, image_size, None, False, [], resized)
    images, _, _ = collect_tiles(((tile.id, tile.label, image) for tile, image in decoded), len(tiles), source.where)
    if resized_from is None:
        log_distorting_resizes(resized, len(tiles), image_size, source.where)
    return images
