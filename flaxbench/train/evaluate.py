"""Re-evaluate a finished or interrupted run from its checkpoint, without training."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import ml_collections

from data_pipeline.duplicates import tile_digests
from data_pipeline.errors import BadFileError
from flaxbench.calibration import temperature_scaled_metrics
from flaxbench.checkpoints import BEST, LAST, RunCheckpoints
from flaxbench.errors import WorkdirError
from flaxbench.evaluation import split_cis, split_metrics
from flaxbench.group_intervals import group_pattern
from flaxbench.results import check_can_write, write_json_atomic
from flaxbench.runtime import is_main_process
from flaxbench.seen_tiles import check_same_pixels
from flaxbench.spec import from_json
from flaxbench.train.setup import build_run
from flaxbench.workdir import check_not_a_row_of_folds, check_same_data, data_record, listed_data_check

SPLITS = ("test", "val", "train")


def read_run_spec(workdir: str | Path) -> ml_collections.ConfigDict:
    """The resolved spec saved in `workdir/spec.json`."""
    path = Path(workdir) / "spec.json"
    if not path.is_file():
        check_not_a_row_of_folds(Path(workdir))
        raise WorkdirError(f"'{path}' does not exist: is '{workdir}' a flaxbench run directory?")
    return from_json(path.read_text())


def eval_filename(split: str, which: str, tta: bool = False) -> str:
    """eval_<split>.json for the best checkpoint, eval_<split>_last.json for the last one; _tta with TTA."""
    return f"eval_{split}" + ("" if which == BEST else f"_{which}") + ("_tta" if tta else "") + ".json"


def _locate_tfds_data(spec: ml_collections.ConfigDict, tfds_data_dir: str | None) -> None:
    """Point a TFDS run's spec at `tfds_data_dir`, or fail in one line if its recorded data folder is gone."""
    if not spec.data.source.startswith("tfds:"):
        if tfds_data_dir:
            raise WorkdirError(f"--tfds-data-dir is for runs trained on a TFDS dataset; this run's tiles are "
                               f"'{spec.data.source}' (if they moved, pass --source=folder:NEW_PATH)")
        return
    if tfds_data_dir:
        spec.data.tfds_data_dir = tfds_data_dir
        return
    recorded = spec.data.get("tfds_data_dir")
    if recorded and not os.path.isdir(os.path.expanduser(recorded)):
        raise WorkdirError(
            f"the run's TFDS data folder '{recorded}' (spec.data.tfds_data_dir) is not there; if it moved, pass "
            "--tfds-data-dir=NEW_PATH (the same prepared dataset: its tiles are checked against data.json)"
        )


def evaluate_workdir(
    workdir: str | Path, split: str = "test", which: str = BEST, source: str | None = None, *, tta: bool = False,
    batch_size: int | None = None, tfds_data_dir: str | None = None,
) -> dict[str, Any]:
    """Metrics of `split` from the run's `which` checkpoint; also written to `eval_filename(split, which, tta)`.

    `source` (a spec.data.source value) reads the run's tiles where they are now, if they moved, and
    `tfds_data_dir` a TFDS run's prepared dataset; they must be the same tiles, which data.json's
    digests check. `tta` averages the class probabilities over each tile's 8 flips and rotations.
    `batch_size` replaces the run's spec.train.eval_batch_size (tiles a forward pass).
    """
    if split not in SPLITS:
        raise WorkdirError(f"--split '{split}' is unknown; use one of {', '.join(SPLITS)}")
    if which not in (BEST, LAST):
        raise WorkdirError(f"checkpoint '{which}' is unknown; use '{BEST}' or '{LAST}'")
    workdir = Path(workdir)
    spec = read_run_spec(workdir)
    target = workdir / eval_filename(split, which, tta)
    if is_main_process():
        check_can_write(target)  # before the tiles load and the model runs, not after
    if batch_size:
        spec.train.eval_batch_size = batch_size
    saved_data = workdir / "data.json"
    if source:
        spec.data.source = source
    elif saved_data.is_file():  # the source as resolved at training, e.g. an absolute folder path
        spec.data.source = json.loads(saved_data.read_text())["source"]
        recorded = spec.data.source.removeprefix("folder:")
        if spec.data.source.startswith("folder:") and not os.path.exists(recorded):
            raise WorkdirError(
                f"the run's tiles are no longer at '{recorded}'; if they moved, pass --source=folder:NEW_PATH "
                "(a folder or zip of the same tiles: they are checked against data.json)"
            )
    _locate_tfds_data(spec, tfds_data_dir)
    remedy = "restore the data as it was (or evaluate with the flaxbench that trained the run)"
    # The other splits' tiles are not read, and a folder that changed is refused before any tile is.
    try:
        run = build_run(
            spec, load_weights=False, decode=(split,), listed=listed_data_check(workdir, remedy), train=False
        )
    except BadFileError as e:  # skipping it would score other tiles than the run's
        raise BadFileError(e.display, e.reason, f"it was read when the run trained: {remedy}") from None
    check_same_data(workdir, data_record(run.dataset, run.splits), remedy)
    scored = getattr(run.dataset, split)
    check_same_pixels(workdir, {split: tile_digests(scored.images)}, {split: scored.ids}, run.dataset.source, remedy)
    ckpts = RunCheckpoints(workdir / "checkpoints", read_only=True)
    restored = ckpts.restore(which, run.initial_state())
    ckpts.close()
    if restored is None:
        raise WorkdirError(f"no '{which}' checkpoint in '{workdir / 'checkpoints'}'; train the run first")
    state, _, epoch = restored
    data = run.splits[split]
    logits = run.logits(split, state, tta=tta)
    metrics = split_metrics(logits, data.labels, run.dataset.classes, data.ids)
    shared = run.dataset.shared_groups.to_json() if run.dataset.shared_groups else None
    out = {"name": spec.name, "split": split, "checkpoint": which, "epoch": epoch, "tta": tta,
           "source": run.dataset.source, "synthetic": bool(run.dataset.synthetic),
           "classes": list(run.dataset.classes), **metrics,
           # 95% CIs of accuracy, balanced accuracy, macro AUC and each class's values (`per_class`, `<key>_ci`),
           # each also over the split's patients or slides (spec.data.group_by, or the tile ids' naming convention;
           # group_intervals, group_design_effects)
           **split_cis(metrics, run.dataset.classes, group_pattern(spec.data.get("group_by"), shared))}
    try:
        temperature = recorded_temperature(workdir)
    except WorkdirError as e:  # re-evaluating is how a run's numbers are recovered, so it goes on without
        print(f"warning: {e}; the loss and ECE after temperature scaling are left out", file=sys.stderr)
        temperature = None
    if temperature is not None and temperature_mismatch(which, tta) is None:
        scaled = temperature_scaled_metrics(logits, data.labels, temperature)
        out.update(temperature=temperature, loss_temperature_scaled=scaled["loss"],
                   ece_temperature_scaled=scaled["ece"])
    if is_main_process():
        write_json_atomic(target, out)
    return out


def temperature_mismatch(which: str, tta: bool) -> str | None:
    """Why a run's fitted temperature does not apply to the outputs of its `which` checkpoint (with `tta`), or None:
    it was fitted to the best checkpoint's single-view logits."""
    if tta:
        return "the temperature was fitted to single-view logits, not to the 8-view TTA average"
    if which != BEST:
        return f"the temperature was fitted to the {BEST} checkpoint, not the {which} one"
    return None


def recorded_temperature(workdir: Path) -> float | None:
    """The temperature the run fitted on its validation tiles (results.json), None before it finished or if older."""
    path = workdir / "results.json"
    if not path.is_file():
        return None
    try:
        temperature = json.loads(path.read_text()).get("temperature")
    except (OSError, ValueError, AttributeError):
        raise WorkdirError(f"'{path}' is not a readable results.json; train the run again with --overwrite") from None
    if temperature is None:
        return None
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise WorkdirError(f"'{path}' holds temperature {temperature!r}, not a positive number; train the run again "
                           "with --overwrite")
    return float(temperature)
