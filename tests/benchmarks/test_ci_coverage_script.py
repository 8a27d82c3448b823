"""The CI coverage benchmark: per scenario and method, a coverage count over simulated test sets."""

import json
import subprocess
import sys

from tests.helpers import REPO


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/ci_coverage.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_each_scenario_gives_both_methods_coverage_counts():
    proc = run_script("--samples", "4", "--resamples", "20", "--only", "balanced accuracy 0.95,accuracy difference",
                      "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(row["scenario"].split(",")[0], row["method"]) for row in rows] == [
        ("balanced accuracy 0.95", "flaxbench"), ("balanced accuracy 0.95", "percentile bootstrap"),
        ("accuracy difference 0.05", "flaxbench"), ("accuracy difference 0.05", "percentile bootstrap")]
    for row in rows:
        assert row["samples"] == 4 and row["below"] + row["above"] <= 4 and row["mean_width"] > 0
        assert row["coverage"] == round(1 - (row["below"] + row["above"]) / 4, 4)


def test_a_grouped_scenario_shows_the_tile_level_interval_beside_the_one_over_patients():
    proc = run_script("--samples", "3", "--resamples", "10", "--only", "accuracy over", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    methods = [json.loads(line)["method"] for line in proc.stdout.splitlines()]
    assert methods == ["flaxbench", "Wilson over tiles", "percentile bootstrap"]


def test_an_unknown_scenario_is_one_line_naming_them():
    proc = run_script("--only", "kappa", "--samples", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("ci_coverage: --only 'kappa' names no scenario; the scenarios: class F1")


def test_coverage_is_rounded_to_four_decimals():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("ci_coverage_script", REPO / "benchmarks" / "ci_coverage.py")
    ci_coverage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ci_coverage)
    intervals = iter([(0.0, 1.0), (0.0, 1.0), (0.6, 0.7)])  # the third test set's interval misses 0.5 above it
    scenario = ci_coverage.Scenario("fake", 0.5, lambda rng: {"x": np.array([0.2, 0.8])}, lambda test: next(intervals),
                                    lambda test, picks: test["x"][picks].mean(axis=1))
    row = ci_coverage.coverage(scenario, 3, 5, 0)[0]
    assert row["method"] == "flaxbench" and row["below"] == 1 and row["coverage"] == 0.6667
