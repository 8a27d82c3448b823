"""The training loop shared by every model: epochs, validation, timing, checkpoints, results."""

from __future__ import annotations

import datetime
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from flaxbench.calibration import fit_temperature, temperature_scaled_metrics
from flaxbench.checkpoints import BEST, LAST, RunCheckpoints
from flaxbench.class_intervals import wilson_interval
from flaxbench.compile_cache import cache_note
from flaxbench.errors import TrainingError, WorkdirError
from flaxbench.evaluation import format_metrics, split_metrics
from flaxbench.group_intervals import group_fields, group_pattern, predictions_group_interval
from flaxbench.results import RESULTS_FORMAT, write_json_atomic
from flaxbench.runtime import (
    any_process, check_processes_agree, describe_devices, enable_determinism, flaxbench_version, is_main_process,
    library_versions, sync_processes,
)
from flaxbench.seen_tiles import check_same_pixels, save_tile_digests
from flaxbench.spec import to_json
from flaxbench.tensorboard import EpochWriter
from flaxbench.train.setup import Run, build_run, count_layers, flops_per_image
from flaxbench.train.spec_checks import SELECT_BY
from flaxbench.train.state import TrainState, count_params
from flaxbench.train.stops import Interrupted, StopRequests
from flaxbench.weights import INIT_PLACEHOLDER, init_in_words
from flaxbench.workdir import (
    REPLACED, check_same_data, check_workdir, claim_workdir, data_record, forget_replaced, listed_data_check,
    restore_replaced, without_tile_location,
)

RESUME_REMEDY = "restore the data as it was, or start the run over with --overwrite"


def _epoch_line(entry: dict[str, Any], epochs: int, eta_s: float) -> str:
    return (
        f"epoch {entry['epoch']:>3}/{epochs}  train loss {entry['train_loss']:.4f} "
        f"acc {100 * entry['train_accuracy']:5.1f}%  val loss {entry['val_loss']:.4f} "
        f"acc {100 * entry['val_accuracy']:5.1f}%  {entry['images_per_second']:7.0f} img/s  "
        f"{entry['epoch_time_s']:6.1f} s  ETA {eta_s:6.0f} s"
    )


def _is_better(entry: dict[str, Any], best: dict[str, Any] | None, select_by: str = "val_accuracy") -> bool:
    """Whether epoch `entry` beats the best so far by `select_by`, ties broken by the lower validation loss."""
    if best is None:
        return True
    if entry[select_by] != best[select_by]:
        return (entry[select_by] > best[select_by]) == SELECT_BY[select_by]
    return entry["val_loss"] < best["val_loss"]


def _select_by(spec: ml_collections.ConfigDict) -> str:
    """The validation value that picks the tested epoch (spec.train.select_by; None means val_accuracy)."""
    return spec.train.get("select_by") or "val_accuracy"


def _out_of_patience(progress: dict[str, Any], patience: int | None) -> bool:
    """True once `patience` epochs have passed without a better validation result (spec.train.early_stopping_patience)."""
    best = progress["best"]
    return patience is not None and best is not None and progress["epoch"] - best["epoch"] >= patience


def _progress(meta: dict[str, Any] | None) -> dict[str, Any]:
    fresh = {"epoch": 0, "history": [], "best": None, "train_time_s": 0.0, "checkpoint_time_s": 0.0, "starts": []}
    return {**fresh, **(meta or {})}


def _record_start(progress: dict[str, Any], mesh: Any, version: str, log: Callable[[str], None]) -> None:
    """Add this start's devices and flaxbench `version` to `progress["starts"]`; warn where a resumed run's earlier
    epochs ran on other devices or code."""
    start = {"first_epoch": progress["epoch"] + 1, "device": describe_devices(mesh),
             "num_devices": int(mesh.devices.size), "num_processes": jax.process_count(), "flaxbench_version": version}
    before = progress["starts"][-1] if progress["starts"] else None
    if before is not None and before.get("flaxbench_version", version) != version:
        log(f"warning: epochs up to {progress['epoch']} ran with flaxbench {before['flaxbench_version']} and the rest "
            f"run with {version} (results.json's device_starts says so; --overwrite starts over with this code)")
    if before is not None and _where(before) != _where(start):
        log(f"warning: epochs up to {progress['epoch']} ran on {_where(before)} and the rest run on "
            f"{_where(start)}: the run's times mix the two, and its numbers may differ from a run on either "
            "alone (results.json's device_starts says so; --overwrite starts over on these devices)")
    progress["starts"] = [*progress["starts"], start]


def _where(start: dict[str, Any]) -> str:
    """A start's devices, and its processes if several (one process drove every start recorded before they were)."""
    processes = start.get("num_processes", 1)
    return start["device"] + (f" in {processes} processes" if processes > 1 else "")


def data_line(dataset: Any, load_time_s: float | None) -> str:
    """One line on what a run trains on: source, classes, split sizes, tile size and load time."""
    classes = ", ".join(dataset.classes[:10]) + (", ..." if len(dataset.classes) > 10 else "")
    sizes = "/".join(str(len(getattr(dataset, name).labels)) for name in ("train", "val", "test"))
    height, width = dataset.image_size
    loaded = f", loaded in {load_time_s:.1f} s" if load_time_s is not None else ""
    fold = getattr(dataset, "fold", None)
    folds = f" (fold {fold[0]} of {fold[1]}-fold cross-validation)" if fold else ""
    return (f"data: {dataset.source}, {len(dataset.classes)} classes ({classes}), {sizes} tiles "
            f"(train/val/test){folds} of {width}x{height} px{loaded}")


def train_and_evaluate(
    spec: ml_collections.ConfigDict, workdir: str | Path, *, overwrite: bool = False,
    log: Callable[[str], None] = print, dataset: Any = None, data_load_time_s: float | None = None,
) -> dict[str, Any]:
    """Train `spec` in `workdir` (resuming from its last checkpoint), then test the best epoch.

    `dataset` (a data_pipeline.TileDataset) replaces loading `spec.data`, e.g. for a study's rows
    or benchmarks; `data_load_time_s` is how long loading it took, if it was loaded for this run.
    """
    enable_determinism(spec.train.deterministic)
    version = flaxbench_version()  # the code as this run starts, not as it may be when it ends
    # before anything one process could refuse alone (the workdir), which would leave the others waiting
    check_processes_agree({"spec": without_tile_location(json.loads(to_json(spec))), "--workdir": str(workdir),
                           "--overwrite": overwrite, "flaxbench": version})
    is_new = not Path(workdir).exists()
    workdir = check_workdir(workdir, spec, overwrite=overwrite)
    resuming = not overwrite and _has_checkpoint(workdir / "checkpoints" / LAST)
    try:
        # A resume restores its params: the initial weights (an ImageNet download, a .pth) are not needed.
        run = build_run(spec, dataset, load_weights=not resuming,
                        listed=listed_data_check(workdir, RESUME_REMEDY) if resuming else None)
        data = data_record(run.dataset, run.splits)
        if resuming:
            check_same_data(workdir, data, RESUME_REMEDY)
            if run.dataset.tile_digests is not None:
                ids = {name: getattr(run.dataset, name).ids for name in ("train", "val", "test")}
                check_same_pixels(workdir, run.dataset.tile_digests, ids, run.dataset.source, RESUME_REMEDY)
        state = run.initial_state()
        # Compiled before the workdir is claimed: a model that cannot trace on these tiles leaves the
        # finished run there (--overwrite) untouched. A resumed state has this one's shapes and shardings.
        run.compile(("train", "val", "test"), state)
    except BaseException:
        if is_new and is_main_process() and workdir.is_dir() and not any(workdir.iterdir()):
            workdir.rmdir()  # a bad spec or data leaves no empty run directory behind
        raise
    if dataset is not None:
        run.data_load_time_s = data_load_time_s
    try:
        if is_main_process():
            claim_workdir(workdir, spec, overwrite=overwrite)
            write_json_atomic(workdir / "data.json", data)
            if run.dataset.tile_digests is not None:  # for evaluate --external and predict to find the run's tiles
                save_tile_digests(workdir, run.dataset.tile_digests, run.dataset.tile_hashes)
        sync_processes("flaxbench: workdir ready")  # the main process has cleared it (--overwrite)
        ckpts = RunCheckpoints(workdir / "checkpoints")
        restored = ckpts.restore(LAST, state)
        if resuming and restored is None:
            raise WorkdirError(f"no checkpoint in '{workdir / 'checkpoints' / LAST}' is readable, so the run cannot "
                               "resume; start it over with --overwrite")
        progress = _progress(restored[1] if restored else None)
        if restored:
            state = restored[0]
            ckpts.match_best(progress["epoch"], state, progress)
            log(f"resuming {spec.name} from epoch {progress['epoch']} ({workdir / 'checkpoints' / LAST})")
        patience = spec.train.get("early_stopping_patience")
        if progress["epoch"] < spec.train.epochs and not _out_of_patience(progress, patience):  # epochs to train
            _record_start(progress, run.mesh, version, log)
            evaluated = sorted(workdir.glob("eval_*.json")) if restored and is_main_process() else []
            for path in evaluated:  # `evaluate` of the unfinished run: its checkpoints are about to change
                path.unlink()
            if evaluated:
                log(f"removed {', '.join(path.name for path in evaluated)}: evaluations of checkpoints that training "
                    "goes on to replace (evaluate again once it ends)")
        log(data_line(run.dataset, run.data_load_time_s))
        devices = int(run.mesh.devices.size)
        batch = spec.train.batch_size
        shares = f", batch {batch} as {batch // devices} a device" if devices > 1 else ""
        log(f"{spec.name}: {count_params(state.params):,} params, compiled in {run.compile_time_s:.1f} s on "
            f"{describe_devices(run.mesh)}{shares}{cache_note(run.compile_cache_hits, run.compile_cache_misses)}")
        if spec.train.warmup_epochs >= spec.train.epochs:
            logging.warning("spec.train.warmup_epochs=%g is not shorter than spec.train.epochs=%d: the learning rate "
                            "rises over the whole run and reaches spec.train.learning_rate only at its last step; "
                            "use fewer warmup epochs", spec.train.warmup_epochs, spec.train.epochs)
        with StopRequests() as stop, EpochWriter(workdir, enabled=is_main_process()) as board:
            for epoch in range(progress["epoch"] + 1, spec.train.epochs + 1):
                if _out_of_patience(progress, patience):  # checked first, so a resumed run stops where it did
                    log(f"stopping early: validation has not improved for {patience} epochs (best: epoch "
                        f"{progress['best']['epoch']})")
                    break
                state, entry = _run_epoch(run, state, epoch, progress, ckpts)
                if is_main_process() and (workdir / REPLACED).exists():  # the new run has an epoch on disk
                    ckpts.wait()
                    forget_replaced(workdir)
                board.write(entry)
                mean_epoch_s = progress["train_time_s"] / len(progress["history"])
                log(_epoch_line(entry, spec.train.epochs, (spec.train.epochs - epoch) * mean_epoch_s))
                # Every process stops after the same epoch, or the others would wait in its collectives.
                if any_process(stop.signal_name is not None) and epoch < spec.train.epochs:
                    ckpts.wait()
                    raise Interrupted(stop.signal_name or "a stop request to another process", epoch, workdir)
            stop.testing = True
            ckpts.wait()
            results = _final_results(run, state, ckpts, progress, workdir)
            ckpts.close()
            if is_main_process():
                write_json_atomic(workdir / "results.json", results)
            log(format_metrics(spec.name, "test", {
                "accuracy": results["test_accuracy"], "loss": results["test_loss"],
                "macro_f1": results["macro_f1"], "balanced_accuracy": results["balanced_accuracy"],
                "accuracy_ci": wilson_interval(results["test_accuracy"], len(results["test_predictions"]["ids"])),
                **group_fields(predictions_group_interval(results["test_predictions"], group_pattern(
                    spec.data.get("group_by"), results.get("shared_groups")))),
            }, synthetic=bool(run.dataset.synthetic))
                + f"  (best epoch {results['evaluated_checkpoint']['epoch']}; train {results['train_time_s']:.1f} s)")
    except BaseException:
        if is_main_process():
            restore_replaced(workdir)  # a run --overwrite replaced, if this one failed before its first epoch
        raise
    return results


def _has_checkpoint(folder: Path) -> bool:
    """True if an orbax checkpoint folder holds a saved step (a resume would continue from it)."""
    return folder.is_dir() and any(step.name.isdigit() for step in folder.iterdir())


def _run_epoch(run: Run, state: TrainState, epoch: int, progress: dict[str, Any], ckpts: RunCheckpoints):
    spec = run.spec
    key = jax.random.fold_in(jax.random.key(spec.seed), epoch)
    start = time.perf_counter()
    state, losses, correct = run.compiled["train"](state, run.splits["train"].images, run.train_labels, key)
    losses = np.asarray(losses)  # waits for the epoch
    trained = time.perf_counter()
    val_logits = run.logits("val", state)
    elapsed = time.perf_counter() - start
    if not np.all(np.isfinite(losses)):
        bad = int(np.argmin(np.isfinite(losses)))
        last = progress["epoch"]
        kept = (f"the last good checkpoint is epoch {last} in {ckpts.directory / LAST}" if last
                else "no checkpoint was saved")
        raise TrainingError(
            f"loss became {losses[bad]} at step {(epoch - 1) * run.steps_per_epoch + bad + 1} "
            f"(epoch {epoch}); training stopped, {kept}; lower spec.train.learning_rate or set "
            "spec.train.grad_clip_norm"
        )
    val = split_metrics(val_logits, run.splits["val"].labels, run.dataset.classes, run.splits["val"].ids)
    images = losses.size * spec.train.batch_size
    entry = {
        "epoch": epoch,
        "train_loss": float(losses.mean()),
        "train_accuracy": float(np.asarray(correct).sum() / images),
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "val_balanced_accuracy": val["balanced_accuracy"],
        "val_macro_f1": val["macro_f1"],
        "epoch_time_s": elapsed,
        "images_per_second": images / (trained - start),
        "learning_rate": float(run.schedule(epoch * run.steps_per_epoch)),
    }
    progress["history"].append(entry)
    progress["epoch"] = epoch
    progress["train_time_s"] += elapsed
    save_start = time.perf_counter()
    select_by = _select_by(spec)
    if _is_better(entry, progress["best"], select_by):
        progress["best"] = {k: entry[k] for k in ("epoch", "val_accuracy", "val_loss", select_by)}
        ckpts.save(BEST, epoch, state, progress)
    ckpts.save(LAST, epoch, state, progress)
    progress["checkpoint_time_s"] += time.perf_counter() - save_start
    return state, entry


def _final_results(run: Run, state: TrainState, ckpts: RunCheckpoints, progress: dict[str, Any], workdir: Path):
    spec = run.spec
    best = ckpts.restore(BEST, state)
    if best is None:
        raise TrainingError(f"no best checkpoint in {ckpts.directory / BEST}; train again with --overwrite")
    best_state, _, best_epoch = best
    chosen = (progress["best"] or {}).get("epoch", best_epoch)
    if best_epoch != chosen:  # its checkpoint damaged, and an older one read in its place
        raise TrainingError(f"validation chose epoch {chosen}, but the readable best checkpoint in "
                            f"{ckpts.directory / BEST} is epoch {best_epoch}; train again with --overwrite")
    test_logits, val_logits = run.logits("test", best_state), run.logits("val", best_state)
    test = split_metrics(test_logits, run.splits["test"].labels, run.dataset.classes, run.splits["test"].ids)
    val = split_metrics(val_logits, run.splits["val"].labels, run.dataset.classes, run.splits["val"].ids)
    temperature = fit_temperature(val_logits, run.splits["val"].labels)
    scaled = temperature_scaled_metrics(test_logits, run.splits["test"].labels, temperature)
    history = progress["history"]
    train_images = len(history) * train_images_per_epoch(run)
    train_only_s = sum(train_images_per_epoch(run) / h["images_per_second"] for h in history)
    train_time = progress["train_time_s"]
    return {
        "format": RESULTS_FORMAT,
        "name": spec.name,
        "title": run_title(spec),
        "model": spec.model.name,
        "init": spec.model.init,
        "source": run.dataset.source,
        "synthetic": bool(run.dataset.synthetic),
        "classes": list(run.dataset.classes),
        "split_sizes": {k: run.splits[k].count for k in ("train", "val", "test")},
        # spec.data.group_by: patients or slides kept whole per split, and how many each split holds
        "group_by": spec.data.get("group_by"),
        # of the training loss by class, in class order (None: unweighted); val/test losses are unweighted
        "class_weights": None if run.class_weights is None else [float(w) for w in run.class_weights],
        **({"groups_per_split": {k: len(g) for k, g in run.dataset.groups.items()}} if run.dataset.groups else {}),
        # pixel-identical tiles across and within the splits, and near-copies across them (spec.data.duplicates; absent
        # with 'off')
        **({"duplicate_tiles": run.dataset.duplicates.to_json()} if run.dataset.duplicates else {}),
        # without group_by: test tiles whose patient or slide (a known naming convention) is in train or val too
        **({"shared_groups": run.dataset.shared_groups.to_json()} if run.dataset.shared_groups else {}),
        # spec.data.cv_fold of spec.data.cv_folds: the cross-validation fold tested on (None without)
        "cv_fold": spec.data.get("cv_fold"),
        "cv_folds": spec.data.get("cv_folds"),
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "evaluated_checkpoint": {
            "which": "best_val", "epoch": best_epoch, "step": best_epoch * run.steps_per_epoch,
            "selected_by": _select_by(spec),
            "note": "test metrics come from the epoch with the best validation value named in selected_by",
        },
        "train_time_s": train_time,
        "compile_time_s": run.compile_time_s,
        "data_load_time_s": run.data_load_time_s,  # this start's; None where it reused tiles loaded for a run before
        # programs loaded from the persistent compilation cache (then compile_time_s is partly load time) and compiled
        "compile_cache_hits": run.compile_cache_hits,
        "compile_cache_misses": run.compile_cache_misses,
        "checkpoint_time_s": progress["checkpoint_time_s"],
        "images_per_second": train_images / train_only_s if train_only_s else None,
        "accuracy_per_second": 100 * test["accuracy"] / train_time,
        "loss_per_second": test["loss"] / train_time,
        "params": count_params(state.params),
        "layers": count_layers(run.parts),
        "flops_per_image": flops_per_image(run, state),
        "epochs": spec.train.epochs,
        "epochs_trained": len(history),  # fewer than `epochs` when stopped early (spec.train.early_stopping_patience)
        "seed": spec.seed,
        "batch_size": spec.train.batch_size,
        "dtype": run.dtype_name,
        "device": describe_devices(run.mesh),  # the last start's; device_starts has each start's
        "num_devices": int(run.mesh.devices.size),
        "num_processes": jax.process_count(),  # several with --distributed, e.g. one per node
        # [{first_epoch, device, num_devices, num_processes, flaxbench_version}] per start, resumes included
        "device_starts": progress["starts"],
        "data_placement": run.placement,  # "device": splits held on every device; "host": batches sent from host memory
        "confusion_matrix": test["confusion_matrix"],
        "per_class": test["per_class"],
        "macro_f1": test["macro_f1"],
        "balanced_accuracy": test["balanced_accuracy"],
        "macro_auc": test["macro_auc"],
        "ece": test["ece"],
        # fitted on the validation tiles (best checkpoint) to minimise their loss; the test tiles' loss and ECE
        # with softmax(logits / temperature), whose predictions (and accuracy) are those above
        "temperature": temperature,
        "test_loss_temperature_scaled": scaled["loss"],
        "ece_temperature_scaled": scaled["ece"],
        "history": history,
        "test_predictions": test["predictions"],
        "skipped_files": list(run.dataset.skipped_files),
        # with the commit of a git checkout: the code of the last start that trained (each start's: device_starts)
        "flaxbench_version": progress["starts"][-1].get("flaxbench_version", flaxbench_version()),
        "versions": library_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run_title(spec: ml_collections.ConfigDict) -> str:
    """spec.title (else the name) with '{init}' replaced by where the weights started ('ImageNet', 'from scratch', ...)."""
    title = spec.get("title") or spec.name
    return title.replace(INIT_PLACEHOLDER, init_in_words(str(spec.model.init), spec.model.name)) if (
        INIT_PLACEHOLDER in title) else title


def train_images_per_epoch(run: Run) -> int:
    """Images seen by one training epoch (the last partial batch is dropped)."""
    return run.steps_per_epoch * run.spec.train.batch_size
