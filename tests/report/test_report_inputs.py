"""Which runs a report reads and what it says of them: their devices, runs without results, bad or no input."""

from __future__ import annotations

import json
import re

import pytest

from flaxbench.errors import FlaxbenchError
from flaxbench.report import write_report
from tests.report.factory import make_results, write_results
from tests.report.test_report import _md_table


def test_device_column_names_each_rows_devices(tmp_path):
    h100, epyc = "gpu: NVIDIA H100 80GB HBM3 x1", "cpu: AMD EPYC 7B13 (2 cores) x1"
    write_results(tmp_path / "fast" / "results.json",
                  {**make_results("fast", accuracy=0.9), "device": h100, "dtype": "bfloat16"})
    for seed, device in enumerate((epyc, h100)):
        write_results(tmp_path / "split" / f"seed_{seed}" / "results.json",
                      {**make_results("split", seed=seed), "device": device})
    written = write_report(tmp_path)
    md_text = written["md"].read_text()
    _, md_rows = _md_table(md_text)
    assert md_rows["fast"]["Device"] == f"{h100}, bfloat16"
    marker = re.fullmatch(r"cpu: AMD EPYC 7B13 \(2 cores\) x1; .+, float32 (\[\d+\])", md_rows["split"]["Device"]).group(1)
    assert "runs ran on different devices" in next(line for line in md_text.splitlines() if line.startswith(marker))
    assert f"**Not one device**: these rows were timed on different devices ({epyc}; {h100})" in md_text
    report = json.loads(written["json"].read_text())
    assert report["devices"] == [epyc, h100]
    assert {row["name"]: row["device"] for row in report["rows"]} == {"fast": h100, "split": f"{epyc}; {h100}"}
    starts = [{"first_epoch": 1, "device": epyc, "num_devices": 1},
              {"first_epoch": 2, "device": h100, "num_devices": 1}]
    write_results(tmp_path / "fast" / "results.json",  # trained its first epoch on the CPU, resumed on the GPU
                  {**make_results("fast", accuracy=0.9), "device": h100, "device_starts": starts})
    row = next(row for row in json.loads(write_report(tmp_path)["json"].read_text())["rows"] if row["name"] == "fast")
    assert row["device"] == f"{epyc}; {h100}"


def test_runs_without_results_are_named_not_silently_left_out(tmp_path):
    for seed in (0, 1):
        write_results(tmp_path / "net" / f"seed_{seed}" / "results.json", make_results("net", seed=seed))
    interrupted = tmp_path / "net" / "seed_2"
    (interrupted / "checkpoints").mkdir(parents=True)
    (interrupted / "spec.json").write_text(json.dumps({"name": "net", "seed": 2}))
    paths = write_report(tmp_path)
    markdown = paths["md"].read_text()
    assert "**Not in the tables**: 1 run without results.json" in markdown and "`net/seed_2`" in markdown
    assert "% Not in the tables: 1 run(s) without results.json: net/seed_2" in paths["tex"].read_text()
    assert json.loads(paths["json"].read_text())["unfinished_runs"] == ["net/seed_2"]
    assert json.loads(paths["json"].read_text())["rows"][0]["seeds"] == 2
    from tests.helpers import run_cli

    proc = run_cli("report", str(tmp_path), f"--out={tmp_path / 'out'}")
    assert proc.returncode == 0 and proc.stderr.strip().endswith(
        "warning: 1 run(s) without results.json, not in the report (unfinished or failed): net/seed_2"), proc.stderr
    (interrupted / "spec.json").unlink()
    assert "Not in the tables" not in write_report(tmp_path)["md"].read_text()


def test_malformed_results_fail_before_writing(tmp_path):
    write_results(tmp_path / "good" / "results.json", make_results("good"))
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(FlaxbenchError, match=re.escape(str(bad))):
        write_report(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_runs_dir_is_an_error(tmp_path):
    with pytest.raises(FlaxbenchError, match="no results.json"):
        write_report(tmp_path)


def test_a_report_in_a_run_folder_goes_with_the_run_an_overwrite_replaces(tmp_path):
    from flaxbench.train.loop import train_and_evaluate
    from tests.helpers import tiny_spec

    train_and_evaluate(tiny_spec(**{"train.epochs": 1}), tmp_path, log=lambda s: None)
    (tmp_path / "external_accuracy.png").write_bytes(b"drawn by an earlier report, of an external set")
    written = write_report(tmp_path)
    assert "external_accuracy" not in written and not (tmp_path / "external_accuracy.png").exists()
    train_and_evaluate(tiny_spec(**{"train.epochs": 1, "seed": 1}), tmp_path, overwrite=True, log=lambda s: None)
    assert not [path for path in written.values() if path.exists()]  # not the report of the seed replaced
