"""Test a trained run on labelled tiles it never saw: an external cohort, another lab or scanner.

    python -m flaxbench evaluate --workdir runs/resnet18 --external /data/CRC-VAL-HE-7K \
        --class-map "TUM=tumor,STR=stroma,LYM=lympho,DEB=debris,MUC=mucosa"

The folder (or zip) holds class folders, as a training source does. Each folder is a class of the
run by its name (matched as training matches names) or by `--class-map FOLDER=CLASS`; several
folders may map to one class; folders of other classes are left out and named. Tiles are resized
to the run's tile size and stain-normalised as its tiles were, and scored with the metrics of the
run's own test split plus their confidence intervals; the result is written to
WORKDIR/eval_external_<folder name>.json, which the comparison report reads.

WORKDIR may also be a cross-validated row's folder (`study --folds K`: NAME_Kfold): its runs' mean
class probabilities are scored, and each run's own metrics on the tiles are kept beside them.
"""

from __future__ import annotations

import collections
import difflib
import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline import canonical_class_name
from data_pipeline.groups import check_group_by, tile_groups
from data_pipeline.sources.folder_source import ListedTile, class_folder_names, decode_tiles, open_class_folders
from data_pipeline.split import SPLIT_WORDS
from flaxbench.calibration import temperature_scaled_metrics
from flaxbench.checkpoints import BEST
from flaxbench.errors import WorkdirError
from flaxbench.evaluation import accuracy_without, split_cis, split_metrics
from flaxbench.inference import (
    TrainedRun, check_center_crop, count_sizes, ensemble_logits, fitted_temperatures, load_trained_runs,
    read_data_info, resize_warning, stream_member_logits,
)
from flaxbench.results import check_can_write, write_json_atomic
from flaxbench.runtime import is_main_process
from flaxbench.seen_groups import seen_groups_record, seen_groups_warning, training_groups
from flaxbench.seen_tiles import runs_in_words, tiles_seen_by
from flaxbench.workdir import fold_run_dirs

EXTERNAL_PREFIX = "eval_external_"


def parse_class_map(text: str | None) -> dict[str, str]:
    """`FOLDER=CLASS,FOLDER=CLASS` as canonical names {folder: class}; WorkdirError naming a malformed entry."""
    mapping: dict[str, str] = {}
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        folder, sep, name = entry.partition("=")
        if not sep or not folder.strip() or not name.strip():
            raise WorkdirError(f"--class-map entry '{entry.strip()}' is not FOLDER=CLASS, e.g. "
                               "--class-map TUM=tumor,STR=stroma")
        key = canonical_class_name(folder)
        if key in mapping:
            raise WorkdirError(f"--class-map names folder '{folder.strip()}' twice")
        mapping[key] = canonical_class_name(name)
    return mapping


def match_class_folders(
    folders: list[str], run_classes: list[str], class_map: dict[str, str], where: str
) -> tuple[dict[str, str], list[str]]:
    """({folder: run class} for the folders that are the run's classes, [folders left out]).

    A folder is a run class by `class_map` or by its own canonical name. A `class_map` entry that
    names no folder, or no class of the run, is an error, as is a folder set with none of the run's classes.
    """
    canonical = {canonical_class_name(folder): folder for folder in folders}
    for key, name in class_map.items():
        if key not in canonical:
            raise WorkdirError(f"--class-map names folder '{key}', which {where} does not have with tiles in it; its "
                               f"class folders with tiles: {', '.join(folders)}")
        if name not in run_classes:
            raise WorkdirError(f"--class-map maps '{key}' to '{name}', which is not a class of the run; its classes: "
                               f"{', '.join(run_classes)}")
    matched, left_out = {}, []
    for key, folder in canonical.items():
        name = class_map.get(key, key)
        if name in run_classes:
            matched[folder] = name
        else:
            left_out.append(folder)
    if not matched:
        # an example a user may paste: the first folder with the run class its name is nearest to, if any is near
        near = difflib.get_close_matches(canonical_class_name(folders[0]), run_classes, n=1, cutoff=0.5)
        example = f"{folders[0]}={near[0]}" if near else f"{folders[0]}=CLASS"
        raise WorkdirError(
            f"none of the class folders of {where} ({', '.join(folders)}) is a class of the run "
            f"({', '.join(run_classes)}); name them with --class-map FOLDER=CLASS,... (e.g. "
            f"--class-map {shlex.quote(example)})")
    return matched, left_out


def _check_not_the_runs_tiles(path: str, run_source: str) -> None:
    """WorkdirError if `path` is the folder or zip the run trained on; a warning if one holds the other."""
    if not run_source.startswith("folder:"):
        return
    own, given = os.path.realpath(run_source.removeprefix("folder:")), os.path.realpath(path)
    if own == given:
        raise WorkdirError(f"'{path}' holds the run's own train, val and test tiles, so it is no external test; "
                           "use evaluate --split test for the run's test split")
    if given.startswith(own + os.sep) or own.startswith(given + os.sep):
        print(f"warning: '{path}' and the run's tiles at '{own}' lie one inside the other: make sure no tile "
              "of the run's train or val split is among these", file=sys.stderr)


def _folder_names(selected: tuple[str, ...], matched: dict[str, str]) -> list[str]:
    """The folder of `matched` that each selected class (a folder's canonical name) came from."""
    folder_of = {canonical_class_name(folder): folder for folder in matched}
    return [folder_of[name] for name in selected]


def _print_notes(run: TrainedRun, skipped: list[str], resized_from: dict[str, int], left_out: list[str],
                 absent: list[str], center_crop: int | None) -> None:
    """Say on stderr what was skipped, left out, resized, or missing from the external tiles."""
    for tile_id in skipped:
        print(f"skipped, not a readable image: {tile_id}", file=sys.stderr)
    if left_out:
        print(f"left out, not classes of the run: {', '.join(left_out)} (map one with --class-map FOLDER=CLASS)",
              file=sys.stderr)
    if resized_from:
        # Unlike predict's tiles these are scored, so say it even when the run resized its own tiles
        # too: like-for-like magnification needs both tile sets to cover the same tissue per tile.
        if center_crop:  # the user chose the tissue per tile
            print(f"note: central {center_crop} px of each tile, resized to the run's {run.image_size}x"
                  f"{run.image_size} px", file=sys.stderr)
        else:
            print(resize_warning(run, resized_from) or f"note: resized to the run's {run.image_size}x"
                  f"{run.image_size} px: {count_sizes(resized_from, 'tiles')} px; magnification matches the "
                  "run's only if its tiles covered as much tissue (--center-crop PX crops each tile first)",
                  file=sys.stderr)
    if absent:
        present = len(run.classes) - len(absent)
        print(f"note: no tiles of {', '.join(absent)}: balanced accuracy and macro AUC are over the {present} "
              f"class{'es' if present > 1 else ''} present", file=sys.stderr)


def external_path(source: str) -> str:
    """The absolute path of an --external folder or zip (`folder:` prefix allowed); WorkdirError if missing."""
    path = source.removeprefix("folder:")
    if not os.path.exists(path):
        raise WorkdirError(f"--external '{path}' does not exist; give a folder (or .zip) of class folders")
    return os.path.abspath(path)


def external_filename(source: str, which: str = BEST, tta: bool = False) -> str:
    """eval_external_<folder or zip name>.json, with _last for the last checkpoint and _tta for TTA."""
    stem = Path(source.rstrip("/\\")).name
    stem = stem[:-4] if stem.lower().endswith(".zip") else stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "tiles"
    return f"{EXTERNAL_PREFIX}{stem}" + ("" if which == BEST else f"_{which}") + ("_tta" if tta else "") + ".json"


def external_target(workdir: Path, source: str, which: str = BEST, tta: bool = False) -> Path:
    """Where `workdir`'s evaluation on the tiles at `source` (an absolute path) goes: its external_filename, or where
    that file holds the evaluation of other tiles of the same name (a folder and its zip, two cohorts' `test`
    folders), that name with a digest of `source`'s path."""
    default = workdir / external_filename(source, which, tta)
    try:
        recorded = json.loads(default.read_text(encoding="utf-8")).get("external")
    except (OSError, ValueError, AttributeError):  # none yet, or unreadable: the caller says so
        return default
    if recorded in (None, source):
        return default
    return default.with_name(f"{default.stem}_{hashlib.sha256(source.encode()).hexdigest()[:8]}.json")


def evaluate_external(
    workdir: str | Path, source: str, *, which: str = BEST, tta: bool = False, class_map: str | None = None,
    out: str | Path | None = None, overwrite: bool = False, batch_size: int | None = None,
    center_crop: int | None = None, group_by: str | None = None,
) -> tuple[dict[str, Any], Path]:
    """Metrics of the run's `which` checkpoint on the labelled tiles at `source` (folder or zip); (result, its file).

    A cross-validated row's folder is scored as the ensemble of its runs (the mean of their class
    probabilities); the result's "members" holds each run's own metrics. `center_crop` keeps each
    tile's central square of that many pixels before resizing it to the run's tile size, e.g. to
    show as much tissue per tile as the run's tiles did. `batch_size`: tiles a forward pass
    (default: the run's spec.train.eval_batch_size). `group_by`, a regular expression searched in each tile's id
    (its path below `source`) whose first group names its patient or slide, adds the accuracy's 95% CI over them.
    """
    check_center_crop(center_crop)
    check_group_by(group_by, "--group-by")
    workdir, path = Path(workdir), external_path(source)
    target = Path(out) if out else external_target(workdir, path, which, tta)
    if target.is_dir():
        raise WorkdirError(f"--out '{target}' is a folder; give a file name such as '{target / 'external.json'}'")
    if target.exists() and not overwrite:
        raise WorkdirError(f"'{target}' already exists (an earlier external evaluation?); give another --out, or "
                           "add --overwrite to replace it")
    if is_main_process():
        check_can_write(target)  # before the tiles load and the runs score them, not after
    mapping = parse_class_map(class_map)
    where = f"'{path}'"
    folders = class_folder_names(path)
    if len(folders) > 1 and all(canonical_class_name(f) in SPLIT_WORDS for f in folders):
        raise WorkdirError(f"{where} holds split folders ({', '.join(folders)}), not class folders; give one of them, "
                           f"e.g. --external {os.path.join(path, folders[-1])}")
    first_run = (fold_run_dirs(workdir) or [workdir])[0]
    _check_not_the_runs_tiles(path, str(read_data_info(first_run).get("source", "")))
    runs = load_trained_runs(workdir, which)
    run = runs[0]  # all of them alike in classes, tile size and stain target
    matched, left_out = match_class_folders(folders, run.classes, mapping, where)
    skipped: list[tuple[ListedTile, Exception]] = []
    resized: collections.Counter = collections.Counter()
    seen = tiles_seen_by(runs)
    with open_class_folders(path, [canonical_class_name(f) for f in matched], min_classes=1) as source:
        run_label = [run.classes.index(matched[folder]) for folder in _folder_names(source.classes, matched)]
        if group_by:  # a tile without a group fails before any tile is decoded
            tile_groups([tile.id for tile in source.tiles], group_by, "--group-by")
        decoded = decode_tiles(source.tiles, run.image_size, center_crop, True, skipped, resized)
        chunks = stream_member_logits(runs, decoded, where, tta=tta, batch_size=batch_size,
                                      expected=len(source.tiles),
                                      on_chunk=None if seen is None else (
                                          lambda tiles, images: seen([tile.id for tile in tiles], images)))
        # each tile with its logits from every run (runs, classes)
        scored = [(tile, tile_logits) for tiles, logits in chunks
                  for tile, tile_logits in zip(tiles, logits.swapaxes(0, 1))]
    if not scored:
        raise WorkdirError(f"{where} has no readable tiles in the class folders of the run's classes "
                           f"({', '.join(matched)}); nothing evaluated")
    labels = np.asarray([run_label[tile.label] for tile, _ in scored], np.int64)
    absent = [c for k, c in enumerate(run.classes) if not np.any(labels == k)]
    skipped_ids = [tile.id for tile, _ in skipped]
    _print_notes(run, skipped_ids, dict(resized), left_out, absent, center_crop)
    if seen is not None and (warning := seen.warning(runs_in_words(runs), "their accuracy flatters the model")):
        print(warning, file=sys.stderr)
    ids, member_logits = [tile.id for tile, _ in scored], np.stack([x for _, x in scored], axis=1)
    trained_groups = seen_groups_record(training_groups(runs), ids)
    if warning := seen_groups_warning(trained_groups, runs_in_words(runs), "these tiles are not external to it, and "
                                      "their accuracy flatters the model"):
        print(warning, file=sys.stderr)
    result = split_metrics(ensemble_logits(member_logits), labels, run.classes, ids)
    # 95% CIs of accuracy, balanced accuracy, macro AUC and each class's values (`per_class`, `<key>_ci`); with
    # --group-by, each also over the tiles' patients or slides (group_intervals, group_design_effects)
    result.update(group_by=group_by, **split_cis(result, run.classes, group_by))
    temperatures, _ = fitted_temperatures(runs, tta)
    scaled = None if temperatures is None else temperature_scaled_metrics(
        ensemble_logits(member_logits / temperatures[:, None, None]), labels, 1.0)
    record = {
        "name": run.spec.name, "external": path, "checkpoint": which, "tta": tta,
        "epoch": run.epoch if len(runs) == 1 else None,  # an ensemble's runs each have their own
        "synthetic": run.synthetic, "classes": run.classes, "class_map": mapping, "class_folders": matched,
        "left_out_folders": left_out,
        "absent_classes": absent, "tiles": int(len(labels)),
        "tiles_per_class": {c: int(np.sum(labels == k)) for k, c in enumerate(run.classes)},
        "skipped_files": skipped_ids, "center_crop": center_crop, "resized_from": dict(resized),
        "image_size": run.image_size, "stain_normalized": run.stain is not None,
        # each run's logits divided by the temperature it fitted on its own validation tiles (None: not recorded,
        # or a last checkpoint or TTA, which it was not fitted to)
        "temperatures": None if temperatures is None else temperatures.tolist(),
        "loss_temperature_scaled": None if scaled is None else scaled["loss"],
        "ece_temperature_scaled": None if scaled is None else scaled["ece"],
        # tiles pixel-identical to one of the runs' train, val or test tiles (None: the runs kept no tile digests)
        "seen_by_runs": None if seen is None else seen.record(),
        # the accuracy on the tiles the runs did not train or validate on (None where there are none, or no others)
        "accuracy_without_seen": None if seen is None or not seen.trained_ids else accuracy_without(
            result["predictions"], set(seen.trained_ids)),
        # tiles from patients or slides the runs trained or validated on, by a known naming convention (None: the
        # runs' tiles named none), and the accuracy without them (None where there are none, or no others)
        "seen_groups": trained_groups,
        "accuracy_without_seen_groups": accuracy_without(result["predictions"], set(trained_groups["trained_ids"]))
        if trained_groups and trained_groups["tiles"] else None,
        **result,
        **(_ensemble_members(runs, member_logits, labels, ids) if len(runs) > 1 else {}),
    }
    if is_main_process():
        write_json_atomic(target, record)
    return record, target


# What an ensemble's result keeps of each run's own evaluation on the tiles.
MEMBER_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "loss")


def _ensemble_members(runs: list[TrainedRun], member_logits: np.ndarray, labels: np.ndarray,
                      ids: list[str]) -> dict[str, Any]:
    """"members" (each run's folder, fold, seed, epoch and metrics on the tiles) and their accuracies' mean and
    sample standard deviation, for the result of several runs scored together."""
    members = []
    for run, logits in zip(runs, member_logits):
        scores = split_metrics(logits, labels, run.classes, ids)
        members.append({"workdir": str(run.workdir), "cv_fold": run.spec.data.get("cv_fold"), "seed": run.spec.seed,
                        "epoch": run.epoch, **{key: scores[key] for key in MEMBER_METRICS}})
    accuracies = np.asarray([member["accuracy"] for member in members])
    return {"members": members, "member_accuracy_mean": float(accuracies.mean()),
            "member_accuracy_std": float(accuracies.std(ddof=1))}
