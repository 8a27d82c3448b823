"""The run directory: refuse to clobber results, check it is writable, keep the resolved spec."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from flaxbench.errors import WorkdirError
from flaxbench.results import write_text_atomic
from flaxbench.spec import to_json

MIN_FREE_BYTES = 200 * 2**20  # checkpoints of the largest study row need about this much
TILE_DIGESTS_FILE = "tile_digests.npz"  # each split's tile digests (flaxbench/seen_tiles.py)
FAILED_FILE = "failed.json"  # a study run that failed: its error, until the study trains it again
# what --overwrite clears, besides eval_<split>.json
# What `report` writes (into a run's own folder by default, e.g. `report runs/x`), figures last.
REPORT_FIGURES = ("accuracy_vs_time", "confusion_matrices", "training_curves", "per_class_recall", "roc_curves",
                  "reliability_diagrams", "external_accuracy")
REPORT_OUTPUTS = ("report.md", "report.csv", "report.json", "report.tex", *(f"{name}.png" for name in REPORT_FIGURES))
RUN_OUTPUTS = ("results.json", "spec.json", "data.json", TILE_DIGESTS_FILE, "checkpoints", "tensorboard",
               "predictions.csv", "predictions_groups.csv", "predictions_maps")  # the last three: predict's outputs


# Spec keys that change where the work is done, or its label, but not what is computed: a run may
# resume, and a report row join seeds, with another value. (Another device count sums in another
# order, as `mesh.data=-1` on another machine does.)
SAME_NUMBERS_EITHER_WAY = frozenset({"train.data_placement", "title", "data.duplicates", "mesh.data"})


def first_difference(old: dict, new: dict, prefix: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, old value, new value) of the first key, sorted and nested, where two spec dicts differ.

    Keys in SAME_NUMBERS_EITHER_WAY are not compared.
    """
    for key in sorted(set(old) | set(new)):
        if f"{prefix}{key}" in SAME_NUMBERS_EITHER_WAY:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}", a, b
    return None


# Where the tiles are read from may change between sessions (a cluster job copies them to its own
# scratch folder); whether they are the same tiles is for data.json's digests to say.
WHERE_TILES_ARE = ("data", "source")


def without_tile_location(spec: dict) -> dict:
    """A spec dict (as spec.json holds it) without spec.data.source."""
    section, key = WHERE_TILES_ARE
    if not isinstance(spec.get(section), dict):
        return spec
    return {**spec, section: {k: v for k, v in spec[section].items() if k != key}}


def spec_difference(workdir: Path, spec: ml_collections.ConfigDict, *, tiles_may_move: bool = False) -> str | None:
    """The first key where `spec` differs from the one saved in `workdir` (None if equal or none saved).

    `tiles_may_move` leaves spec.data.source out, for callers that compare the tiles' digests instead.
    """
    saved_path = workdir / "spec.json"
    if not saved_path.exists():
        return None
    saved, now = json.loads(saved_path.read_text()), json.loads(to_json(spec))
    if tiles_may_move:
        saved, now = without_tile_location(saved), without_tile_location(now)
    found = first_difference(saved, now)
    return f"spec.{found[0]} ({found[1]!r} before, {found[2]!r} now)" if found else None


def check_writable(workdir: Path) -> None:
    """Fail before training if `workdir` cannot be written or its disk is nearly full."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise WorkdirError(f"workdir '{workdir}' is not writable ({e.strerror}); choose another --workdir") from None
    free = shutil.disk_usage(workdir).free
    if free < MIN_FREE_BYTES:
        raise WorkdirError(
            f"workdir '{workdir}' has only {free / 2**20:.0f} MiB free disk; free space or choose another --workdir"
        )


def check_workdir(workdir: str | Path, spec: ml_collections.ConfigDict, *, overwrite: bool) -> Path:
    """Fail unless `workdir` can take `spec`: new, resumable (same spec), or to be replaced (`overwrite`)."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"workdir '{workdir}' exists and is not a directory")
    check_writable(workdir)
    init = str(spec.model.get("init", ""))
    if init.startswith("checkpoint:") and Path(init.removeprefix("checkpoint:")).resolve() in (
        workdir.resolve(), (workdir / "checkpoints").resolve(), *(workdir / "checkpoints").resolve().glob("*")
    ):
        raise WorkdirError(
            f"spec.model.init='{init}' is the run in --workdir '{workdir}' itself, which the new run would "
            "replace; fine-tune it into another --workdir"
        )
    if overwrite:
        return workdir
    if (workdir / "results.json").exists():
        raise WorkdirError(
            f"workdir '{workdir}' already holds results.json of a finished run; pass --overwrite to "
            "replace it or choose another --workdir"
        )
    if (workdir / "checkpoints").exists():
        saved_steps = [step for step in (workdir / "checkpoints").glob("*/*") if step.name.isdigit()]
        missing = [name for name in ("spec.json", "data.json") if not (workdir / name).is_file()]
        if saved_steps and missing:
            raise WorkdirError(
                f"workdir '{workdir}' holds checkpoints but no {' or '.join(missing)}, so whether they are of "
                "this spec and these tiles cannot be checked; restore it, pass --overwrite to start over, or "
                "choose another --workdir"
            )
        # A resume checks that the tiles are the ones in data.json, wherever they are read from now.
        diff = spec_difference(workdir, spec, tiles_may_move=True)
        if diff:
            raise WorkdirError(
                f"workdir '{workdir}' holds an unfinished run of another spec ({diff} differs); resume "
                "it with the same spec, pass --overwrite to start over, or choose another --workdir"
            )
    return workdir


def claim_workdir(workdir: Path, spec: ml_collections.ConfigDict, *, overwrite: bool) -> None:
    """Clear the previous run's outputs (`overwrite`) and save `spec`; call once the run is built.

    Clearing waits until then so that a spec or data error leaves the finished run untouched.
    In a multi-process run only the main process calls this.
    """
    if overwrite:
        # Set aside, not deleted, until the new run has an epoch of its own (`forget_replaced`): a run that
        # fails before that gets them back (`restore_replaced`). Set aside already: a failed replacement's.
        keep = workdir / REPLACED
        kept_before = keep.exists()
        for target in _outputs(workdir):
            if kept_before:
                _remove(target)
            else:
                (keep / target.relative_to(workdir)).parent.mkdir(parents=True, exist_ok=True)
                target.rename(keep / target.relative_to(workdir))
        keep.mkdir(exist_ok=True)
    write_text_atomic(workdir / "spec.json", to_json(spec))


REPLACED = ".replaced"  # the outputs of the run --overwrite replaces, until the new one has trained an epoch


def _outputs(workdir: Path) -> list[Path]:
    """The outputs of a run in `workdir` that exist: RUN_OUTPUTS, a report written there, evaluations."""
    stale = [*RUN_OUTPUTS, *REPORT_OUTPUTS]  # a report of the run replaced would stay beside the new one
    return [target for target in [*(workdir / name for name in stale), *workdir.glob("eval_*.json")]
            if target.exists() or target.is_symlink()]


def _remove(target: Path) -> None:
    shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()


def forget_replaced(workdir: Path) -> None:
    """Delete the replaced run's outputs, once the run replacing it has saved an epoch."""
    if (workdir / REPLACED).is_dir():
        shutil.rmtree(workdir / REPLACED)


def restore_replaced(workdir: Path) -> None:
    """Put the replaced run's outputs back, in place of those of the run that failed before its first epoch."""
    keep = workdir / REPLACED
    if not keep.is_dir():
        return
    for target in _outputs(workdir):
        _remove(target)
    for kept in keep.iterdir():
        kept.rename(workdir / kept.name)
    keep.rmdir()


def _split_record(splits: dict[str, Any]) -> dict[str, Any]:
    """data.json's split_sizes and split_digests (of each split's tile ids and labels) of `splits`."""
    digests = {}
    for name in ("train", "val", "test"):
        text = "".join(f"{tile}\t{int(label)}\n" for tile, label in zip(splits[name].ids, splits[name].labels))
        digests[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return {"split_sizes": {name: len(splits[name].ids) for name in ("train", "val", "test")},
            "split_digests": digests}


def data_record(dataset: Any, splits: dict[str, Any]) -> dict[str, Any]:
    """What data.json records of a run's data, with a digest of each split's tile ids and labels."""
    return {
        "source": dataset.source, "synthetic": bool(dataset.synthetic),
        "classes": list(dataset.classes), "image_size": list(dataset.image_size),
        **_split_record(splits),
        "skipped_files": list(dataset.skipped_files),
        # Patients or slides per split (spec.data.group_by): a reader can check none is in two splits.
        **({"split_groups": {name: list(g) for name, g in groups.items()}}
           if (groups := getattr(dataset, "groups", None)) else {}),
        # The stain appearance tiles were normalised to (spec.data.stain_normalize): predict uses it too.
        **({"stain_normalization": stain.to_json()} if (stain := getattr(dataset, "stain", None)) else {}),
        # Which cross-validation fold the test split is (spec.data.cv_fold of spec.data.cv_folds).
        **({"cv_fold": fold[0], "cv_folds": fold[1]} if (fold := getattr(dataset, "fold", None)) else {}),
        # Pixel-identical tiles across and within the splits, near-copies across them (spec.data.duplicates, not 'off').
        **({"duplicate_tiles": found.to_json()} if (found := getattr(dataset, "duplicates", None)) else {}),
        # Without group_by: test tiles whose patient or slide, named by a known convention, is in train or val too.
        **({"shared_groups": {**shared.to_json(), "training_groups": list(shared.training_groups)}}
           if (shared := getattr(dataset, "shared_groups", None)) else {}),
    }


def check_same_data(workdir: Path, record: dict[str, Any], remedy: str,
                    keys: Sequence[str] = ("classes", "image_size", "split_sizes", "split_digests",
                                           "stain_normalization")) -> None:
    """Fail if the data loaded now differs from what the run in `workdir` recorded in data.json (in `keys`).

    A renamed class folder or added tiles would otherwise make evaluate or a resume score the
    model's outputs against other labels or tiles.
    """
    saved_path = Path(workdir) / "data.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    for key in keys:
        if key in saved and saved[key] != record.get(key):
            what = ("the tiles or labels of a split" if key == "split_digests"
                    else "the stain target (spec.data.stain_reference changed?)" if key == "stain_normalization"
                    else f"{key}: {saved[key]} then, {record[key]} now")
            raise WorkdirError(
                f"the data of {record['source']} differs from what the run in '{workdir}' was trained on "
                f"({saved_path}: {what}; if the files are unchanged, the flaxbench that trained the run "
                f"split or read them differently); {remedy}"
            )


def listed_data_check(workdir: Path, remedy: str) -> Callable[[str, Sequence[str], Sequence[Any]], None]:
    """A `load_dataset(listed=...)` hook: `check_same_data` on the classes and splits before any tile is decoded."""

    def check(source: str, classes: Sequence[str], splits: Sequence[Any]) -> None:
        record = {"source": source, "classes": list(classes),
                  **_split_record(dict(zip(("train", "val", "test"), splits)))}
        check_same_data(workdir, record, remedy, keys=("classes", "split_sizes", "split_digests"))

    return check


def fold_run_dirs(workdir: Path) -> list[Path]:
    """The runs of a cross-validated row's folder (`study --folds`: fold_<k>, or fold_<k>/seed_<s>), by fold, then
    seed; [] where `workdir` is a run itself or holds no folds."""
    if (workdir / "spec.json").exists():
        return []
    found = [p.parent for pattern in ("fold_*/spec.json", "fold_*/seed_*/spec.json") for p in workdir.glob(pattern)]
    return sorted(found, key=lambda path: tuple(int(n) for n in re.findall(r"\d+", str(path.relative_to(workdir)))))


def check_not_a_row_of_folds(workdir: Path) -> None:
    """WorkdirError naming one of its runs where `workdir` is a cross-validated row's folder, not a run."""
    folds = fold_run_dirs(Path(workdir))
    if folds:
        raise WorkdirError(f"'{workdir}' holds the {len(folds)} runs of a cross-validated row (only predict and "
                           f"evaluate --external take them together); give one of them, e.g. '{folds[0]}'")
