"""Helpers that write tiny tile folders and zips for the data pipeline tests."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def random_tile(seed: int, size: int = 8) -> np.ndarray:
    """A small random uint8 RGB tile."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_tiles(root: Path, per_class: dict[str, int], size: int = 8, ext: str = ".png") -> Path:
    """Write `per_class[name]` random tiles into root/name/ and return root."""
    seed = 0
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            Image.fromarray(random_tile(seed, size)).save(root / name / f"tile_{k}{ext}")
            seed += 1
    return root


def zip_folder(folder: Path, zip_path: Path, top: str = "", compression: int = zipfile.ZIP_STORED) -> Path:
    """Zip every file under `folder` into `zip_path`, optionally under one top directory."""
    with zipfile.ZipFile(zip_path, "w", compression) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                name = file.relative_to(folder).as_posix()
                archive.write(file, f"{top}/{name}" if top else name)
    return zip_path
