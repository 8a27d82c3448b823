"""Find, load, check and group the results.json files of a study."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flaxbench.errors import FlaxbenchError
from flaxbench.workdir import FAILED_FILE, TILE_DIGESTS_FILE, first_difference, without_tile_location

RESULTS_FILENAME = "results.json"
RESULTS_FORMAT = "flaxbench.results/1"

# Numeric fields the report reads; each may be absent or null (results.json writes NaN as null).
OPTIONAL_NUMBERS = (
    "test_loss",
    "compile_time_s",
    "images_per_second",
    "accuracy_per_second",
    "loss_per_second",
    "params",
    "layers",
    "flops_per_image",
    "macro_f1",
    "balanced_accuracy",
    "macro_auc",
    "ece",
    "temperature",
    "test_loss_temperature_scaled",
    "ece_temperature_scaled",
)
# Per-epoch history values drawn in the training-curves figure.
HISTORY_CURVES = ("val_accuracy", "train_loss", "val_loss")


@dataclass(frozen=True)
class Run:
    """One training run: the results.json it came from and its checked contents."""

    path: Path
    results: dict[str, Any]

    @property
    def seed(self) -> int | None:
        """The run's seed, or None when results.json does not record one."""
        return self.results.get("seed")

    @property
    def fold(self) -> int | None:
        """The cross-validation fold the run tested on (spec.data.cv_fold), or None."""
        return self.results.get("cv_fold")


@dataclass(frozen=True)
class RunGroup:
    """All runs that share a spec name and cross-validation (one per seed and fold): one row of the report."""

    name: str  # the spec name, NAME_<K>fold for a K-fold cross-validated row
    runs: tuple[Run, ...]  # sorted by fold, then seed (unknown seeds last), then path
    folds: int | None = None  # K of a K-fold cross-validated row

    @property
    def title(self) -> str:
        """The human label of the row: the first run's title, else the name; "(K-fold CV)" for cross-validation, with
        how many folds have results where some have none."""
        title = self.runs[0].results.get("title") or self.runs[0].results["name"]
        if self.folds is None:
            return title
        folds_run = len({run.fold for run in self.runs})
        run = "" if folds_run == self.folds else f", {folds_run} fold{'s' if folds_run > 1 else ''} run"
        return f"{title} ({self.folds}-fold CV{run})"

    @property
    def first_seed_runs(self) -> tuple[Run, ...]:
        """The runs of the row's lowest seed: its run, or one run per fold under cross-validation."""
        seed = self.runs[0].seed if self.folds is None else min((r.seed for r in self.runs if r.seed is not None),
                                                               default=None)
        return tuple(run for run in self.runs if run.seed == seed) if seed is not None else self.runs[:1]


def is_number(value: Any) -> bool:
    """True for an int or float that is not a bool (JSON numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_index_list(value: Any) -> bool:
    return isinstance(value, list) and all(is_int(v) for v in value)


def _check(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise FlaxbenchError(f"{path}: {message}; fix or remove this results.json")


def _check_predictions(predictions: Any, num_classes: int, path: Path) -> None:
    _check(isinstance(predictions, dict), path, "key 'test_predictions' must be an object")
    ids, labels, preds = (predictions.get(k) for k in ("ids", "labels", "predictions"))
    _check(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids),
        path,
        "key 'test_predictions.ids' must be a list of strings",
    )
    _check(len(set(ids)) == len(ids), path, "key 'test_predictions.ids' has duplicate tile ids")
    for key, values in (("labels", labels), ("predictions", preds)):
        _check(
            _is_index_list(values) and all(0 <= v < num_classes for v in values),
            path,
            f"key 'test_predictions.{key}' must be a list of class indices in [0, {num_classes})",
        )
        _check(len(values) == len(ids), path, f"'test_predictions.{key}' and '.ids' differ in length")
    probabilities = predictions.get("probabilities")
    if probabilities is not None:  # older results.json files have none: their AUC has no CI
        _check(isinstance(probabilities, list) and len(probabilities) == len(ids) and all(
            isinstance(row, list) and len(row) == num_classes and all(map(is_number, row)) for row in probabilities),
            path, f"key 'test_predictions.probabilities' must hold {num_classes} numbers per tile id")


def _check_history(history: Any, path: Path) -> None:
    _check(isinstance(history, list), path, "key 'history' must be a list of per-epoch objects")
    for entry in history:
        _check(
            isinstance(entry, dict) and isinstance(entry.get("epoch"), int),
            path,
            "every 'history' entry must be an object with an integer 'epoch'",
        )
        for key in HISTORY_CURVES:
            value = entry.get(key)
            _check(value is None or is_number(value), path, f"history key '{key}' must be a number or null")


def check_results(results: Any, path: Path) -> dict[str, Any]:
    """`results` if it is a usable flaxbench.results/1 object, else a FlaxbenchError naming `path`."""
    _check(isinstance(results, dict), path, "expected a JSON object at the top level")
    fmt = results.get("format")
    _check(fmt == RESULTS_FORMAT, path, f"key 'format' is {fmt!r}, expected '{RESULTS_FORMAT}'")
    name = results.get("name")
    _check(isinstance(name, str) and name != "", path, "key 'name' must be a non-empty string")
    title = results.get("title")
    _check(title is None or isinstance(title, str), path, "key 'title' must be a string")
    classes = results.get("classes")
    _check(
        isinstance(classes, list) and len(classes) > 0 and all(isinstance(c, str) for c in classes),
        path,
        "key 'classes' must be a non-empty list of class names",
    )
    accuracy = results.get("test_accuracy")
    _check(
        is_number(accuracy) and 0.0 <= accuracy <= 1.0,
        path,
        f"key 'test_accuracy' must be a fraction in [0, 1], got {accuracy!r}",
    )
    time_s = results.get("train_time_s")
    _check(is_number(time_s) and time_s >= 0, path, f"key 'train_time_s' must be a number >= 0, got {time_s!r}")
    for key in OPTIONAL_NUMBERS:
        value = results.get(key)
        _check(value is None or is_number(value), path, f"key '{key}' must be a number or null, got {value!r}")
    seed = results.get("seed")
    _check(seed is None or is_int(seed), path, f"key 'seed' must be an integer, got {seed!r}")
    fold, folds = results.get("cv_fold"), results.get("cv_folds")
    _check((fold is None and folds is None) or (is_int(fold) and is_int(folds) and 0 <= fold < folds), path,
           f"keys 'cv_fold' and 'cv_folds' must both be null or a fold 0 <= cv_fold < cv_folds, got {fold!r} and "
           f"{folds!r}")
    for key in ("source", "device", "dtype"):
        _check(results.get(key) is None or isinstance(results[key], str), path, f"key '{key}' must be a string")
    _check(isinstance(results.get("synthetic", False), bool), path, "key 'synthetic' must be true or false")
    cm = results.get("confusion_matrix")
    if cm is not None:
        _check(
            isinstance(cm, list)
            and len(cm) == len(classes)
            and all(_is_index_list(row) and len(row) == len(classes) and min(row) >= 0 for row in cm),
            path,
            f"key 'confusion_matrix' must be a {len(classes)}x{len(classes)} matrix of counts (one row per class)",
        )
    if results.get("test_predictions") is not None:
        _check_predictions(results["test_predictions"], len(classes), path)
    if results.get("history") is not None:
        _check_history(results["history"], path)
    return results


def load_results(path: str | Path) -> dict[str, Any]:
    """The checked contents of one results.json; a one-line FlaxbenchError if unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise FlaxbenchError(f"{path}: cannot read results file ({err.__class__.__name__}: {err})") from None
    try:
        results = json.loads(text)
    except json.JSONDecodeError as err:
        raise FlaxbenchError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "fix or remove this results.json"
        ) from None
    return check_results(results, path)


def find_results_files(runs_dir: str | Path) -> list[Path]:
    """Every results.json at any depth under `runs_dir`, in sorted path order."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FlaxbenchError(f"runs directory '{runs_dir}' does not exist or is not a directory")
    found = sorted(p for p in runs_dir.rglob(RESULTS_FILENAME) if p.is_file())
    if not found:
        raise FlaxbenchError(
            f"no {RESULTS_FILENAME} found under '{runs_dir}'; train at least one spec into it first"
        )
    return found


def find_unfinished_runs(runs_dir: str | Path) -> list[Path]:
    """The run directories under `runs_dir` that hold a spec.json or a study's failed.json but no results.json:
    started, or asked for, and not finished."""
    started = {found.parent for name in ("spec.json", FAILED_FILE) for found in Path(runs_dir).rglob(name)
               if found.is_file()}
    return sorted(run for run in started if not (run / RESULTS_FILENAME).is_file())


def run_failure(run_dir: Path) -> str | None:
    """The error a study recorded for the run in `run_dir` (its failed.json), or None."""
    try:
        error = json.loads((run_dir / FAILED_FILE).read_text(encoding="utf-8")).get("error")
    except (OSError, ValueError, AttributeError):
        return None
    return str(error) if error else None


def _run_order(run: Run) -> tuple[int, bool, int, str]:
    return (run.fold or 0, run.seed is None, run.seed if run.seed is not None else 0, str(run.path))


# What the seeds of one report row must share: the data, the model and how it was trained.
# `source` may differ where data.json's digests say the tiles are the same: seeds trained on the
# same tiles read from different folders (a cluster job's scratch copy) share a row.
SAME_FOR_EVERY_SEED = ("classes", "source", "synthetic", "split_sizes", "model", "init", "params", "epochs",
                       "batch_size", "dtype")


def _split_digests(run: Run) -> dict[str, str] | None:
    """The tile digests in the data.json beside a run's results.json; None if there are none."""
    try:
        record = json.loads((run.path.parent / "data.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    digests = record.get("split_digests") if isinstance(record, dict) else None
    return digests if isinstance(digests, dict) and digests else None


def _pixel_digest(run: Run) -> str | None:
    """One digest of the tile_digests.npz beside a run's results.json (its splits' pixel digests); None if absent."""
    try:
        with np.load(run.path.parent / TILE_DIGESTS_FILE) as arrays:
            return hashlib.sha256(b"".join(arrays[name].tobytes() for name in ("train", "val", "test"))).hexdigest()
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def saved_spec(run: Run) -> dict[str, Any] | None:
    """The spec.json beside a run's results.json, without its seed; None if there is none."""
    path = run.path.parent / "spec.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(spec, dict):
        return None
    if isinstance(spec.get("data"), dict):  # the folds of one cross-validated row differ in their test fold
        spec = {**spec, "data": {k: v for k, v in spec["data"].items() if k != "cv_fold"}}
    return {key: value for key, value in spec.items() if key != "seed"}


def _check_group(name: str, runs: list[Run]) -> None:
    """Runs of one row must be comparable: same data, model and training, distinct seeds (and folds)."""
    for previous, run in zip(runs, runs[1:]):  # sorted by fold and seed, so equal ones are neighbours
        if run.fold != previous.fold:  # other folds of the same tiles: their splits differ by design
            digests, same_tiles = (None, None), False
        else:
            digests = _split_digests(previous), _split_digests(run)
            same_tiles = None not in digests and digests[0] == digests[1]
        for key in SAME_FOR_EVERY_SEED:
            if (key == "source" and same_tiles) or (key == "split_sizes" and run.fold != previous.fold):
                continue
            if run.results.get(key) != previous.results.get(key):
                raise FlaxbenchError(
                    f"runs named '{name}' disagree on '{key}' ({previous.results.get(key)!r} in {previous.path}, "
                    f"{run.results.get(key)!r} in {run.path}); give different specs different names"
                )
        if None not in digests and not same_tiles:
            raise FlaxbenchError(
                f"runs named '{name}' were trained on different tiles (their data.json digests differ: "
                f"{previous.path.parent}, {run.path.parent}); give different specs different names"
            )
        pixels = (_pixel_digest(previous), _pixel_digest(run)) if same_tiles else (None, None)
        if None not in pixels and pixels[0] != pixels[1]:
            raise FlaxbenchError(
                f"runs named '{name}' were trained on tiles of the same names but other pixels (their "
                f"{TILE_DIGESTS_FILE} differ: {previous.path.parent}, {run.path.parent}; a copy of the tiles with a "
                "file replaced or re-saved?); train them on the same tiles, or give different specs different names"
            )
        # Every other setting (learning rate, split seed, augmentation, ...) from the runs' spec.json.
        specs = saved_spec(previous), saved_spec(run)
        if same_tiles and None not in specs:
            specs = without_tile_location(specs[0]), without_tile_location(specs[1])
        difference = first_difference(*specs) if None not in specs else None
        if difference:
            key, ours, theirs = difference
            raise FlaxbenchError(
                f"runs named '{name}' differ in more than their seed: spec.{key} is {ours!r} in "
                f"{previous.path.parent} and {theirs!r} in {run.path.parent}; give different specs different names"
            )
        if run.seed is not None and run.seed == previous.seed and run.fold == previous.fold:
            fold = "" if run.fold is None else f" and fold {run.fold}"
            raise FlaxbenchError(
                f"two results for '{name}' with seed {run.seed}{fold}: {previous.path} and {run.path}; remove one"
            )


def collect_runs(runs_dir: str | Path) -> list[RunGroup]:
    """Load every results.json under `runs_dir` and group the runs by spec name and cross-validation folds.

    A spec's cross-validated runs (`study --folds K`) are a row of their own beside its runs on one split.
    """
    by_row: dict[tuple[str, int], list[Run]] = {}
    for path in find_results_files(runs_dir):
        results = load_results(path)
        key = (results["name"], results.get("cv_folds") or 0)
        by_row.setdefault(key, []).append(Run(path=path, results=results))
    groups = []
    for (name, folds), runs in sorted(by_row.items()):
        runs.sort(key=_run_order)
        row = name if not folds else f"{name}_{folds}fold"  # as `study --folds` names the row's folder
        _check_group(row, runs)
        groups.append(RunGroup(name=row, runs=tuple(runs), folds=folds or None))
    return groups

