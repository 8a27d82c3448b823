"""Near-copies: rotated, flipped, re-saved or recoloured copies of real tiles are found; different tiles are not."""

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipeline import DataError, load_dataset
from data_pipeline.duplicates import find_duplicates, tile_digests
from data_pipeline.near_copies import HASH_BITS, NEAR_COPY_BITS, has_structure, nearest, perceptual_hashes
from tests.data_pipeline.conftest import sample_folder, split_folders_spec


def _tiles(folder: Path, size: int = 150) -> np.ndarray:
    """Every TIFF under `folder` as uint8 RGB of `size` px, in sorted order."""
    return np.stack([np.asarray(Image.open(path).convert("RGB").resize((size, size)))
                     for path in sorted(folder.rglob("*.tif"))])


def _jpeg(tile: np.ndarray, quality: int) -> np.ndarray:
    stream = io.BytesIO()
    Image.fromarray(tile).save(stream, "JPEG", quality=quality)
    return np.asarray(Image.open(stream).convert("RGB"))


ALTERED = {
    "rotated": lambda t: np.rot90(t).copy(),
    "flipped": lambda t: t[:, ::-1].copy(),
    "transposed and re-saved as JPEG": lambda t: _jpeg(np.swapaxes(t, 0, 1).copy(), 75),
    "re-saved as JPEG at quality 50": lambda t: _jpeg(t, 50),
    "resized down and up": lambda t: np.asarray(Image.fromarray(t).resize((100, 100)).resize((150, 150))),
    "recoloured": lambda t: np.clip(t * np.array([1.1, 0.9, 1.05]) + 8, 0, 255).astype(np.uint8),
}


@pytest.fixture(scope="module")
def real_tiles():
    """The 132 real sample tiles at 150 px."""
    return np.concatenate([_tiles(sample_folder("kather2016_sample")), _tiles(sample_folder("nct_crc_he_sample"))])


@pytest.mark.parametrize("how", ALTERED)
def test_altered_copies_of_real_tiles_are_near_their_originals(real_tiles, how):
    hashes = perceptual_hashes(real_tiles)
    compared = np.flatnonzero(has_structure(hashes))[::3]  # blank ones (glass, fat) are not compared
    bits, rows = nearest(perceptual_hashes(np.stack([ALTERED[how](real_tiles[k]) for k in compared])), hashes,
                         max_bits=HASH_BITS)
    assert (rows == compared).all(), how  # each nearest its original
    # within the threshold: all but the odd tile (measured: one JPEG at quality 50, 18 bits off)
    assert (bits <= NEAR_COPY_BITS).mean() >= 0.95, how


def test_few_real_tiles_are_too_blank_to_compare(real_tiles):
    plain = ~has_structure(perceptual_hashes(real_tiles))
    assert 0 < plain.sum() <= 10  # measured: 7 of 132, blank glass (3 EMPTY, 2 BACK) and fat (2)


def test_different_real_tiles_are_not_near_copies(real_tiles):
    hashes = perceptual_hashes(real_tiles)
    for row in range(len(real_tiles)):
        others = np.delete(hashes, row, axis=0)
        bits, _ = nearest(hashes[row:row + 1], others, max_bits=HASH_BITS)
        assert bits[0] > 2 * NEAR_COPY_BITS, row  # measured: 48 bits or more apart on these tiles


def test_tiles_without_structure_are_no_near_copies():
    # uniform tiles, and pure gradients, of different values: their hashes are alike, the tiles are not copies
    ramp = np.linspace(0, 1, 64)[None, :, None]
    tiles = np.stack([np.full((64, 64, 3), value, np.uint8) for value in (0, 90, 255)]
                     + [np.broadcast_to(ramp * scale + offset, (64, 64, 3)).astype(np.uint8)
                        for scale, offset in ((100, 0), (200, 20))])
    hashes = perceptual_hashes(tiles)
    assert not has_structure(hashes).any()
    # nor are tiles too small for the hash's frequencies (under 24 px), whatever they show
    small = np.random.default_rng(0).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)
    assert not has_structure(perceptual_hashes(small)).any()
    bits, rows = nearest(hashes, hashes, max_bits=HASH_BITS)
    assert (rows == -1).all() and (bits > HASH_BITS).all()


def test_near_copies_are_counted_once_after_the_exact_ones(real_tiles):
    train, val = real_tiles[:6], real_tiles[6:9]
    test = np.stack([train[0], np.rot90(train[1]).copy(), np.rot90(val[0]).copy(), _jpeg(train[2], 75),
                     real_tiles[20]])
    ids = {"train": [f"t{k}" for k in range(6)], "val": ["v0", "v1", "v2"], "test": ["same", "rot", "rotv", "jpeg",
                                                                                     "new"]}
    splits = {"train": train, "val": val, "test": test}
    labels = {name: np.zeros(len(tiles), int) for name, tiles in splits.items()}
    labels["test"][2] = 1  # 'rotv' is val's 'v0' under another label
    found = find_duplicates(ids, labels, {name: tile_digests(tiles) for name, tiles in splits.items()},
                            {name: perceptual_hashes(tiles) for name, tiles in splits.items()})
    assert found.across_splits == {"val_in_train": 0, "test_in_train": 1, "test_in_val": 0}
    assert found.near_copies.across_splits == {"val_in_train": 0, "test_in_train": 2, "test_in_val": 1}
    assert sorted(found.near_copies.copied_ids["test"]) == ["jpeg", "rot", "rotv"]
    assert {example.split(" ~ ")[0] for example in found.near_copies.examples} == {"'rot'", "'rotv'", "'jpeg'"}
    assert "'rot' ~ 't1' (" in " ".join(found.near_copies.examples)
    assert found.near_copies.label_conflicts == 1 and found.near_copies.examples[0].startswith("'rotv' ~ 'v0' (")
    assert found.near_copies.examples[0].endswith(" bits differ, another label)")
    assert "1 of the near-copies carries another label than the tile copied" in found.problem()
    problem = found.problem()
    assert "1 test tile is pixel-identical to train tiles" in problem
    assert "2 test tiles are near-copies of train tiles (rotated, flipped, re-saved, resized or recoloured)" in problem
    assert found.to_json()["near_copies"]["max_bits"] == NEAR_COPY_BITS


def _split_folders(root: Path, kather_sample: Path) -> Path:
    """train/val/test folders of real Kather tiles; test holds a train tile rotated and re-saved as JPEG."""
    for split, pick in (("train", slice(0, 2)), ("val", slice(2, 3))):
        for name, folder in (("tumor", "01_TUMOR"), ("stroma", "02_STROMA")):
            (root / split / name).mkdir(parents=True)
            for tile in sorted((kather_sample / folder).iterdir())[pick]:
                shutil.copy(tile, root / split / name / tile.name)
    (root / "test" / "tumor").mkdir(parents=True)
    shutil.copy(sorted((kather_sample / "03_COMPLEX").iterdir())[0], root / "test" / "tumor" / "other.tif")
    (root / "test" / "stroma").mkdir(parents=True)
    source = np.asarray(Image.open(sorted((root / "train" / "stroma").iterdir())[0]).convert("RGB"))
    Image.fromarray(np.rot90(source).copy()).save(root / "test" / "stroma" / "turned.jpg", quality=80)
    return root


def test_a_rotated_jpeg_of_a_training_tile_is_warned_about_and_refused_on_request(tmp_path, kather_sample, caplog):
    root = _split_folders(tmp_path / "tiles", kather_sample)
    with caplog.at_level(logging.WARNING, logger="data_pipeline.duplicates"):
        data = load_dataset(split_folders_spec(root))
    assert data.duplicates.held_out_copies == 0
    assert data.duplicates.near_copies.copied_ids == {"val": (), "test": ("test/stroma/turned.jpg",)}
    [message] = [r.getMessage() for r in caplog.records]
    assert "1 test tile is near-copies of train tiles" not in message  # grammar: one tile, one near-copy
    assert "1 test tile is a near-copy of train tiles (rotated" in message
    assert "'test/stroma/turned.jpg' ~ 'train/stroma/" in message
    with pytest.raises(DataError, match=r"1 test tile is a near-copy of train tiles"):
        load_dataset(split_folders_spec(root, duplicates="error"))
