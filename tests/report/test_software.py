"""The report names the software its runs used, and which rows used which version where they differ."""

from __future__ import annotations

import json

from flaxbench.report import write_report
from tests.report.factory import make_results, write_results

VERSIONS = {"python": "3.11.7", "jax": "0.10.2", "flax": "0.12.8"}


def _write(runs_dir, name, seed=0, versions=VERSIONS):
    results = make_results(name, seed=seed)
    if versions is not None:
        results.update(versions=versions, flaxbench_version="0.1.0")
    write_results(runs_dir / name / f"seed_{seed}" / "results.json", results)


def _software(runs_dir):
    paths = write_report(runs_dir, runs_dir / "out")
    line = next(line for line in paths["md"].read_text().splitlines() if line.startswith("Software"))
    return line, json.loads(paths["json"].read_text())["software"]


def test_runs_on_the_same_software_get_one_line(tmp_path):
    _write(tmp_path, "a")
    _write(tmp_path, "a", seed=1)
    _write(tmp_path, "b")
    line, software = _software(tmp_path)
    assert line == ("Software (results.json's `versions`): flaxbench 0.1.0, python 3.11.7, jax 0.10.2, "
                    "flax 0.12.8.")
    assert {v: set(rows) for v, rows in software["versions"]["jax"].items()} == {"0.10.2": {"a", "b"}}
    assert software["unrecorded"] == []


def test_differing_versions_name_their_rows_and_unrecorded_runs_are_named(tmp_path):
    _write(tmp_path, "a")
    _write(tmp_path, "a", seed=1, versions={**VERSIONS, "jax": "0.9.0"})
    _write(tmp_path, "b", versions={**VERSIONS, "jax": "0.9.0"})
    _write(tmp_path, "old", versions=None)
    line, software = _software(tmp_path)
    assert "python 3.11.7, flax 0.12.8, jax " in line
    # each version with the rows that used it, rows in the report's order (best first)
    rows = [row["name"] for row in json.loads((tmp_path / "out" / "report.json").read_text())["rows"]]
    used_09 = ", ".join(f"`{name}`" for name in rows if name in ("a", "b"))
    assert f"jax 0.10.2 (`a`) or 0.9.0 ({used_09})" in line or f"jax 0.9.0 ({used_09}) or 0.10.2 (`a`)" in line
    assert "The runs used different versions of jax: numbers and times may differ" in line
    assert line.endswith("Not recorded by `old` (runs from before flaxbench recorded versions).")
    assert set(software["versions"]["jax"]) == {"0.10.2", "0.9.0"} and software["unrecorded"] == ["old"]


def test_no_recorded_versions_says_so(tmp_path):
    _write(tmp_path, "old", versions=None)
    line, software = _software(tmp_path)
    assert line.startswith("Software: not recorded")
    assert software == {"versions": {}, "unrecorded": ["old"]}
