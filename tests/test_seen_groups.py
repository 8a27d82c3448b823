"""Patients or slides named by a known convention: tiles scored later from those a run trained on, found by their
names, not pixels; CIs over them for a run split tile by tile."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from flaxbench.external import evaluate_external
from flaxbench.evaluation import accuracy_without
from flaxbench.predict import predict_paths
from flaxbench.report import write_report
from tests.data_pipeline.helpers import random_tile
from tests.helpers import SHARED_DATA

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "kather2016_sample").is_dir(),
                                reason=f"sample tiles not found in {SHARED_DATA}")


def _cohort(root, slides_by_class: dict[str, list[str]]):
    """New random tiles in class folders, each named as a Kather 2016 tile cut from `slide`."""
    seed = 1000
    for name, slides in slides_by_class.items():
        (root / name).mkdir(parents=True)
        for k, slide in enumerate(slides):
            Image.fromarray(random_tile(seed, 32)).save(root / name / f"{k:04X}_{slide}_001.tif_Row_1_Col_{k}.png")
            seed += 1
    return root


def test_external_tiles_from_the_runs_training_slides_are_counted_warned_about_and_left_out(kather_run, tmp_path,
                                                                                            capsys):
    trained = json.loads((kather_run / "data.json").read_text())["shared_groups"]["training_groups"]
    assert trained and all(name.startswith("CRC-Prim-HE-") for name in trained)
    cohort = _cohort(tmp_path / "cohort", {"tumor": [trained[0], trained[0], "CRC-Prim-HE-99"],
                                           "stroma": [trained[-1], "CRC-Prim-HE-98", "CRC-Prim-HE-97"]})
    out = kather_run / "eval_external_cohort.json"
    result, _ = evaluate_external(kather_run, str(cohort), out=out)
    found = result["seen_groups"]
    assert (found["what"], found["tiles"]) == ("Kather 2016 slides", 3)
    assert found["groups"] == sorted({trained[0], trained[-1]}) and len(found["trained_ids"]) == 3
    assert result["accuracy_without_seen_groups"] == accuracy_without(result["predictions"], set(found["trained_ids"]))
    warning = capsys.readouterr().err
    assert f"warning: 3 of these tiles come from {len(found['groups'])} Kather 2016 slides the run trained or " \
           "validated on" in warning and "these tiles are not external to it" in warning
    report = write_report(kather_run.parent, tmp_path / "report")["md"].read_text()
    assert " (3 from Kather 2016 slides trained on; accuracy without them " in report
    out.unlink()
    predict_paths(kather_run, [str(cohort)], tmp_path / "predictions.csv")
    assert "warning: 3 of these tiles come from" in capsys.readouterr().err
    elsewhere = _cohort(tmp_path / "elsewhere", {"tumor": ["CRC-Prim-HE-99"], "stroma": ["CRC-Prim-HE-98"]})
    result, _ = evaluate_external(kather_run, str(elsewhere), out=tmp_path / "elsewhere.json")
    assert result["seen_groups"]["tiles"] == 0 and result["accuracy_without_seen_groups"] is None
    assert "Kather 2016 slides the run trained" not in capsys.readouterr().err


def test_a_tile_level_split_of_kather_tiles_gets_its_cis_over_their_slides(kather_run, tmp_path):
    import re

    from flaxbench.train.evaluate import evaluate_workdir

    out = evaluate_workdir(kather_run, "test")  # split tile by tile: no spec.data.group_by
    slides = {re.search(r"CRC-Prim-HE-\d+", tile).group(0) for tile in out["predictions"]["ids"]}
    assert out["groups"] == len(slides) >= 2 and out["accuracy_ci_groups"] is not None
    row = json.loads(write_report(kather_run.parent, tmp_path / "report")["json"].read_text())["rows"][0]
    assert row["test_groups"] == len(slides) and row["test_accuracy_group_ci95_low_pct"] is not None
