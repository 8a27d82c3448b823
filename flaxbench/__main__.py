"""Command line: train a spec, or `evaluate | convert | study | report | predict`.

    python -m flaxbench --spec specs/vit_p15.py [--spec.train.epochs=3] [--workdir DIR] [--overwrite]
    python -m flaxbench evaluate --workdir DIR [--split test|val|train] [--checkpoint best|last] [--source folder:PATH]
        [--tfds-data-dir DIR] [--tta] [--batch-size N]
    python -m flaxbench evaluate --workdir DIR --external PATH [--class-map FOLDER=CLASS,...] [--center-crop PX] [--group-by REGEX] [--out FILE] [--overwrite] [--batch-size N]
    python -m flaxbench convert --arch resnet18 --torch-weights FILE.pth --out DIR
    python -m flaxbench study [--specs a.py,b.py] [--workdir runs/study] [--seeds 1] [--folds K] [--spec.x=y ...]
        [--external PATH [--class-map FOLDER=CLASS,...] [--center-crop PX] [--group-by REGEX]]
    python -m flaxbench report RUNS_DIR [--out DIR]
    python -m flaxbench predict --workdir DIR PATH... [--out preds.csv] [--overwrite] [--tta] [--group-by REGEX] [--map XY_REGEX [--map-class CLASS,...]] [--center-crop PX] [--batch-size N] [--temperature-scaled]   (PATH: tile, folder or .zip)

Compiled programs are kept in a persistent cache and loaded by later runs of the same shapes:
FLAXBENCH_COMPILATION_CACHE=DIR, or =off (default ~/.cache/flaxbench/xla/<machine>-<CPU flags hash>).
"""

from __future__ import annotations

import errno
import json
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from absl import app, flags
from absl import logging as absl_logging

from flaxbench.errors import FlaxbenchError, out_of_memory_message
from flaxbench.host_memory import restart_with_huge_pages

COMMANDS = ("train", "evaluate", "convert", "study", "report", "predict")
# Commands that compile models, and so use the persistent compilation cache (flaxbench/compile_cache.py).
COMPILING_COMMANDS = ("train", "evaluate", "study", "predict")
COMMON_SPEC = Path(__file__).resolve().parent.parent / "specs" / "common.py"

flags.DEFINE_string("spec", None, "Spec file (specs/*.py); override keys with --spec.a.b=value.")
flags.DEFINE_string("workdir", None, "Run directory (default runs/<spec name>; study: runs/study).")
flags.DEFINE_bool("overwrite", False, "Replace the results of a finished run in --workdir; predict and evaluate "
                  "--external: replace --out.")
flags.DEFINE_enum("split", "test", ["test", "val", "train"], "evaluate: which split.")
flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "evaluate/predict: which checkpoint.")
flags.DEFINE_string("group_by", None, "predict: also write OUT_groups.csv, mean probabilities per group (a regular "
                    "expression on each tile's path, its first group or match naming the slide or patient). "
                    "evaluate/study --external: the same on each tile's path below PATH, for the accuracy's 95% CI "
                    "over patients or slides.")
flags.DEFINE_alias("group-by", "group_by")
flags.DEFINE_string("map", None, "predict: also draw OUT_maps/<group>.png, each tile's predicted class at its "
                    "place on the slide (a regular expression whose two groups are a tile's x and y in its path, "
                    r"e.g. 'x(\d+)_y(\d+)').")
flags.DEFINE_string("map_class", None, "predict --map: also draw a heat map of each slide's probability of these "
                    "classes per tile, e.g. tumor or tumor,stroma (OUT_maps/<group>_p_<class>.png).")
flags.DEFINE_alias("map-class", "map_class")
flags.DEFINE_bool("temperature_scaled", False, "predict: divide the logits by the temperature the run fitted on its "
                  "validation tiles (results.json) before the softmax: calibrated probabilities, same classes.")
flags.DEFINE_alias("temperature-scaled", "temperature_scaled")
flags.DEFINE_bool("tta", False, "evaluate/predict: average class probabilities over each tile's 8 flips and rotations.")
flags.DEFINE_string("source", None, "evaluate: where the run's tiles are now, if they moved (folder:PATH, a folder or zip).")
flags.DEFINE_string("tfds_data_dir", None, "evaluate: where a TFDS run's prepared dataset is now, if it moved "
                    "(the run's spec.data.tfds_data_dir).")
flags.DEFINE_alias("tfds-data-dir", "tfds_data_dir")
flags.DEFINE_string("external", None, "evaluate: test the run on labelled tiles it never saw, a folder (or zip) of "
                    "class folders, e.g. another cohort; writes WORKDIR/eval_external_<name>.json. study: test "
                    "every row on them.")
flags.DEFINE_string("class_map", None, "evaluate/study --external: FOLDER=CLASS,... for class folders whose names are not "
                    "the run's class names, e.g. TUM=tumor,STR=stroma.")
flags.DEFINE_alias("class-map", "class_map")
flags.DEFINE_integer("center_crop", None, "evaluate/study --external, predict: keep each tile's central PX square "
                     "before resizing it to the run's tile size, e.g. for the same tissue per tile as the run's tiles.")
flags.DEFINE_alias("center-crop", "center_crop")
flags.DEFINE_string("arch", None, "convert: architecture, e.g. resnet18.")
flags.DEFINE_string("torch_weights", None, "convert: torchvision state_dict .pth file.")
flags.DEFINE_alias("torch-weights", "torch_weights")
flags.DEFINE_string("out", None, "convert: output dir; report: output dir; predict: CSV file; evaluate --external: "
                    "JSON file.")
flags.DEFINE_list("specs", None, "study: comma-separated spec files (default: the nine study specs).")
flags.DEFINE_integer("batch_size", None, "evaluate, predict: tiles a forward pass (default: the run's "
                     "spec.train.eval_batch_size); lower it if a device runs out of memory.")
flags.DEFINE_alias("batch-size", "batch_size")
flags.DEFINE_integer("seeds", 1, "study: seeds per row (seed, seed+1, ...).")
flags.DEFINE_integer("folds", None, "study: K-fold cross-validation, every row trained K times, each testing on "
                     "another fold (spec.data.cv_folds=K, cv_fold=0..K-1).")
flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() (SLURM or JAX_COORDINATOR_ADDRESS etc.).")
FLAGS = flags.FLAGS
# The flags each command reads; any other of ours given is refused, so that e.g. `--seeds 3` without `study`, or
# `study --overwrite`, is not silently ignored (and `predict --distributed` does not predict twice).
COMMAND_FLAGS = {
    "train": ("spec", "workdir", "overwrite", "distributed"),
    "evaluate": ("workdir", "split", "checkpoint", "source", "tfds_data_dir", "tta", "external", "class_map",
                 "center_crop", "group_by", "out", "overwrite", "batch_size", "distributed"),
    "convert": ("arch", "torch_weights", "out"),
    "study": ("spec", "specs", "workdir", "seeds", "folds", "external", "class_map", "center_crop", "group_by",
              "distributed"),
    "report": ("out",),
    "predict": ("workdir", "out", "overwrite", "checkpoint", "tta", "group_by", "map", "map_class", "center_crop",
                "batch_size", "temperature_scaled"),
}
# A file that cannot be written: where each command could write instead.
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)
WHERE_TO_WRITE = {
    "train": "choose another --workdir", "study": "choose another --workdir",
    "evaluate": "evaluate writes eval_*.json beside the run (--external: --out FILE): copy the run somewhere writable",
    "convert": "give --out a writable folder", "report": "give --out a writable folder",
    "predict": "give --out a writable file",
}
# The --spec.KEY=VALUE overrides and the spec file they apply to, loaded once by `check_spec_arguments`
# (ml_collections' config_flags can neither set a key to None nor override one whose value is None).
SPEC_OVERRIDES: dict[str, Any] = {}
LOADED_SPEC: dict[str, Any] = {}  # "config": the spec file's ConfigDict with the overrides applied


def _train(args: list[str]) -> None:
    from flaxbench.spec import finalize
    from flaxbench.train.loop import train_and_evaluate

    if FLAGS.spec is None:
        raise FlaxbenchError("--spec is required, e.g. python -m flaxbench --spec specs/demo.py")
    spec = finalize(LOADED_SPEC["config"], FLAGS.spec)
    train_and_evaluate(spec, FLAGS.workdir or f"runs/{spec.name}", overwrite=FLAGS.overwrite)
    for finished in (signal.SIGINT, signal.SIGTERM):  # the run is complete: nothing left that a stop could save
        signal.signal(finished, signal.SIG_IGN)


def _evaluate(args: list[str]) -> None:
    from flaxbench.evaluation import format_metrics
    from flaxbench.runtime import is_main_process
    from flaxbench.train.evaluate import eval_filename, evaluate_workdir

    if not FLAGS.workdir:
        raise FlaxbenchError("evaluate needs --workdir DIR (a run directory)")
    if FLAGS.external is not None:
        _evaluate_external()
        return
    for name in ("class_map", "center_crop", "group_by", "out", "overwrite"):
        if FLAGS[name].present:
            mine = "; a run's own splits are grouped by its spec.data.group_by" if name == "group_by" else ""
            raise FlaxbenchError(f"evaluate takes --{name.replace('_', '-')} only with --external PATH (labelled tiles "
                                 f"the run never saw){mine}")
    result = evaluate_workdir(FLAGS.workdir, FLAGS.split, FLAGS.checkpoint, FLAGS.source, tta=FLAGS.tta,
                              batch_size=_batch_size(), tfds_data_dir=FLAGS.tfds_data_dir)
    print(format_metrics(result["name"], FLAGS.split, result, synthetic=result["synthetic"])
          + f"  (epoch {result['epoch']}, {FLAGS.checkpoint}{', 8-view TTA' if FLAGS.tta else ''})")
    if is_main_process():  # the one that writes
        print(f"wrote {Path(FLAGS.workdir) / eval_filename(FLAGS.split, FLAGS.checkpoint, FLAGS.tta)}")


def _batch_size() -> int | None:
    """--batch-size, if given and at least 1."""
    if FLAGS.batch_size is not None and FLAGS.batch_size < 1:
        raise FlaxbenchError(f"--batch-size must be at least 1 tile, got {FLAGS.batch_size}")
    return FLAGS.batch_size


def _evaluate_external() -> None:
    from flaxbench.evaluation import format_metrics
    from flaxbench.external import evaluate_external
    from flaxbench.runtime import is_main_process

    for name in ("split", "source", "tfds_data_dir"):
        if FLAGS[name].present:
            raise FlaxbenchError(f"evaluate --external reads the tiles at its PATH; it does not take "
                                 f"--{name.replace('_', '-')}")
    result, path = evaluate_external(FLAGS.workdir, FLAGS.external, which=FLAGS.checkpoint, tta=FLAGS.tta,
                                     class_map=FLAGS.class_map, out=FLAGS.out, overwrite=FLAGS.overwrite,
                                     batch_size=_batch_size(), center_crop=FLAGS.center_crop,
                                     group_by=FLAGS.group_by)
    members = result.get("members")
    scored = (f"epoch {result['epoch']}" if not members else
              f"mean probabilities of {len(members)} runs, whose own accuracies are "
              f"{100 * result['member_accuracy_mean']:.1f} ± {100 * result['member_accuracy_std']:.1f}%")
    print(format_metrics(result["name"], f"external: {result['tiles']} tiles", result, synthetic=result["synthetic"])
          + f"  ({scored}, {FLAGS.checkpoint}"
          + f"{', 8-view TTA' if FLAGS.tta else ''})")
    if is_main_process():  # the one that writes
        print(f"wrote {path}")


def _convert(args: list[str]) -> None:
    from flaxbench.weights import load_torchvision, save_converted

    if not (FLAGS.arch and FLAGS.torch_weights and FLAGS.out):
        raise FlaxbenchError("convert needs --arch, --torch-weights FILE.pth and --out DIR")
    out = Path(FLAGS.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FlaxbenchError(f"output directory '{out}' is not empty; choose a new --out")
    model = load_torchvision(FLAGS.arch, FLAGS.torch_weights)
    save_converted(model, FLAGS.arch, FLAGS.out, FLAGS.torch_weights)
    print(f"wrote {FLAGS.arch} weights to {FLAGS.out}; use spec.model.init='checkpoint:{FLAGS.out}'")


def _study(args: list[str]) -> None:
    from flaxbench.study import run_study

    run_study(FLAGS.specs, FLAGS.workdir or "runs/study", seeds=FLAGS.seeds, folds=FLAGS.folds,
              overrides=SPEC_OVERRIDES,
              external=FLAGS.external, class_map=FLAGS.class_map, center_crop=FLAGS.center_crop,
              group_by=FLAGS.group_by)


def _report(args: list[str]) -> None:
    from flaxbench.report import write_report

    if len(args) != 1:
        raise FlaxbenchError("report needs exactly one RUNS_DIR, e.g. python -m flaxbench report runs/study")
    written = write_report(args[0], FLAGS.out)
    for kind, path in written.items():
        print(f"{kind:>20}: {path}")
    unfinished = json.loads(written["json"].read_text(encoding="utf-8"))["unfinished_runs"]  # as the report found them
    if unfinished:
        print(f"warning: {len(unfinished)} run(s) without results.json, not in the report (unfinished or failed): "
              + ", ".join(str(path) for path in unfinished[:5]) + (", ..." if len(unfinished) > 5 else ""),
              file=sys.stderr)


def _predict(args: list[str]) -> None:
    from flaxbench.predict import predict_paths

    if not FLAGS.workdir or not args:
        raise FlaxbenchError("predict needs --workdir DIR and at least one tile file, folder or .zip")
    out = FLAGS.out or str(Path(FLAGS.workdir) / "predictions.csv")
    predict_paths(FLAGS.workdir, args, out, which=FLAGS.checkpoint, batch_size=_batch_size(),
                  overwrite=FLAGS.overwrite, tta=FLAGS.tta, group_by=FLAGS.group_by,
                  center_crop=FLAGS.center_crop, map_xy=FLAGS.map, map_classes=FLAGS.map_class,
                  temperature_scaled=FLAGS.temperature_scaled)


HANDLERS = {"train": _train, "evaluate": _evaluate, "convert": _convert, "study": _study,
            "report": _report, "predict": _predict}


def main(argv: list[str]) -> None:
    """Dispatch to the command named by the first positional argument (default: train)."""
    from data_pipeline import DataError
    from flaxbench.train.stops import Interrupted

    if not FLAGS["verbosity"].present:
        # Library INFO lines (JAX failing to find a TPU, orbax's saves) read like errors; -v 0 shows them.
        absl_logging.set_verbosity(absl_logging.WARNING)
    args = argv[1:]
    command = "train"
    if args and args[0] in COMMANDS:
        command, args = args[0], args[1:]
    elif args and command == "train":
        raise app.UsageError(f"unknown command '{args[0]}'; commands: {', '.join(COMMANDS)}")
    try:
        check_command_flags(command)
        if FLAGS.distributed:
            from flaxbench.runtime import initialize_distributed

            initialize_distributed()
        if command in COMPILING_COMMANDS:
            from flaxbench.compile_cache import enable_compilation_cache

            enable_compilation_cache()
        HANDLERS[command](args)
    except (FlaxbenchError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (MemoryError, RuntimeError) as e:
        message = out_of_memory_message(e)
        if message is None:
            raise
        print(f"error: {message}; epochs saved before it are kept", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in UNWRITABLE or e.filename is None:
            raise
        # EACCES and EPERM may come from a read as well: the line names the file and the reason as they are
        print(f"error: '{e.filename}': {e.strerror}; {WHERE_TO_WRITE[command]}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C while loading or compiling, or a second one during an epoch
        print("stopped by Ctrl-C; epochs saved before it are kept: the same command resumes from the last "
              "checkpoint", file=sys.stderr)
        sys.exit(130)
    except Interrupted as e:
        print(f"stopped by {e.signal_name} after epoch {e.epoch}; checkpoint saved in {e.workdir / 'checkpoints'}. "
              f"Resume with: {shlex.join(['python', '-m', 'flaxbench', *resume_arguments(sys.argv[1:])])}",
              file=sys.stderr)
        sys.exit(130 if e.signal_name == "SIGINT" else 143)


def check_command_flags(command: str) -> None:
    """Refuse a flaxbench flag that `command` would ignore, naming the commands that take it."""
    for name in sorted({name for names in COMMAND_FLAGS.values() for name in names}):
        if FLAGS[name].present and name not in COMMAND_FLAGS[command]:
            takers = [c for c, names in COMMAND_FLAGS.items() if name in names]
            flag = "--" + name.replace("_", "-")
            hint = " (finished rows are kept; delete a row's directory to train it again)" if (
                command, name) == ("study", "overwrite") else ""
            raise FlaxbenchError(f"{command} does not take {flag}{hint}; it is a flag of: {', '.join(takers)}")


def resume_arguments(argv: list[str]) -> list[str]:
    """The command-line arguments that resume an interrupted run: the same ones without --overwrite."""
    return [arg for arg in argv if arg.split("=", 1)[0] not in ("--overwrite", "--nooverwrite")]


def _spec_arguments(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """The --spec file, the --spec.key=value overrides, and `argv` without the overrides.

    An override takes `--spec.key=value` or, as absl flags do, `--spec.key value`; a bare
    `--spec.key` followed by another flag (or nothing) means True.
    """
    path, overrides, rest = None, [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--spec."):
            key, sep, value = arg[len("--spec."):].partition("=")
            if not sep and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, sep = argv[i + 1], "="
                i += 1
            overrides.append(f"{key}={value}" if sep else f"{key}=True")
        else:
            if arg.startswith("--spec="):
                path = arg.split("=", 1)[1]
            elif arg == "--spec" and i + 1 < len(argv):
                path = argv[i + 1]
            rest.append(arg)
        i += 1
    return path, overrides, rest


def check_spec_arguments(argv: list[str]) -> dict[str, Any]:
    """Load the spec, apply the overrides (kept in LOADED_SPEC) and return them; a bad file or key is one line."""
    from flaxbench.spec import apply_overrides, load_spec_file, parse_overrides

    path, overrides, _ = _spec_arguments(argv)
    if path is None:
        if overrides:
            raise FlaxbenchError("--spec.KEY=VALUE overrides need a --spec FILE to apply to")
        return {}
    spec = load_spec_file(path)
    parsed = parse_overrides(spec, overrides)
    apply_overrides(spec, parsed)
    LOADED_SPEC["config"] = spec
    return parsed


def run() -> None:
    """Console-script entry point."""
    restart_with_huge_pages()
    argv = sys.argv
    try:
        command = argv[1] if len(argv) > 1 else "train"
        if command == "study":
            if _spec_arguments(argv)[0] is not None:
                raise FlaxbenchError("study does not take --spec; name its rows with --specs a.py,b.py (default: the "
                                     "nine study specs) and override their keys with --spec.KEY=VALUE")
            # Study overrides (--spec.x=y) are parsed against the common spec, then applied to every row.
            options = [arg for arg in _spec_arguments(argv)[1] if arg.startswith("model.options")]
            if options:
                raise FlaxbenchError(f"study does not take --spec.{options[0].split('=')[0]}: each row's model has "
                                     "options of its own; set them in the rows' spec files (--specs a.py,b.py)")
            argv = [argv[0], "study", f"--spec={COMMON_SPEC}", *argv[2:]]
        if command in ("evaluate", "predict", "report", "convert") and any(
                arg == "--spec" or arg.startswith(("--spec=", "--spec.")) for arg in argv):
            raise FlaxbenchError(f"{command} does not take --spec or --spec.KEY: evaluate and predict use the run's "
                                 "saved spec (WORKDIR/spec.json), report reads results.json files")
        SPEC_OVERRIDES.update(check_spec_arguments(argv))
    except FlaxbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    app.run(main, argv=_spec_arguments(argv)[2])


if __name__ == "__main__":
    run()
