"""Tiles from a TFDS dataset (study default: `colorectal_histology`), read through
`tfds.data_source` (array_record random access; no TensorFlow needed to read).

Only the 'train' split is read (colorectal_histology has no other) and our own split comes later,
unless spec.data.split names the dataset's own splits: `load_tfds(..., split="test")` reads one of
them, with ids prefixed by its name.
Building the dataset needs TensorFlow and internet, so it is only tried when TensorFlow is
installed; otherwise, or when building fails, one DataError says how to proceed.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from data_pipeline.classes import check_unique, select_classes
from data_pipeline.errors import DataError
from data_pipeline.images import UndecodableImage, resize_square, to_rgb8
from data_pipeline.sources.tiles import SourceTiles, collect_tiles
from data_pipeline.split import named_split_hint

logger = logging.getLogger(__name__)

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


def _open_split(name: str, data_dir: str | None, split: str) -> tuple[Any, Any]:
    """(random-access source of `split`, DatasetInfo); prepares the dataset if it can."""
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
    _check_split_exists(name, builder.info, split)
    try:
        return builder.as_data_source(split=split), builder.info
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
    except Exception as error:  # offline, download blocked, ...
        raise _not_available(name, where, f"preparing it failed: {_first_line(error)}") from error
    _check_split_exists(name, builder.info, split)  # its splits are known once it is prepared
    try:
        return builder.as_data_source(split=split), builder.info
    except Exception as error:
        raise _not_available(name, where, f"reading it after preparing failed: {_first_line(error)}") from error


def _check_split_exists(name: str, info: Any, split: str) -> None:
    """DataError listing the dataset's splits if it has none called `split` (known once it is prepared)."""
    splits = list(info.splits) if info.splits else []
    if splits and split not in splits:
        raise DataError(f"TFDS dataset '{name}' has no split '{split}', which spec.data.split names; its splits: "
                        f"{', '.join(splits)}")


def _text(value: Any) -> str:
    """A TFDS Text feature value as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_tfds(
    name: str,
    data_dir: str | None,
    requested_classes: Sequence[str] | None,
    image_size: int | None,
    split: str | None = None,
) -> SourceTiles:
    """Decode the tiles of the selected classes of TFDS dataset `name` (of its `split`, default 'train')."""
    source, info = _open_split(name, data_dir, split or "train")
    if split is None and list(info.splits or []) not in ([], ["train"]):
        hint = named_split_hint(list(info.splits))
        logger.warning(
            "TFDS dataset '%s' has splits of its own (%s); numbers in spec.data.split re-split only its 'train'%s",
            name, ", ".join(info.splits), f"; to use its splits set {hint}" if hint else "",
        )
    features = info.features
    if "image" not in features or "label" not in features:
        raise DataError(
            f"TFDS dataset '{name}' has no 'image' and 'label' features; it is not a tile classification set"
        )
    where = f"TFDS dataset '{name}'" + (f" split '{split}'" if split else "")
    available = check_unique(list(features["label"].names), f"labels of {where}")
    classes = select_classes(available, requested_classes, where)
    new_label = {available.index(c): i for i, c in enumerate(classes)}
    has_filename = "filename" in features

    def selected_tiles() -> Iterator[tuple[str, int, np.ndarray]]:
        for index in range(len(source)):
            example = source[index]
            label = new_label.get(int(example["label"]))
            if label is None:
                continue
            tile_id = _text(example["filename"]) if has_filename else f"{split or 'train'}/{index}"
            tile_id = f"{split}/{tile_id}" if split and has_filename else tile_id
            try:
                image = to_rgb8(np.asarray(example["image"]))
            except UndecodableImage as error:
                raise DataError(f"{where}: example '{tile_id}' is not an image ({error})") from error
            yield tile_id, label, resize_square(image, image_size) if image_size else image

    images, labels, ids = collect_tiles(selected_tiles(), len(source), where)
    return SourceTiles(
        images=images,
        labels=labels,
        ids=tuple(ids),
        classes=classes,
    )
