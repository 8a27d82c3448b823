"""`evaluate --external --group-by`: the external accuracy's 95% CI over the tiles' patients or slides."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from data_pipeline import DataError
from flaxbench.external import evaluate_external
from flaxbench.group_intervals import group_accuracy_interval
from flaxbench.report import write_report
from tests.helpers import SHARED_DATA, run_cli

KATHER = SHARED_DATA / "kather2016_sample"
NCT = SHARED_DATA / "nct_crc_he_sample"

pytestmark = pytest.mark.skipif(not (KATHER.is_dir() and NCT.is_dir()), reason=f"sample tiles not found in {SHARED_DATA}")


def test_group_by_adds_the_accuracys_ci_over_the_tiles_patients(kather_run, tmp_path):
    class_map = "TUM=tumor,STR=stroma,LYM=lympho,DEB=debris,MUC=mucosa,ADI=adipose,BACK=empty"
    pattern = r"([A-Z])\.tif$"  # stands in for a patient: the last letter of each NCT tile's code
    with pytest.raises(DataError, match=r"--group-by 'slide_.*' finds no group in tile '[A-Z]+/"):
        evaluate_external(kather_run, str(NCT), class_map=class_map, group_by=r"slide_(\d+)",
                          out=tmp_path / "none.json")
    assert not (tmp_path / "none.json").exists()
    result, _ = evaluate_external(kather_run, str(NCT), class_map=class_map, group_by=pattern,
                                  out=kather_run / "eval_external_nct.json")
    predictions = result["predictions"]
    patients = [re.search(pattern, tile).group(1) for tile in predictions["ids"]]
    expected = group_accuracy_interval(np.equal(predictions["labels"], predictions["predictions"]), None, patients)
    assert result["group_by"] == pattern and result["groups"] == expected.groups == len(set(patients)) > 2
    assert result["accuracy_ci_groups"] == list(expected.interval)
    written = write_report(kather_run.parent, tmp_path / "report")
    line = next(e for e in json.loads(written["json"].read_text())["external"] if e["file"].endswith("_nct.json"))
    assert line["groups"] == expected.groups and line["accuracy_ci_groups"] == pytest.approx(list(expected.interval))
    low, high = (f"{100 * x:.1f}" for x in expected.interval)
    assert f"; {low}–{high} over {expected.groups} groups)" in written["md"].read_text()
    (kather_run / "eval_external_nct.json").unlink()
    proc = run_cli("evaluate", f"--workdir={kather_run}", "--group-by=x")
    assert proc.returncode == 2 and "evaluate takes --group-by only with --external PATH" in proc.stderr
