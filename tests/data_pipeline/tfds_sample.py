"""A prepared TFDS `colorectal_histology` made from the real Kather 2016 sample tiles, offline.

TFDS's own builder (same features, version and array_record files) with its download replaced by
the sample folder: each tile is stored PNG-encoded, as TFDS stores the real dataset, so reading
it runs the same code as reading the real one. No TensorFlow is needed (the tiles are handed to
TFDS encoded).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from tensorflow_datasets.image_classification.colorectal_histology import ColorectalHistology

NAME = "colorectal_histology"
LABELS = ("tumor", "stroma", "complex", "lympho", "debris", "mucosa", "adipose", "empty")


class _FromSampleTiles(ColorectalHistology, skip_registration=True):
    """colorectal_histology whose examples come from a local folder: `copies` of each tile per split."""

    name = NAME
    url_infos: dict = {}  # nothing to download (TFDS would look for a checksums file beside this module)

    def __init__(self, *, tiles: Path, splits: Sequence[str], copies: int, **kwargs):
        self._tiles, self._splits, self._copies = tiles, tuple(splits), copies
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in self._splits}

    def _generate_examples(self, split):
        for folder in sorted(p for p in self._tiles.iterdir() if p.is_dir()):
            label = folder.name.split("_", 1)[1].lower()
            for path in sorted(folder.glob("*.tif")):
                for copy in range(self._copies):
                    filename = f"{split}{copy}_{path.name}"
                    yield f"{label}/{filename}", {"image": _png(path), "label": label, "filename": filename}


def _png(path: Path) -> bytes:
    """The image file `path` as PNG bytes; a file that is no image as its own bytes (TFDS checks none)."""
    try:
        image = Image.open(path).convert("RGB")
    except OSError:
        return path.read_bytes()
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def prepare(data_dir: Path, tiles: Path, splits: Sequence[str] = ("train",), copies: int = 1) -> Path:
    """`data_dir` with colorectal_histology prepared from class folders `tiles` (8 Kather classes), in `splits`."""
    builder = _FromSampleTiles(tiles=tiles, splits=splits, copies=copies, data_dir=str(data_dir),
                               file_format="array_record")
    builder.download_and_prepare()
    return data_dir
