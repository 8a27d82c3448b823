"""Test tiles whose patient or slide, named by a known convention, the training tiles come from too."""

from __future__ import annotations

import logging
import re

from data_pipeline import load_dataset
from data_pipeline.shared_groups import SharedGroups, shared_groups

from .helpers import write_tiles

SLIDE = r"CRC-Prim-HE-\d+"


def test_kather_slides_in_training_and_test_are_counted_and_warned_about(kather_sample, caplog):
    with caplog.at_level(logging.WARNING, logger="data_pipeline.dataset"):
        data = load_dataset({"source": f"folder:{kather_sample}", "image_size": 16, "split": (8, 8, 8)})
    slide = {name: {re.search(SLIDE, tile).group(0) for tile in split.ids}
             for name, split in (("train", data.train), ("val", data.val), ("test", data.test))}
    training = slide["train"] | slide["val"]
    shared_tiles = sum(re.search(SLIDE, tile).group(0) in training for tile in data.test.ids)
    assert data.shared_groups == SharedGroups("Kather 2016 slides", SLIDE, len(slide["test"]),
                                              len(slide["test"] & training), 8, shared_tiles, tuple(sorted(training)))
    assert shared_tiles > 0  # the sample's 24 tiles come from 10 slides: a tile-level split shares some
    [warning] = [r.getMessage() for r in caplog.records if "spec.data.group_by" in r.getMessage()]
    assert (f"{len(slide['test'] & training)} of the {len(slide['test'])} Kather 2016 slides of the test tiles "
            f"({shared_tiles} of 8 tiles) also have tiles in train or val") in warning
    assert f"spec.data.group_by='{SLIDE}' keeps each in one split" in warning
    grouped = load_dataset({"source": f"folder:{kather_sample}", "image_size": 16, "group_by": SLIDE,
                            "classes": ("tumor", "stroma", "complex"), "split": (0.5, 0.25, 0.25)})
    # whole slides per split: nothing shared, and the training slides recorded for other tile sets
    assert grouped.shared_groups.shared_tiles == 0 and set(grouped.shared_groups.training_groups) == set(
        grouped.groups["train"]) | set(grouped.groups["val"])


def test_tcga_patients_are_found_and_ids_of_no_known_convention_are_not_checked():
    ids = {"train": ["TUM/TCGA-AA-3520-01Z_x0_y0.png", "TUM/TCGA-CM-4743-01Z_x1_y0.png"],
           "val": ["STR/TCGA-AA-3520-01Z_x2_y0.png"],
           "test": ["STR/TCGA-AA-3520-01Z_x3_y0.png", "TUM/TCGA-G4-6320-01Z_x0_y0.png"]}
    assert shared_groups(ids) == SharedGroups("TCGA patients", r"TCGA-\w\w-\w{4}", 2, 1, 2, 1,
                                              ("TCGA-AA-3520", "TCGA-CM-4743"))
    assert shared_groups({**ids, "val": ["STR/slide_9_x2_y0.png"]}) is None  # a tile naming none: not checked
    assert shared_groups({"train": ["TUM-TCGA-AAHIDTWA.tif"], "test": ["TUM-TCGA-AAHMWWKY.tif"]}) is None  # NCT codes
    assert shared_groups({"train": ids["train"], "test": []}) is None


def test_tiles_of_no_known_convention_record_nothing(tmp_path, caplog):
    source = write_tiles(tmp_path / "tiles", {"a": 8, "b": 8}, size=16)
    with caplog.at_level(logging.WARNING, logger="data_pipeline.dataset"):
        data = load_dataset({"source": f"folder:{source}", "split": (8, 4, 4)})
    assert data.shared_groups is None and not [r for r in caplog.records if "group_by" in r.getMessage()]
