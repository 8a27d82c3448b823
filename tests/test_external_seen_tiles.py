"""`evaluate --external` and `predict` on tiles that copy the run's own, found by their pixels or as near copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flaxbench.external import evaluate_external
from flaxbench.train.evaluate import evaluate_workdir
from tests.helpers import SHARED_DATA

KATHER = SHARED_DATA / "kather2016_sample"
NCT = SHARED_DATA / "nct_crc_he_sample"

pytestmark = pytest.mark.skipif(not (KATHER.is_dir() and NCT.is_dir()), reason=f"sample tiles not found in {SHARED_DATA}")


def test_tiles_the_run_trained_on_are_found_by_their_pixels(kather_run, tmp_path, capsys):
    from flaxbench.predict import predict_paths

    train = evaluate_workdir(kather_run, "train")
    folder = tmp_path / "copies"
    # two training tiles, saved as PNGs under new names that do not name their slide (tests/test_seen_groups.py)
    for k, tile_id in enumerate(train["predictions"]["ids"][:2]):
        target = folder / Path(tile_id).parent.name / f"copy_{k}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(KATHER / tile_id).save(target)
    shutil.copytree(NCT / "TUM", folder / "01_TUMOR", dirs_exist_ok=True)  # other tiles
    result, path = evaluate_external(kather_run, str(folder))
    try:
        from flaxbench.report import write_report

        report = write_report(kather_run.parent, tmp_path / "r")["md"].read_text()
        unseen = result["accuracy_without_seen"]  # the 12 NCT tiles'
        assert f"| 14 (2 seen in training; accuracy without them {100 * unseen:.1f}%) | best |" in report
    finally:
        path.unlink()  # the module's other tests see the run's external evaluations
    assert result["seen_by_runs"]["train"] == 2 and result["seen_by_runs"]["val"] == 0
    copies = set(result["seen_by_runs"]["trained_ids"])
    assert len(copies) == 2 and all("copy_" in tile for tile in copies)
    others = [label == predicted for tile, label, predicted in zip(*(result["predictions"][key] for key in (
        "ids", "labels", "predictions"))) if tile not in copies]
    assert len(others) == 12 and result["accuracy_without_seen"] == pytest.approx(np.mean(others))
    assert all("copy_" in example and example.endswith("(train)") for example in result["seen_by_runs"]["examples"])
    assert ("warning: 2 of these tiles are copies of tiles the run trained or validated on (pixel-identical: train 2, "
            "val 0; e.g.") in capsys.readouterr().err
    predict_paths(kather_run, [str(folder)], tmp_path / "p.csv")
    assert "2 of these tiles are copies" in capsys.readouterr().err
    older = tmp_path / "older_run"  # a run from before tile digests were kept
    shutil.copytree(kather_run, older)
    (older / "tile_digests.npz").unlink()
    result, _ = evaluate_external(older, str(folder), out=tmp_path / "f.json")
    assert result["seen_by_runs"] is None and "copies" not in capsys.readouterr().err


def test_rotated_re_saved_training_tiles_are_found_as_near_copies(kather_run, tmp_path, capsys):
    from flaxbench.predict import predict_paths

    train = evaluate_workdir(kather_run, "train")
    folder = tmp_path / "near"
    for tile_id in train["predictions"]["ids"][:3]:  # three training tiles, turned and saved as JPEG
        target = folder / Path(tile_id).parent.name / f"turned_{Path(tile_id).stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rot90(np.asarray(Image.open(KATHER / tile_id).convert("RGB"))).copy()).save(target,
                                                                                                       quality=80)
    shutil.copytree(NCT / "TUM", folder / "01_TUMOR", dirs_exist_ok=True)  # other tiles
    result, _ = evaluate_external(kather_run, str(folder), out=tmp_path / "near.json")
    seen = result["seen_by_runs"]
    assert (seen["train"], seen["val"], seen["near"]) == (0, 0, {"train": 3, "val": 0, "test": 0})
    assert sorted(seen["trained_ids"]) == sorted(
        f"{Path(t).parent.name}/turned_{Path(t).stem}.jpg" for t in train["predictions"]["ids"][:3])
    assert all(example.endswith("(train, near-copy)") for example in seen["examples"])
    assert "warning: 3 of these tiles are copies of tiles the run trained or validated on (near-copies, rotated" in (
        capsys.readouterr().err)
    others = [label == predicted for tile, label, predicted in zip(*(result["predictions"][key] for key in (
        "ids", "labels", "predictions"))) if "turned_" not in tile]
    assert result["accuracy_without_seen"] == pytest.approx(np.mean(others))
    predict_paths(kather_run, [str(folder)], tmp_path / "p.csv")
    assert "3 of these tiles are copies of tiles the run trained or validated on (near-copies" in (
        capsys.readouterr().err)


def test_a_damaged_digest_file_is_warned_about_and_the_tiles_go_unchecked(kather_run, tmp_path, capsys):
    from flaxbench.seen_tiles import load_seen_tiles

    seen = load_seen_tiles([kather_run])
    assert len(seen.digests) == 24  # the eight classes' 3 tiles each, all distinct
    assert {name: len(hashes) for name, hashes in seen.hashes.items()} == {"train": 8, "val": 8, "test": 8}
    damaged = tmp_path / "run"
    damaged.mkdir()
    (damaged / "tile_digests.npz").write_bytes(b"not a zip")
    assert load_seen_tiles([kather_run, damaged]) is None
    assert f"warning: cannot read '{damaged / 'tile_digests.npz'}'" in capsys.readouterr().err
    np.savez(damaged / "tile_digests.npz", train=np.zeros((2, 3)), val=np.zeros((0, 16)), test=np.zeros((0, 16)))
    assert load_seen_tiles([damaged]) is None and "does not hold 16-byte tile digests" in capsys.readouterr().err
