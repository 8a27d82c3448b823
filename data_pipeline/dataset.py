"""`load_dataset(spec.data)`: read the source, select classes, split, and return numpy arrays."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from data_pipeline.classes import canonical_class_name
from data_pipeline.device import AUGMENT_OPS, NORMALIZE_MODES
from data_pipeline.duplicates import DuplicateTiles, check_duplicates, check_duplicates_mode, tile_digests
from data_pipeline.errors import DataError
from data_pipeline.folds import check_folds, fold_indices, group_fold_indices
from data_pipeline.groups import check_group_by, group_split_indices, split_groups, tile_groups
from data_pipeline.images import load_image
from data_pipeline.named_splits import named_split_form, names_splits, read_named_splits, split_sources
from data_pipeline.near_copies import perceptual_hashes
from data_pipeline.shared_groups import SharedGroups, shared_groups
from data_pipeline.source_access import OpenListing, listing_of, read_source, spec_value, split_reader
from data_pipeline.sources.folder_source import log_distorting_resizes
from data_pipeline.sources.tiles import SourceTiles, permute_rows_in_place
from data_pipeline.split import SPLIT_NAMES, check_split_seed, split_indices
from data_pipeline.stain import StainTarget, normalize_tiles, normalize_tiles_counted, stain_target, warn_kept

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Split:
    """One of train/val/test: images, labels and stable tile ids, row-aligned."""

    images: np.ndarray | None  # uint8 (N, H, W, 3), RGB; None if not decoded (load_dataset's `decode`)
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
    groups: dict[str, tuple[str, ...]] | None = None  # each split's groups by spec.data.group_by, if set
    # test tiles whose patient or slide, by a known naming convention, is in train or val too, and those groups
    shared_groups: SharedGroups | None = None
    stain: StainTarget | None = None  # what the tiles were stain-normalised to (spec.data.stain_normalize)
    fold: tuple[int, int] | None = None  # (spec.data.cv_fold, spec.data.cv_folds) under cross-validation
    # pixel-identical tiles across and within the splits, near-copies across them (spec.data.duplicates); None if
    # not looked for
    duplicates: DuplicateTiles | None = None
    # per split, each tile's pixel digest (duplicates.tile_digests), where `duplicates` was looked for
    tile_digests: dict[str, list[bytes]] | None = None
    # per split, each tile's perceptual hashes (near_copies.perceptual_hashes), where `duplicates` was looked for
    tile_hashes: dict[str, np.ndarray] | None = None


def _positive_int_or_none(value: Any, key: str) -> int | None:
    """Validate an optional positive integer key."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"spec.data.{key} must be a positive integer or None, got {value!r}")
    return int(value)


def augment_ops(cfg: Any) -> tuple[str, ...]:
    """spec.data.augment as a tuple of known op names (one name alone or None allowed); DataError otherwise."""
    ops = spec_value(cfg, "augment", ())
    ops = (ops,) if isinstance(ops, str) else tuple(ops or ())
    for op in ops:
        if op not in AUGMENT_OPS:
            raise DataError(
                f"unknown augmentation {op!r} in spec.data.augment; known: {', '.join(AUGMENT_OPS)}"
            )
    return ops


def check_device_options(cfg: Any) -> None:
    """Fail before decoding anything if augment/normalize name something unknown."""
    augment_ops(cfg)
    mode = spec_value(cfg, "normalize", "unit")
    if mode not in NORMALIZE_MODES:
        raise DataError(f"unknown spec.data.normalize '{mode}'; known: {', '.join(NORMALIZE_MODES)}")


def _splits_of(parts: Sequence[tuple[SourceTiles, np.ndarray | None]]) -> tuple[Split, ...]:
    """The Split of each (tiles, rows) part, rows None for all the tiles; parts of one source share its array.

    Indexing each part out of a source copies its tiles while the source is still alive: twice
    the host memory of the tiles at the peak. Instead a source's tiles are reordered in place,
    its parts' rows one after another, and each part is a slice of them; the reordered source is
    not used afterwards (its labels and ids keep the old order).
    """
    images_of_part: dict[int, np.ndarray] = {}
    for tiles in {id(tiles): tiles for tiles, _ in parts}.values():
        its_parts = [index for index, (owner, _) in enumerate(parts) if owner is tiles]
        row_sets = [parts[index][1] for index in its_parts]
        if all(rows is not None for rows in row_sets):
            slices = _reordered_in_place(tiles.images, [np.asarray(rows, dtype=np.int64) for rows in row_sets])
            images_of_part.update(zip(its_parts, slices or ()))
    splits = []
    for index, (tiles, rows) in enumerate(parts):
        if rows is None:
            splits.append(Split(tiles.images, tiles.labels.astype(np.int32, copy=False), tuple(tiles.ids)))
        else:
            images = images_of_part.get(index)
            splits.append(Split(tiles.images[rows] if images is None else images,
                                tiles.labels[rows].astype(np.int32), tuple(tiles.ids[i] for i in rows)))
    return tuple(splits)


def _reordered_in_place(images: np.ndarray, row_sets: list[np.ndarray]) -> list[np.ndarray] | None:
    """`images` reordered in place so that each of `row_sets` is a slice, and the slices; None if a row repeats."""
    used = np.concatenate(row_sets)
    if len(np.unique(used)) < len(used):  # a tile in two parts cannot be in the slices of both
        return None
    permute_rows_in_place(images, np.concatenate([used, np.setdiff1d(np.arange(len(images)), used)]))
    ends = np.cumsum([len(rows) for rows in row_sets])
    return [images[end - len(rows):end] for rows, end in zip(row_sets, ends)]


def _read_named_splits(
    cfg: Any, source: Any, image_size: int | None, split: Sequence[Any], stain: StainTarget | None
) -> tuple[str, tuple[SourceTiles, ...], tuple[Split, Split, Split]]:
    """A source's own splits: (canonical source, the tiles of each split read, the train/val/test splits)."""
    named_split_form(split)  # a malformed split fails before any tile is read
    source, read_raw, where = split_reader(cfg, source, image_size, split)

    def read(name: str, classes: Sequence[str] | None) -> SourceTiles:
        return _stain_normalized(read_raw(name, classes), stain, where(name))

    def divide(tiles: SourceTiles, held_out: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _divide(cfg, tiles, held_out)

    parts = read_named_splits(split, read, where, spec_value(cfg, "classes", None), divide)
    read_tiles = tuple({id(tiles): tiles for tiles, _ in parts}.values())  # train's tiles once, if val is cut from them
    splits = _splits_of(parts)
    _check_one_tile_size(splits, [where(name) for name in split_sources(split)])
    return source, read_tiles, splits


def _divide(cfg: Any, tiles: SourceTiles, split: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train, val and test in `tiles` for numbers `split` or a cross-validation fold: by tile, or by
    whole group with group_by."""
    seed, group_by = check_split_seed(spec_value(cfg, "split_seed", 0)), spec_value(cfg, "group_by", None)
    fold = check_folds(spec_value(cfg, "cv_folds", None), spec_value(cfg, "cv_fold", None))
    groups = None if group_by is None else tile_groups(tiles.ids, group_by)
    if fold is not None and groups is None:
        return fold_indices(tiles.labels, tiles.ids, tiles.classes, fold[1], fold[0], seed)
    if fold is not None:
        return group_fold_indices(tiles.labels, tiles.ids, groups, tiles.classes, fold[1], fold[0], seed)
    if groups is None:
        return split_indices(tiles.labels, tiles.ids, tiles.classes, split, seed)
    return group_split_indices(tiles.labels, tiles.ids, groups, tiles.classes, split, seed)


def _stain_normalized(tiles: SourceTiles, stain: StainTarget | None, where: str) -> SourceTiles:
    """`tiles`, just read from their source, normalised to `stain` in place (as they are without one)."""
    if stain is not None:
        normalize_tiles(tiles.images, stain, where, out=tiles.images)  # no second copy of the tiles
    return tiles


def _stain_target(cfg: Any) -> StainTarget | None:
    """spec.data.stain_normalize's target, its reference tile read from spec.data.stain_reference."""
    reference = spec_value(cfg, "stain_reference", None)
    reference = os.path.expanduser(reference) if isinstance(reference, str) else reference
    return stain_target(spec_value(cfg, "stain_normalize", None), reference, load_image)


ListedHook = Callable[[str, tuple[str, ...], tuple[Split, Split, Split]], None]  # (source, classes, splits)
def _listed_splits(
    cfg: Any, source: str, open_listing: OpenListing, where_split: Callable[[str], str], split: Sequence[Any],
    stain: StainTarget | None, decode: Collection[str], listed_hook: ListedHook | None,
) -> tuple[tuple[str, ...], tuple[Split, Split, Split]]:
    """(classes, train/val/test) of a listable `source`: listed, split, then the splits in `decode` decoded.

    The split needs only the tiles' ids and labels, so a split that cannot be made fails before
    any tile is read, each split's tiles are decoded straight into an array of their own, in split
    order, and the tiles of splits not in `decode` are never read (their `images` are None). Each
    source split (folder) is listed once and stays open until its tiles are decoded.
    """
    classes = spec_value(cfg, "classes", None)
    with contextlib.ExitStack() as stack:
        decoders: dict[str | None, Callable[[Sequence[str]], np.ndarray]] = {}

        def listed(within: str | None, selected: Sequence[str] | None) -> SourceTiles:
            tiles, decoders[within] = stack.enter_context(open_listing(within, selected))
            return tiles

        if names_splits(split):
            parts = read_named_splits(split, listed, where_split, classes,
                                      lambda tiles, held_out: _divide(cfg, tiles, held_out))
            folders = split_sources(split)
            _check_two_classes(parts[0][0].classes, source)
        else:
            tiles = listed(None, classes)
            _check_two_classes(tiles.classes, source)
            parts = tuple((tiles, rows) for rows in _divide(cfg, tiles, split))
            folders = (None, None, None)
        splits = []
        for tiles, rows in parts:
            rows = np.arange(len(tiles.ids)) if rows is None else rows
            splits.append(Split(None, tiles.labels[rows].astype(np.int32), tuple(tiles.ids[i] for i in rows)))
        if listed_hook is not None:
            listed_hook(source, parts[0][0].classes, tuple(splits))
        resized: collections.Counter = collections.Counter()  # over the splits: one warning for them all
        splits = [dataclasses.replace(part, images=decoders[folder](part.ids, resized_from=resized))
                  if name in decode else part for name, part, folder in zip(SPLIT_NAMES, splits, folders)]
        log_distorting_resizes(resized, sum(len(part.ids) for part in splits if part.images is not None),
                               spec_value(cfg, "image_size", None), source)
    wheres = [source if folder is None else where_split(folder) for folder in folders]
    _check_one_tile_size(splits, wheres)
    if stain is not None:
        _normalize_splits(splits, stain, wheres)
    return parts[0][0].classes, tuple(splits)


def _check_one_tile_size(splits: Sequence[Split], wheres: Sequence[str]) -> None:
    """DataError if the decoded splits hold tiles of different sizes (`wheres`: where each split was read)."""
    decoded = [(split, where) for split, where in zip(splits, wheres) if split.images is not None]
    first, first_where = decoded[0]
    for split, where in decoded[1:]:
        if split.images.shape[1:] != first.images.shape[1:]:
            (height, width), (first_height, first_width) = split.images.shape[1:3], first.images.shape[1:3]
            place = f"in {where}" if where == first_where else f"in {where} and {first_where}"
            raise DataError(
                f"tiles {place} differ in size: '{split.ids[0]}' is {width}x{height} px, '{first.ids[0]}' "
                f"{first_width}x{first_height}; set spec.data.image_size to resize every tile to one square size"
            )


def _normalize_splits(splits: Sequence[Split], stain: StainTarget, wheres: Sequence[str]) -> None:
    """The decoded splits' tiles normalised to `stain` in place; one warning per source folder for tiles kept."""
    kept_of: dict[str, list[int]] = {}
    for split, where in zip(splits, wheres):
        if split.images is not None:
            _, kept = normalize_tiles_counted(split.images, stain, out=split.images)
            counts = kept_of.setdefault(where, [0, 0])
            counts[0], counts[1] = counts[0] + kept, counts[1] + len(split.images)
    for where, (kept, total) in kept_of.items():
        warn_kept(kept, total, where)


def _check_two_classes(classes: Sequence[str], source: str) -> None:
    """DataError if spec.data.classes selected fewer than two classes of `source`."""
    if len(classes) < 2:
        raise DataError(
            f"spec.data.classes selects a single class ('{classes[0]}') of {source}; a classifier "
            "needs at least two: list more classes, or None for all"
        )


def load_dataset(cfg: Any, decode: Collection[str] = SPLIT_NAMES, listed: ListedHook | None = None) -> TileDataset:
    """Load, select and split the tiles described by `cfg` (= spec.data); DataError if impossible.

    A folder or zip (without spec.data.skip_bad_files) or a TFDS dataset is listed and split before
    its tiles are decoded, and only the splits named in `decode` (at least one) are: the others'
    `images` are None. There `listed(source, classes, splits)` sees the splits before any tile is
    decoded (their `images` None), to refuse them early. The synthetic source makes every tile, then splits.
    """
    if not decode or set(decode) - set(SPLIT_NAMES):
        raise ValueError(f"decode must name some of {SPLIT_NAMES}, got {decode!r}")
    check_device_options(cfg)
    check_group_by(spec_value(cfg, "group_by", None))
    duplicates_mode = check_duplicates_mode(spec_value(cfg, "duplicates", "warn"))
    stain = _stain_target(cfg)
    image_size = _positive_int_or_none(spec_value(cfg, "image_size", None), "image_size")
    split = spec_value(cfg, "split", (0.7, 0.15, 0.15))
    fold = check_folds(spec_value(cfg, "cv_folds", None), spec_value(cfg, "cv_fold", None))
    if fold is not None and names_splits(split):
        raise DataError(f"spec.data.cv_folds folds all the selected tiles itself, but spec.data.split {tuple(split)!r} "
                        "names splits of the source: set spec.data.split to numbers (cross-validation does not use "
                        "them), or spec.data.cv_folds=None")
    source = spec_value(cfg, "source", None)
    listing = listing_of(cfg, source, image_size)
    if listing is not None:
        source, open_listing, where_split = listing
        skipped = ()
        classes, splits = _listed_splits(cfg, source, open_listing, where_split, split, stain, decode, listed)
    else:
        source, classes, skipped, splits = _decoded_splits(cfg, source, image_size, split, stain)
    train, val, test = splits
    decoded = next(part.images for part in splits if part.images is not None)
    ids = {name: part.ids for name, part in zip(SPLIT_NAMES, splits)}
    all_decoded = all(part.images is not None for part in splits)
    groups = split_groups(ids, spec_value(cfg, "group_by", None))
    shared = shared_groups(ids)
    if shared is not None and shared.shared_groups and all_decoded:
        logger.warning("in %s, %s", source, shared.warning())  # once, where a run trains
    # Copies can be looked for only among decoded tiles: a run that decodes one split (evaluate) does not.
    digests = None if duplicates_mode == "off" or not all_decoded else {
        name: tile_digests(part.images) for name, part in zip(SPLIT_NAMES, splits)}
    hashes = None if digests is None else {
        name: perceptual_hashes(part.images) for name, part in zip(SPLIT_NAMES, splits)}
    duplicates = None if digests is None else check_duplicates(
        duplicates_mode, source, ids, {name: part.labels for name, part in zip(SPLIT_NAMES, splits)}, digests, hashes)
    return TileDataset(
        train=train,
        val=val,
        test=test,
        classes=classes,
        source=source,
        synthetic=source == "synthetic",
        image_size=(int(decoded.shape[1]), int(decoded.shape[2])),
        skipped_files=skipped,
        groups=groups,
        shared_groups=shared,
        stain=stain,
        fold=fold,
        duplicates=duplicates,
        tile_digests=digests,
        tile_hashes=hashes,
    )


def _check_no_class_all_skipped(source: str, classes: Sequence[str], counts: np.ndarray,
                                skipped: Sequence[str]) -> None:
    """DataError naming a class of a folder source whose every file was skipped as bad (spec.data.skip_bad_files)."""
    if not source.startswith("folder:"):
        return
    for name, count in zip(classes, counts):
        files = [file for file in skipped if canonical_class_name(file.split("/", 1)[0]) == name]
        if not count and files:
            raise DataError(f"class '{name}' of {source} has no readable tile: all {len(files)} of its files were "
                            f"skipped as bad (spec.data.skip_bad_files=True; e.g. {files[0]}); replace them, or "
                            "drop the class from spec.data.classes")


def _decoded_splits(
    cfg: Any, source: Any, image_size: int | None, split: Sequence[Any], stain: StainTarget | None
) -> tuple[str, tuple[str, ...], tuple[str, ...], tuple[Split, Split, Split]]:
    """(canonical source, classes, skipped files, train/val/test) of `source` with every tile decoded."""
    if names_splits(split):
        source, read, splits = _read_named_splits(cfg, source, image_size, split, stain)
    else:
        source, tiles = read_source(cfg, source, image_size)
        tiles = _stain_normalized(tiles, stain, source)
        read, splits = (tiles,), None
    classes, skipped = read[0].classes, tuple(name for tiles in read for name in tiles.skipped_files)
    _check_two_classes(classes, source)
    if skipped:
        logger.warning(
            "skipped %d bad files in %s (spec.data.skip_bad_files=True): %s", len(skipped), source, ", ".join(skipped)
        )
    if splits is None:
        _check_no_class_all_skipped(source, classes, np.bincount(tiles.labels, minlength=len(classes)), skipped)
        splits = _splits_of([(tiles, part) for part in _divide(cfg, tiles, split)])
    return source, classes, skipped, splits
