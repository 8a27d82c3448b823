"""Tiles from a TFDS dataset (study default: `colorectal_histology`), read through
`tfds.data_source` (array_record random access; no TensorFlow needed to read).

Only the 'train' split is read (colorectal_histology has no other); our own split comes later.
Building the dataset needs TensorFlow and internet, so it is only tried when TensorFlow is
installed; otherwise, or when building fails, one DataError says how to proceed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from data_pipeline.classes import check_unique, select_classes
from data_pipeline.errors import DataError
from data_pipeline.images import UndecodableImage, resize_square, to_rgb8
from data_pipeline.sources.tiles import SourceTiles, stack_tiles

KATHER_ZIP = "Kather_texture_2016_image_tiles_5000.zip"


def _tensorflow_available() -> bool:
    """True if TensorFlow can be imported (TFDS needs it to build datasets)."""
    return importlib.util.find_spec("tensorflow") is not None


def _first_line(error: BaseException) -> str:
    """The first line of an exception message (TFDS messages can run to pages)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _not_available(name: str, data_dir: str, reason: str) -> DataError:
    """The one error for a TFDS dataset that is not prepared and cannot be prepared here."""
    return DataError(
        f"TFDS dataset '{name}' is not available in '{data_dir}' ({reason}); either prepare it "
        "on a machine with internet (pip install -e '.[tfds]' adds TensorFlow CPU, then run "
        "this again there; copy the data folder back and set spec.data.tfds_data_dir), or "
        f"download {KATHER_ZIP} from Zenodo record 53169 and set "
        f"spec.data.source=folder:/path/{KATHER_ZIP}, or run the offline demo specs/demo.py"
    )


def _open_train_split(name: str, data_dir: str | None) -> tuple[Any, Any]:
    """(random-access source of the 'train' split, DatasetInfo); prepares it if it can."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - tfds is a core dependency
        raise DataError("spec.data.source=tfds:... needs tensorflow-datasets: pip install -e .") from error
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # unknown name, bad data_dir, ...
        reason = _first_line(error)
        raise DataError(f"spec.data.source=tfds:{name}: TFDS cannot load it ({reason})") from error
    where = str(builder.data_dir)
    try:
        return builder.as_data_source(split="train"), builder.info
    except Exception as error:  # not prepared, or prepared in a format without random access
        if builder.is_prepared():
            raise DataError(
                f"TFDS dataset '{name}' at '{where}' cannot be read with random access "
                f"({_first_line(error)}); "
                "prepare it with file_format='array_record' in another spec.data.tfds_data_dir"
            ) from error
    if not _tensorflow_available():
        raise _not_available(name, where, "not prepared, and building it needs TensorFlow")
    try:
        builder.download_and_prepare(file_format="array_record")
        return builder.as_data_source(split="train"), builder.info
    except Exception as error:  # offline, download blocked, ...
        raise _not_available(name, where, f"preparing it failed: {_first_line(error)}") from error


def _text(value: Any) -> str:
    """A TFDS Text feature value as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_tfds(
    name: str,
    data_dir: str | None,
    requested_classes: Sequence[str] | None,
    image_size: int | None,
) -> SourceTiles:
    """Decode the tiles of the selected classes of TFDS dataset `name`."""
    source, info = _open_train_split(name, data_dir)
    features = info.features
    if "image" not in features or "label" not in features:
        raise DataError(
            f"TFDS dataset '{name}' has no 'image' and 'label' features; it is not a tile classification set"
        )
    where = f"TFDS dataset '{name}'"
    available = check_unique(list(features["label"].names), f"labels of {where}")
    classes = select_classes(available, requested_classes, where)
    new_label = {available.index(c): i for i, c in enumerate(classes)}
    has_filename = "filename" in features

    images, labels, ids = [], [], []
    for index in range(len(source)):
        example = source[index]
        label = new_label.get(int(example["label"]))
        if label is None:
            continue
        tile_id = _text(example["filename"]) if has_filename else f"train/{index}"
        try:
            image = to_rgb8(np.asarray(example["image"]))
        except UndecodableImage as error:
            raise DataError(f"{where}: example '{tile_id}' is not an image ({error})") from error
        images.append(resize_square(image, image_size) if image_size else image)
        labels.append(label)
        ids.append(tile_id)
    return SourceTiles(
        images=stack_tiles(images, ids, where),
        labels=np.asarray(labels, dtype=np.int32),
        ids=tuple(ids),
        classes=classes,
    )
