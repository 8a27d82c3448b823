"""Splits that keep each patient or slide in one split: `spec.data.group_by`.

Tiles cut from one slide look alike, so a random tile split puts near-copies of test tiles in
train and overstates accuracy. `spec.data.group_by` is a regular expression searched in every
tile id (its path below the source root, or TFDS filename); its first group (or the whole match
without one) names the tile's group, e.g. `CRC-Prim-HE-\\d+` for the patient of a Kather 2016
tile, or `^[^/]+/([^/]+)/` for the first subfolder of a class folder.

Whole groups go to train, val or test. The split's per-class tile counts (from `spec.data.split`,
as without groups) are the targets: groups are taken largest first (ties in an order drawn from
`split_seed`), each into the split where it brings the per-class counts closest to the targets
(least squares), or left out when the counts do not use every tile and it fits nowhere. If that
leaves a class without tiles in a split, up to ATTEMPTS other orders drawn from `split_seed` are
tried; every class must get a tile in every split asked for. Split sizes come out near, not at,
the targets; data.json records them and the groups of each split.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.split import split_counts

ATTEMPTS = 64  # group orders tried before a group split is declared impossible


SPEC_KEY = "spec.data.group_by"


def check_group_by(pattern: str | None, key: str = SPEC_KEY) -> re.Pattern | None:
    """The group pattern compiled (None without one); DataError naming `key` if it is not a regular expression."""
    if pattern is None:
        return None
    if not isinstance(pattern, str) or not pattern:
        raise DataError(f"{key} must be a regular expression or None, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise DataError(f"{key} '{pattern}' is not a valid regular expression ({error})") from None


def find_group(tile_id: str, regex: re.Pattern) -> str | None:
    """The group `regex` names in a tile id: its first group, or its whole match without one; None if none."""
    match = regex.search(tile_id)
    return (match.group(1) if regex.groups else match.group(0)) or None if match else None


def tile_groups(ids: Sequence[str], pattern: str, key: str = SPEC_KEY) -> list[str]:
    """The group of every tile id by `pattern` (given as `key`); DataError for a tile it finds none in."""
    regex = check_group_by(pattern, key)
    groups = []
    for tile_id in ids:
        group = find_group(tile_id, regex)
        if not group:
            fix = ", or set spec.data.group_by=None for a tile-level split" if key == SPEC_KEY else ""
            raise DataError(f"{key} '{pattern}' finds no group in tile '{tile_id}'; every tile needs one (its "
                            f"patient or slide): fix the pattern{fix}")
        groups.append(group)
    return groups


def group_split_indices(
    labels: np.ndarray,
    ids: Sequence[str],
    groups: Sequence[str],
    class_names: Sequence[str],
    split: Sequence[float],
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train, val and test tiles, whole groups to a split (see the module docstring)."""
    names, group_of, per_group = group_class_counts(labels, groups, len(class_names))
    targets = split_counts(per_group.sum(axis=0), class_names, split).astype(np.float64)  # (classes, 3)
    used = targets.sum(axis=0) > 0
    if len(names) < used.sum():
        raise DataError(f"spec.data.group_by finds {len(names)} group(s) ({', '.join(names)}), too few for "
                        f"{int(used.sum())} splits of whole groups; check the pattern, or split by tile")
    where = assign_groups(per_group, targets, may_leave_out=targets.sum() < len(labels), seed=seed)
    if where is None:
        _explain_infeasible(per_group, targets, class_names, names)
    tile_split = where[group_of]
    return tuple(
        np.asarray(sorted(np.flatnonzero(tile_split == s), key=lambda i: (ids[i], i)), dtype=np.int64)
        for s in range(3)
    )


def group_class_counts(labels: np.ndarray, groups: Sequence[str], num_classes: int
                       ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sorted group names, each tile's group index, tiles per group and class (groups, classes))."""
    names = sorted(set(groups))
    position = {name: i for i, name in enumerate(names)}
    group_of = np.asarray([position[g] for g in groups])
    per_group = np.zeros((len(names), num_classes), np.int64)
    np.add.at(per_group, (group_of, np.asarray(labels)), 1)
    return names, group_of, per_group


def assign_groups(per_group: np.ndarray, targets: np.ndarray, *, may_leave_out: bool, seed: int) -> np.ndarray | None:
    """The split of every group (-1: left out) that gives every class a tile in every split it needs, or None.

    Largest groups first (ties in an order drawn from `seed`) and, if that leaves a class without
    tiles somewhere, up to ATTEMPTS orders drawn from `seed` that fill empty places first.
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(b"groups")])
    used = targets.sum(axis=0) > 0
    needed = targets > 0
    for attempt in range(ATTEMPTS):
        order = rng.permutation(len(per_group))
        if attempt == 0:
            order = sorted(order, key=lambda g: -per_group[g].sum())  # stable: equal sizes stay in drawn order
        current = np.zeros_like(targets)
        where = np.full(len(per_group), -1)
        # Filling a split's first tile of a class it needs breaks ties in the first attempt and
        # comes before balance in the others.
        weight = 1e-6 if attempt == 0 else 1e12
        for g in order:
            cost = ((current + per_group[g][:, None] - targets) ** 2 - (current - targets) ** 2).sum(axis=0)
            fills = (needed & (current == 0) & (per_group[g][:, None] > 0)).sum(axis=0)
            score = np.where(used, cost - weight * fills, np.inf)
            best = int(np.argmin(score))
            if may_leave_out and cost[best] >= 0 and fills[best] == 0:
                continue
            where[g] = best
            current[:, best] += per_group[g]
        if (current[needed] > 0).all():
            return where
    return None


def _explain_infeasible(
    per_group: np.ndarray, targets: np.ndarray, class_names: Sequence[str], names: Sequence[str]
) -> None:
    """DataError naming a class that whole groups cannot spread over the splits it needs tiles in."""
    splits = int((targets.sum(axis=0) > 0).sum())
    holding = {name: [names[g] for g in np.flatnonzero(per_group[:, c])] for c, name in enumerate(class_names)}
    name = min(holding, key=lambda n: len(holding[n]))
    listed = ", ".join(holding[name][:5]) + (", ..." if len(holding[name]) > 5 else "")
    raise DataError(
        f"with whole groups (spec.data.group_by) no split found gives every class tiles in each of the {splits} "
        f"splits: class '{name}' comes from {len(holding[name])} group(s) ({listed}); drop such classes from "
        "spec.data.classes, add tiles of more patients or slides, or change spec.data.split"
    )


def split_groups(ids_by_split: dict[str, Sequence[str]], pattern: str | None) -> dict[str, tuple[str, ...]] | None:
    """The sorted groups of each split (None without spec.data.group_by); DataError if two splits share one."""
    if pattern is None:
        return None
    found = {split: tuple(sorted(set(tile_groups(ids, pattern)))) for split, ids in ids_by_split.items()}
    seen: dict[str, str] = {}
    for split, groups in found.items():
        for group in groups:
            if group in seen:
                raise DataError(
                    f"group '{group}' (spec.data.group_by '{pattern}') has tiles in both the {seen[group]} and the "
                    f"{split} split: the source's own splits share a patient or slide; move its tiles to one split"
                )
            seen[group] = split
    return found
