"""Tiles from a TFDS dataset (study default: `colorectal_histology`), read through
`tfds.data_source` (array_record random access; no TensorFlow needed to read).

A split of the dataset is listed first (labels and filenames, images left encoded: about 0.1 ms
an example), so that our own split can be made before any image is decoded; then the tiles each
split takes are decoded on one thread per core, and those of splits not needed never are.
Only the 'train' split is read (colorectal_histology has no other) and our own split comes later,
unless spec.data.split names the dataset's own splits: `open_tfds_split(..., split="test")` lists
one of them, with ids prefixed by its name.
Building the dataset needs TensorFlow and internet, so it is only tried when TensorFlow is
installed; otherwise, or when building fails, one DataError says how to proceed.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from data_pipeline.classes import check_unique, select_classes
from data_pipeline.errors import DataError
from data_pipeline.images import UndecodableImage, decode_image, decode_in_order, resize_square, to_rgb8
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
    """(random-access source of `split`, DatasetInfo); prepares the dataset if it can.

    An Image feature called 'image' is read as stored (its PNG or JPEG bytes), to be decoded later.
    """
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
    image = builder.info.features["image"] if "image" in (builder.info.features or {}) else None
    # The image bytes as stored (PNG), to list examples fast: decoded later, only for the tiles a split takes.
    decoders = {"image": tfds.decode.SkipDecoding()} if isinstance(image, tfds.features.Image) else None
    try:
        return builder.as_data_source(split=split, decoders=decoders), builder.info
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
        return builder.as_data_source(split=split, decoders=decoders), builder.info
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


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
    """The selected classes' examples of one split of a TFDS dataset, listed but not decoded."""

    tiles: SourceTiles  # labels, ids and classes; `images` None
    rows: np.ndarray  # the example index of each listed tile
    source: Any  # random-access data source; an Image feature's value comes as its stored bytes
    image_feature: Any
    where: str


def open_tfds_split(
    name: str, data_dir: str | None, requested_classes: Sequence[str] | None, split: str | None = None
) -> TfdsSplit:
    """The examples of the selected classes of TFDS dataset `name` (of its `split`, default 'train'), listed.

    Listing reads each example's label and filename but not its image, which stays encoded
    until `decode_tfds_tiles` decodes the tiles a split takes. A tile's id is its filename (after
    `split/` for a named split), or `split/index` where the dataset has no filenames or repeats one.
    """
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
    labels, filenames, rows = [], [], []
    for index in range(len(source)):
        example = source[index]
        label = new_label.get(int(example["label"]))
        if label is not None:
            labels.append(label)
            filenames.append(_text(example["filename"]) if "filename" in features else None)
            rows.append(index)
    if not rows:
        raise DataError(f"{where} has no examples in the selected classes")
    if None in filenames or len(set(filenames)) < len(filenames):  # an id must name one tile
        ids = [f"{split or 'train'}/{index}" for index in rows]
    else:
        ids = [f"{split}/{filename}" if split else filename for filename in filenames]
    tiles = SourceTiles(images=None, labels=np.asarray(labels, dtype=np.int32), ids=tuple(ids), classes=classes)
    return TfdsSplit(tiles, np.asarray(rows, dtype=np.int64), source, features["image"], where)


def _decoded_tile(stored: tuple[str, Any], image_feature: Any, image_size: int | None) -> np.ndarray | Exception:
    """The uint8 RGB tile of one example's stored image value, resized to `image_size`; or why it is no image.

    8-bit PNG or JPEG bytes are decoded as a folder's tiles are (Pillow), other image dtypes by TFDS.
    """
    _, value = stored
    try:
        if not isinstance(value, bytes):
            image = to_rgb8(np.asarray(value))
        elif np.dtype(getattr(image_feature, "np_dtype", np.uint8)) == np.uint8:
            image = decode_image(value, "stored")  # by its bytes: a filename ending .tif may hold a PNG
        else:  # e.g. float32 tiles, which TFDS stores bit-cast into 4-channel PNGs
            image = to_rgb8(np.asarray(image_feature.decode_example_np(value)))
    except (UndecodableImage, OSError, ValueError, TypeError) as error:
        return error
    return resize_square(image, image_size) if image_size else image


def _decoded_tiles(split: TfdsSplit, indices: Sequence[int], image_size: int | None,
                   skipped: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, labels, ids) of the listed tiles at `indices` of `split`, decoded on one thread per core.

    An example that is not an image is a DataError naming it, or, given a `skipped` list, goes there.
    """
    tiles = split.tiles
    # read here, decoded on threads
    stored = ((tiles.ids[i], split.source[int(split.rows[i])]["image"]) for i in indices)
    decode = functools.partial(_decoded_tile, image_feature=split.image_feature, image_size=image_size)

    def decoded() -> Iterator[tuple[str, int, np.ndarray]]:
        for i, outcome in zip(indices, decode_in_order(decode, stored)):
            if isinstance(outcome, Exception):
                if skipped is None:
                    raise DataError(f"{split.where}: example '{tiles.ids[i]}' is not an image ({outcome}); remove "
                                    "it or set spec.data.skip_bad_files=True to skip such examples") from outcome
                skipped.append(tiles.ids[i])
                continue
            yield tiles.ids[i], int(tiles.labels[i]), outcome

    return collect_tiles(decoded(), len(indices), split.where)


def decode_tfds_tiles(split: TfdsSplit, ids: Sequence[str], image_size: int | None,
                      resized_from: Any = None) -> np.ndarray:
    """uint8 (N, H, W, 3) images of the listed tiles `ids` of `split`, in that order, decoded on one thread per core.

    DataError naming the example if one is not an image. `resized_from` is not filled: a TFDS dataset's images are
    one size (its features say so).
    """
    index_of = {tile_id: i for i, tile_id in enumerate(split.tiles.ids)}
    images, _, _ = _decoded_tiles(split, [index_of[tile_id] for tile_id in ids], image_size, None)
    return images


def load_tfds(name: str, data_dir: str | None, requested_classes: Sequence[str] | None, image_size: int | None,
              skip_bad_files: bool, split: str | None = None) -> SourceTiles:
    """Every tile of the selected classes of TFDS dataset `name` (its `split`) decoded; with `skip_bad_files` an
    example that is not an image is left out and named in `skipped_files`, else it is a DataError."""
    listed = open_tfds_split(name, data_dir, requested_classes, split)
    skipped: list[str] | None = [] if skip_bad_files else None
    images, labels, ids = _decoded_tiles(listed, range(len(listed.tiles.ids)), image_size, skipped)
    return SourceTiles(images=images, labels=labels, ids=tuple(ids), classes=listed.tiles.classes,
                       skipped_files=tuple(skipped or ()))

