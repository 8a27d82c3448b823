"""Shared fixtures: the real sample tiles, skipped when absent."""

from __future__ import annotations

from pathlib import Path

import ml_collections
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def sample_folder(name: str) -> Path:
    """The shared sample folder `name`, or skip the test saying where it was looked for."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"sample tiles not found at {path} (they live outside the repo, in shared/data)")
    return path


@pytest.fixture
def kather_sample() -> Path:
    """Kather 2016 sample: 8 folders 01_TUMOR..08_EMPTY, 3 tiles each, 150x150 TIFF."""
    return sample_folder("kather2016_sample")


@pytest.fixture
def nct_sample() -> Path:
    """NCT-CRC-HE sample: 9 folders ADI..TUM, 12 tiles each, 224x224 TIFF."""
    return sample_folder("nct_crc_he_sample")


def split_folders_spec(root: Path, **overrides) -> ml_collections.ConfigDict:
    """spec.data for a folder `root` of train/val/test folders of tumor and stroma tiles, no augmentation."""
    return ml_collections.ConfigDict({"source": f"folder:{root}", "classes": ("tumor", "stroma"),
                                      "split": ("train", "val", "test"), "augment": (), **overrides})
