"""`evaluate --external --group-by`: the external accuracy's 95% CI over the tiles' patients or slides."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from data_pipeline import DataError
from flaxbench.external import evaluate_external
from flaxbench.group_intervals import group_accuracy_interval, group_paired_comparison
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
    tumour, label = result["per_class"]["tumor"], result["classes"].index("tumor")
    # the NCT sample's 12 TUM tiles end in 10 of the letters standing in for patients
    assert tumour["recall_groups"] == len({p for p, y in zip(patients, predictions["labels"]) if y == label}) == 10
    assert tumour["recall_ci_groups"][0] <= tumour["recall"] <= tumour["recall_ci_groups"][1]
    written = write_report(kather_run.parent, tmp_path / "report")
    line = next(e for e in json.loads(written["json"].read_text())["external"] if e["file"].endswith("_nct.json"))
    assert line["groups"] == expected.groups and line["accuracy_ci_groups"] == pytest.approx(list(expected.interval))
    for key in ("balanced_accuracy_ci_groups", "macro_auc_ci_groups"):  # recomputed from the file's predictions
        assert line[key] == pytest.approx(result[key]) and result[key][0] <= result[key[:-len("_groups")]][0]
    low, high = (f"{100 * x:.1f}" for x in expected.interval)
    assert f"; {low}–{high} over {expected.groups} groups)" in written["md"].read_text()
    # the same tiles scored with TTA too: the two lines are compared over the groups as well as tile by tile
    tta, _ = evaluate_external(kather_run, str(NCT), class_map=class_map, group_by=pattern, tta=True,
                               out=kather_run / "eval_external_nct_tta.json")
    written = write_report(kather_run.parent, tmp_path / "again")
    lines = [e for e in json.loads(written["json"].read_text())["external"] if "_nct" in e["file"]]
    other = next(e for e in lines if not e["best_on_these_tiles"])
    assert tta["predictions"]["ids"] == predictions["ids"]
    right = {r["tta"]: np.equal(r["predictions"]["labels"], r["predictions"]["predictions"]) for r in (tta, result)}
    ours, theirs = right[other["tta"]], right[not other["tta"]]
    assert other["p_vs_best_groups"] == pytest.approx(group_paired_comparison(ours, theirs, patients).p_value)
    assert f"; over groups {other['p_vs_best_groups']:.3g}" in written["md"].read_text()
    for name in ("eval_external_nct.json", "eval_external_nct_tta.json"):
        (kather_run / name).unlink()
    proc = run_cli("evaluate", f"--workdir={kather_run}", "--group-by=x")
    assert proc.returncode == 2 and "evaluate takes --group-by only with --external PATH" in proc.stderr
