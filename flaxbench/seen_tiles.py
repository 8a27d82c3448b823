"""Which tiles a run has seen: its splits' pixel digests and perceptual hashes, kept in the workdir, to find
them in other tile sets.

An external test set that holds copies of the training tiles (the same files under other names,
one tile set copied into another, rotated or re-saved copies) flatters the accuracy measured on it.
A run saves each split's tile digests (data_pipeline.duplicates.tile_digests of the tiles as the
model saw them: resized, stain-normalised) and perceptual hashes (data_pipeline.near_copies) in
WORKDIR/tile_digests.npz, and `evaluate --external` and `predict` count the tiles they score that
are pixel-identical to, or near-copies of, one of them (runs saved before the hashes: copies only).
"""

from __future__ import annotations

import io
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from data_pipeline.duplicates import DIGEST_BYTES, MAX_EXAMPLES, tile_digests
from data_pipeline.near_copies import nearest, perceptual_hashes
from flaxbench.errors import WorkdirError
from flaxbench.results import write_bytes_atomic
from flaxbench.workdir import TILE_DIGESTS_FILE

SPLITS = ("train", "val", "test")  # a tile in several splits of the runs counts in the first


HASHES_KEY = "{}_hashes"  # a split's perceptual hashes in tile_digests.npz


def save_tile_digests(workdir: Path, digests: dict[str, Sequence[bytes]],
                      hashes: dict[str, np.ndarray] | None = None) -> Path:
    """WORKDIR/tile_digests.npz: per split, a uint8 (tiles, DIGEST_BYTES) array of its tiles' digests, and their
    perceptual hashes (uint64 (tiles, 8, words)) under '<split>_hashes' where given."""
    arrays = {name: np.frombuffer(b"".join(digests[name]), np.uint8).reshape(-1, DIGEST_BYTES) for name in SPLITS}
    arrays.update({HASHES_KEY.format(name): hashes[name] for name in SPLITS} if hashes is not None else {})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes_atomic(Path(workdir) / TILE_DIGESTS_FILE, buffer.getvalue())


def check_same_pixels(workdir: Path, digests: dict[str, Sequence[bytes]], ids: dict[str, Sequence[str]],
                      where: str, remedy: str) -> None:
    """WorkdirError if a split's tiles (`digests` of the splits given, their `ids`) now decode to other pixels than
    the tiles the run in `workdir` saved in tile_digests.npz; no check where it saved none or another tile count.

    data.json's split digests cover the tiles' ids and labels only: a file replaced under its name, or
    re-saved lossily, passes them.
    """
    try:
        with np.load(Path(workdir) / TILE_DIGESTS_FILE) as arrays:
            saved = {name: arrays[name] for name in digests if name in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return  # trained before digests were kept, or with spec.data.duplicates='off'
    for name, now in digests.items():
        then = saved.get(name)
        if then is None or then.shape != (len(now), DIGEST_BYTES):
            continue
        changed = [tile for tile, row, digest in zip(ids[name], then, now) if row.tobytes() != digest]
        if changed:
            raise WorkdirError(
                f"{len(changed)} of the {len(now)} {name} tiles of {where} decode to other pixels than the run in "
                f"'{workdir}' was trained on (e.g. '{changed[0]}': a file replaced or re-saved, or other image "
                f"libraries); {remedy}"
            )


def tiles_seen_by(runs: Sequence[Any]) -> SeenTileCounter | None:
    """A counter of the tiles the trained `runs` (inference.TrainedRun) saw; None where one kept no digests."""
    seen = load_seen_tiles([run.workdir for run in runs])
    return None if seen is None else SeenTileCounter(seen)


class SeenTiles(NamedTuple):
    """The tiles some runs saw: each digest and the first split it is in; each split's perceptual hashes."""

    digests: dict[bytes, str]
    hashes: dict[str, np.ndarray] | None  # per split, over all the runs; None where a run saved none


def runs_in_words(runs: Sequence[Any]) -> str:
    """'the run' or 'the 5 runs', as a warning names who trained on the tiles."""
    return "the run" if len(runs) == 1 else f"the {len(runs)} runs"


def load_seen_tiles(workdirs: Sequence[Path]) -> SeenTiles | None:
    """Each digest the runs in `workdirs` saved and the first split (train, val, test) it is in, over all of them,
    and their perceptual hashes (None where a run saved none); None where a run saved no digests (trained before
    they were kept, or with spec.data.duplicates='off'), or where a saved file cannot be read (a warning says so)."""
    saved, hashes = [], []
    for workdir in workdirs:
        path = Path(workdir) / TILE_DIGESTS_FILE
        try:
            with np.load(path) as arrays:
                saved.append({name: arrays[name] for name in SPLITS})
                keys = [HASHES_KEY.format(name) for name in SPLITS]
                hashes.append({name: arrays[key] for name, key in zip(SPLITS, keys)} if set(keys) <= set(arrays.files)
                              else None)
        except FileNotFoundError:
            return None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
            print(f"warning: cannot read '{path}' ({err.__class__.__name__}: {err}), so tiles the run saw are not "
                  "looked for; train the run again to write it", file=sys.stderr)
            return None
        if any(rows.ndim != 2 or rows.shape[1:] != (DIGEST_BYTES,) or rows.dtype != np.uint8
               for rows in saved[-1].values()):
            print(f"warning: '{path}' does not hold {DIGEST_BYTES}-byte tile digests, so tiles the run saw are not "
                  "looked for; train the run again to write it", file=sys.stderr)
            return None
        if hashes[-1] is not None and any(rows.ndim != 3 or rows.dtype != np.uint64 for rows in hashes[-1].values()):
            print(f"warning: '{path}' does not hold perceptual hashes, so near-copies of the tiles the run saw are "
                  "not looked for; train the run again to write it", file=sys.stderr)
            hashes[-1] = None
    seen: dict[bytes, str] = {}
    for name in SPLITS:
        for arrays in saved:
            for row in arrays[name]:
                seen.setdefault(row.tobytes(), name)
    all_hashes = None if any(found is None for found in hashes) else {
        name: np.concatenate([found[name] for found in hashes]) for name in SPLITS}
    return SeenTiles(seen, all_hashes)


class SeenTileCounter:
    """Counts the tiles streamed past it (`counter(ids, images)`, images as the model sees them) that a run saw:
    copies of its tiles, and near-copies where it saved their perceptual hashes."""

    def __init__(self, seen: SeenTiles):
        self.seen = seen
        self.counts = {name: 0 for name in SPLITS}
        self.near_counts = None if seen.hashes is None else {name: 0 for name in SPLITS}
        self.examples: list[str] = []
        self.trained_ids: list[str] = []  # the tiles found in the runs' train or val splits, copied or nearly

    def __call__(self, ids: Sequence[str], images: np.ndarray) -> None:
        """Count the tiles of `images` (uint8 (N, H, W, 3)) that copy, or nearly copy, a tile of the runs."""
        left = []  # rows not pixel-identical to a tile of the runs
        for row, (tile_id, digest) in enumerate(zip(ids, tile_digests(images))):
            split = self.seen.digests.get(digest)
            if split is None:
                left.append(row)
            else:
                self._found(tile_id, split, self.counts, "")
        if self.seen.hashes is None or not left:
            return
        hashes = perceptual_hashes(images[left])
        for split in SPLITS:  # a tile near tiles of several splits counts in the first
            _, rows = nearest(hashes, self.seen.hashes[split])
            for row in np.flatnonzero(rows >= 0):
                self._found(ids[left[row]], split, self.near_counts, ", near-copy")
            hashes, left = hashes[rows < 0], [tile for tile, other in zip(left, rows) if other < 0]

    def _found(self, tile_id: str, split: str, counts: dict[str, int], kind: str) -> None:
        counts[split] += 1
        if split != "test":
            self.trained_ids.append(tile_id)
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(f"'{tile_id}' ({split}{kind})")

    def record(self) -> dict[str, Any]:
        """What an output file records: the tiles found in each split of the runs (copies; `near`: near-copies,
        None where not looked for), examples and the ids of those found in train or val."""
        return {"train": self.counts["train"], "val": self.counts["val"], "test": self.counts["test"],
                "near": None if self.near_counts is None else dict(self.near_counts),
                "examples": list(self.examples), "trained_ids": list(self.trained_ids)}

    def warning(self, runs: str, consequence: str) -> str | None:
        """A warning line where tiles were seen in training (train or val) by `runs`, ending in `consequence`."""
        copied = self.counts["train"] + self.counts["val"]
        near = 0 if self.near_counts is None else self.near_counts["train"] + self.near_counts["val"]
        if not copied + near:
            return None
        parts = [f"pixel-identical: train {self.counts['train']}, val {self.counts['val']}"] if copied else []
        if near:
            parts.append(f"near-copies, rotated, flipped, re-saved, resized or recoloured: train "
                         f"{self.near_counts['train']}, val {self.near_counts['val']}")
        found = f"{copied + near} of these tiles {'are copies' if copied + near > 1 else 'is a copy'}"
        return (f"warning: {found} of tiles {runs} trained or validated on ({'; '.join(parts)}; "
                f"e.g. {self.examples[0]}): {consequence}")
