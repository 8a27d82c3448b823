"""Tiles from a folder of class subfolders, or a .zip of one (read in place, never extracted).

Layout: ROOT/<class>/<tiles>, where ROOT is the folder or zip itself, or its only top-level
directory when that holds class folders rather than tiles (the Kather zip has
`Kather_texture_2016_image_tiles_5000/01_TUMOR/...`). Tiles may sit in subfolders of a class
folder. Files directly in ROOT (README.txt, .csv) are ignored; hidden files (`.DS_Store`,
`._*`, `Thumbs.db`, `__MACOSX/`) are ignored everywhere. Inside a class folder, a file
without an image extension or one that fails to decode is a bad file: an error, or skipped
with `spec.data.skip_bad_files=True`. Tile ids are paths relative to ROOT with `/`, so a
folder and its zip give the same ids.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from data_pipeline.classes import check_unique, select_classes
from data_pipeline.errors import DataError
from data_pipeline.images import (
    IMAGE_EXTENSIONS,
    UndecodableImage,
    decode_image,
    is_image_name,
    resize_square,
)
from data_pipeline.sources.tiles import SourceTiles, stack_tiles

_IGNORED_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}


def _is_hidden(part: str) -> bool:
    """True for OS clutter that is never data (dot files, AppleDouble `._*`, Thumbs.db)."""
    return part.startswith(".") or part.lower() in _IGNORED_NAMES


def _visible(paths: Sequence[str]) -> list[str]:
    """The paths none of whose components is hidden."""
    return [p for p in paths if not any(_is_hidden(part) for part in p.split("/"))]


def _list_folder(root: str) -> tuple[list[str], list[str]]:
    """Relative `/`-separated paths of all files, and of all folders, below `root`."""
    files, folders = [], []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not _is_hidden(d)]
        relative = os.path.relpath(directory, root)
        for name in names:
            path = name if relative == "." else os.path.join(relative, name)
            files.append(path.replace(os.sep, "/"))
        if relative != ".":
            folders.append(relative.replace(os.sep, "/"))
    return files, folders


def _empty_class_folders(folders: list[str], prefix: str, with_files: set[str]) -> list[str]:
    """Class-level folders (directly under the root `prefix`) that hold no visible file."""
    inside = [f[len(prefix) + 1 :] if prefix else f for f in folders if not prefix or f.startswith(prefix + "/")]
    return sorted({f for f in inside if f and "/" not in f} - with_files)


def _read_file(path: str) -> bytes:
    """The bytes of file `path`."""
    with open(path, "rb") as handle:
        return handle.read()


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


@contextlib.contextmanager
def _open_tree(path: str) -> Iterator[tuple[list[str], Callable[[str], bytes], Callable[[str], str]]]:
    """Yield (file paths, folder paths, read(path) -> bytes, display(path) -> str) for a folder or zip."""
    if os.path.isdir(path):
        yield (
            *_list_folder(path),
            lambda rel: _read_file(os.path.join(path, rel)),
            lambda rel: os.path.join(path, rel),
        )
        return
    if not os.path.exists(path):
        raise DataError(
            f"spec.data.source folder '{path}' does not exist; give a folder of class "
            "subfolders or a .zip of one"
        )
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"spec.data.source '{path}' is a file but not a .zip; give a folder of class "
            "subfolders or a .zip of one"
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"cannot open zip file '{path}': {error}") from error
    with archive:
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
        folders = [info.filename.rstrip("/") for info in archive.infolist() if info.is_dir()]
        yield names, folders, archive.read, lambda rel: f"{path}:{rel}"


def _bad_file(display: str, reason: str) -> DataError:
    """The error for one unusable file inside a class folder."""
    return DataError(
        f"bad file '{display}': {reason}; remove it or set spec.data.skip_bad_files=True "
        "to skip such files"
    )


def load_folder(
    path: str,
    requested_classes: Sequence[str] | None,
    image_size: int | None,
    skip_bad_files: bool,
) -> SourceTiles:
    """Decode the tiles of the selected classes under folder or zip `path`."""
    with _open_tree(path) as (all_paths, all_folders, read, display):
        prefix, paths = _find_root(_visible(all_paths))
        by_folder: dict[str, list[str]] = {}
        for rel in paths:
            if "/" in rel:
                folder = rel.split("/", 1)[0]
                by_folder.setdefault(folder, []).append(rel)
        if not by_folder:
            raise DataError(
                f"no class subfolders with files in '{path}'; expected "
                f"<root>/<class>/<tile>{'|'.join(IMAGE_EXTENSIONS)}"
            )
        empty = _empty_class_folders(_visible(all_folders), prefix, set(by_folder))
        if empty and requested_classes is None:
            raise DataError(
                f"class folder(s) {', '.join(empty)} in '{path}' hold no files; remove them, or list the "
                "classes to use in spec.data.classes"
            )
        folders = sorted(by_folder)
        canonical = check_unique(folders, f"class folders of '{path}'")
        where = f"'{path}'"
        classes = select_classes(canonical, requested_classes, f"the class folders of {where}")
        folder_of = dict(zip(canonical, folders))

        images, labels, ids, skipped = [], [], [], []
        for label, name in enumerate(classes):
            for rel in sorted(by_folder[folder_of[name]]):
                inner = f"{prefix}/{rel}" if prefix else rel
                try:
                    if not is_image_name(rel):
                        raise UndecodableImage(
                            f"not an image (supported extensions: {' '.join(IMAGE_EXTENSIONS)})"
                        )
                    image = decode_image(read(inner), rel)
                except (UndecodableImage, OSError, zipfile.BadZipFile) as error:
                    if not skip_bad_files:
                        raise _bad_file(display(inner), str(error)) from error
                    skipped.append(rel)
                    continue
                images.append(resize_square(image, image_size) if image_size else image)
                labels.append(label)
                ids.append(rel)
    stacked = stack_tiles(images, ids, where)
    return SourceTiles(
        images=stacked,
        labels=np.asarray(labels, dtype=np.int32),
        ids=tuple(ids),
        classes=classes,
        skipped_files=tuple(skipped),
    )
