"""Which tiles a run has seen: its splits' pixel digests, kept in the workdir, to find them in other tile sets.

An external test set that holds copies of the training tiles (the same files under other names,
one tile set copied into another) flatters the accuracy measured on it. A run saves each split's
tile digests (data_pipeline.duplicates.tile_digests of the tiles as the model saw them: resized,
stain-normalised) in WORKDIR/tile_digests.npz, and `evaluate --external` and `predict` count the
tiles they score that are pixel-identical to one of them.
"""

from __future__ import annotations

import io
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.duplicates import DIGEST_BYTES, MAX_EXAMPLES, tile_digests
from flaxbench.results import write_bytes_atomic
from flaxbench.workdir import TILE_DIGESTS_FILE

SPLITS = ("train", "val", "test")  # a tile in several splits of the runs counts in the first


def save_tile_digests(workdir: Path, digests: dict[str, Sequence[bytes]]) -> Path:
    """WORKDIR/tile_digests.npz: per split, a uint8 (tiles, DIGEST_BYTES) array of its tiles' digests."""
    arrays = {name: np.frombuffer(b"".join(digests[name]), np.uint8).reshape(-1, DIGEST_BYTES) for name in SPLITS}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_bytes_atomic(Path(workdir) / TILE_DIGESTS_FILE, buffer.getvalue())


def tiles_seen_by(runs: Sequence[Any]) -> SeenTileCounter | None:
    """A counter of the tiles the trained `runs` (inference.TrainedRun) saw; None where one kept no digests."""
    seen = load_seen_tiles([run.workdir for run in runs])
    return None if seen is None else SeenTileCounter(seen)


def runs_in_words(runs: Sequence[Any]) -> str:
    """'the run' or 'the 5 runs', as a warning names who trained on the tiles."""
    return "the run" if len(runs) == 1 else f"the {len(runs)} runs"


def load_seen_tiles(workdirs: Sequence[Path]) -> dict[bytes, str] | None:
    """Each digest the runs in `workdirs` saved and the first split (train, val, test) it is in, over all of them;
    None where a run saved none (trained before digests were kept, or with spec.data.duplicates='off'), or where
    a saved file cannot be read (a warning says so)."""
    saved = []
    for workdir in workdirs:
        path = Path(workdir) / TILE_DIGESTS_FILE
        try:
            with np.load(path) as arrays:
                saved.append({name: arrays[name] for name in SPLITS})
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
    seen: dict[bytes, str] = {}
    for name in SPLITS:
        for arrays in saved:
            for row in arrays[name]:
                seen.setdefault(row.tobytes(), name)
    return seen


class SeenTileCounter:
    """Counts the tiles streamed past it (`counter(ids, images)`, images as the model sees them) that a run saw."""

    def __init__(self, seen: dict[bytes, str]):
        self.seen = seen
        self.counts = {name: 0 for name in SPLITS}
        self.examples: list[str] = []
        self.trained_ids: list[str] = []  # the tiles found in the runs' train or val splits

    def __call__(self, ids: Sequence[str], images: np.ndarray) -> None:
        """Count the tiles of `images` (uint8 (N, H, W, 3)) whose pixels are those of a tile of the runs."""
        for tile_id, digest in zip(ids, tile_digests(images)):
            split = self.seen.get(digest)
            if split is not None:
                self.counts[split] += 1
                if split != "test":
                    self.trained_ids.append(tile_id)
                    if len(self.examples) < MAX_EXAMPLES:
                        self.examples.append(f"'{tile_id}' ({split})")

    def record(self) -> dict[str, Any]:
        """What an output file records: the tiles found in each split of the runs, examples and the ids of those
        found in train or val."""
        return {"train": self.counts["train"], "val": self.counts["val"], "test": self.counts["test"],
                "examples": list(self.examples), "trained_ids": list(self.trained_ids)}

    def warning(self, runs: str, consequence: str) -> str | None:
        """A warning line where tiles were seen in training (train or val) by `runs`, ending in `consequence`."""
        trained = self.counts["train"] + self.counts["val"]
        if not trained:
            return None
        return (f"warning: {trained} of these tiles {'are' if trained > 1 else 'is'} pixel-identical to tiles {runs} "
                "trained or validated on "
                f"(train {self.counts['train']}, val {self.counts['val']}; e.g. {self.examples[0]}): {consequence}")
