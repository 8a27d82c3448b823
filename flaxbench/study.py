"""The comparison study: every row's spec trained in turn (resuming, skipping finished), then the report."""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

from flaxbench.errors import FlaxbenchError, out_of_memory_message
from flaxbench.seen_tiles import check_same_pixels
from flaxbench.spec import apply_overrides, load_spec_file
from flaxbench.results import write_json_atomic
from flaxbench.workdir import FAILED_FILE, check_same_data, data_record, fold_run_dirs, spec_difference

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"
STUDY_ROWS = (
    "vit_p10", "vit_p15", "convmodel", "resnet18", "alexnet", "googlenet", "densenet121", "resnet50",
    "efficientnet_b4",
)


def parse_study_rows(text: str, flag: str) -> list[str]:
    """The comma-separated study rows in `text`; a FlaxbenchError naming `flag` for any unknown one."""
    rows = [row.strip() for row in text.split(",") if row.strip()]
    unknown = [row for row in rows if row not in STUDY_ROWS]
    if not rows:
        raise FlaxbenchError(f"{flag} is empty; name one or more of {', '.join(STUDY_ROWS)}")
    if unknown:
        raise FlaxbenchError(f"{flag}: {', '.join(unknown)} is not a study row; choose from {', '.join(STUDY_ROWS)}")
    return rows


def default_spec_files() -> list[Path]:
    """The nine study specs, in the study's table order."""
    return [SPEC_DIR / f"{row}.py" for row in STUDY_ROWS]


def row_dir(workdir: Path, name: str, seed: int, seeds: int, fold: tuple[int, int] | None = None) -> Path:
    """Where the run of row `name` with `seed` lives: `workdir/name` for one seed, `.../seed_<seed>` for several.

    A (fold, folds) of cross-validation puts it in `workdir/name_<folds>fold/fold_<fold>` (and its
    seed_<seed>). A run of that seed already started in the other layout (a study rerun with
    another --seeds) is used where it is, so it is neither trained again nor reported twice.
    """
    base = workdir / name if fold is None else workdir / f"{name}_{fold[1]}fold" / f"fold_{fold[0]}"
    single, several = base, base / f"seed_{seed}"
    for existing in (single, several):
        try:
            if json.loads((existing / "spec.json").read_text()).get("seed") == seed:
                return existing
        except (OSError, ValueError, AttributeError):
            continue
    return single if seeds == 1 else several


def _finished_row_problem(out: Path, spec: Any, datasets: Any) -> str | None:
    """Why the finished run in `out` cannot stand for `spec`; None if it can.

    Its spec must be the same but for where the tiles are read from; if that changed, the tiles
    read there now must be the ones its data.json records.
    """
    from data_pipeline import DataError

    diff = spec_difference(out, spec, tiles_may_move=True)
    if diff:
        return f"holds a run of another spec ({diff} differs)"
    if spec_difference(out, spec) is None:
        return None
    try:
        dataset = datasets.load(spec.data)
        splits = {name: getattr(dataset, name) for name in ("train", "val", "test")}
        check_same_data(out, data_record(dataset, splits), "the finished run cannot stand for this row")
        if dataset.tile_digests is not None:
            check_same_pixels(out, dataset.tile_digests, {name: split.ids for name, split in splits.items()},
                              dataset.source, "the finished run cannot stand for this row")
    except (FlaxbenchError, DataError) as e:
        return f"was trained on other tiles than spec.data.source reads now ({e})"
    return None


def run_study(
    spec_files: Sequence[str | Path] | None,
    workdir: str | Path,
    *,
    seeds: int = 1,
    folds: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    external: str | None = None,
    class_map: str | None = None,
    center_crop: int | None = None,
    group_by: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Train every row (and seed, and fold of `folds`-fold cross-validation) not yet complete under `workdir`, then
    write the report there.

    `external` (a folder or zip of class folders; `class_map`, `center_crop`, `group_by` as for `evaluate
    --external`) tests every trained row on those tiles too, unless the row already holds that evaluation; a
    cross-validated row once all its runs have trained, as the ensemble of its runs.
    """
    from data_pipeline import LastDataset
    from flaxbench.report import write_report
    from flaxbench.runtime import is_main_process
    from flaxbench.train.loop import train_and_evaluate

    if seeds < 1:
        raise FlaxbenchError(f"--seeds must be at least 1, got {seeds}")
    if folds is not None:
        _check_folds(folds, overrides or {})
    if external is not None:
        from data_pipeline.groups import check_group_by
        from flaxbench.external import external_path, parse_class_map
        from flaxbench.inference import check_center_crop

        external = external_path(external)  # a typo fails now, not after training every row
        parse_class_map(class_map)
        check_center_crop(center_crop)
        check_group_by(group_by, "--group-by")
    elif class_map is not None or center_crop is not None or group_by is not None:
        raise FlaxbenchError("study takes --class-map, --center-crop and --group-by only with --external PATH (the "
                             "rows' own splits are grouped by spec.data.group_by)")
    workdir = Path(workdir)
    if spec_files is not None and not all(str(path).strip() for path in spec_files):
        raise FlaxbenchError(f"--specs has an empty entry ({','.join(map(str, spec_files))}); name each spec file "
                             "once, comma-separated, e.g. --specs specs/resnet18.py,specs/vit_p15.py")
    specs = []
    for path in spec_files or default_spec_files():
        spec = load_spec_file(path)
        apply_overrides(spec, dict(overrides or {}))
        specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise FlaxbenchError(f"study specs share a name ({names}); give each row its own spec.name")
    cv_folds = [(fold, folds) for fold in range(folds)] if folds else [None]
    # Fold by fold: the rows of one fold share its split, so its tiles are decoded once for all of them.
    jobs = [(spec, fold, k) for fold in cv_folds for spec in specs for k in range(seeds)]
    failures, trained = [], []
    datasets = LastDataset()  # rows and seeds on the same tiles decode them once
    for i, (spec, fold, k) in enumerate(jobs, 1):
        spec = spec.copy_and_resolve_references()
        spec.seed = spec.seed + k
        if fold is not None:
            spec.data.cv_fold, spec.data.cv_folds = fold
        out = row_dir(workdir, spec.name, spec.seed, seeds, fold)
        tag = (f"[{i}/{len(jobs)}] {spec.name}" + (f" fold {fold[0]} of {fold[1]}" if fold else "")
               + (f" seed {spec.seed}" if seeds > 1 else ""))
        if (out / "results.json").exists():
            problem = _finished_row_problem(out, spec, datasets)
            if problem:
                log(f"{tag}: FAILED: {out} {problem}")
                failures.append(f"{spec.name}: {out} {problem}; use another --workdir, or delete that run to train "
                                "it again")
                continue
            log(f"{tag}: complete, skipped ({out / 'results.json'})")
            trained.append((tag, out))
            continue
        log(f"{tag}: training in {out}")
        (out / FAILED_FILE).unlink(missing_ok=True)
        try:
            dataset = datasets.load(spec.data)
            result = train_and_evaluate(spec, out, dataset=dataset, data_load_time_s=datasets.load_time_s)
        except (FlaxbenchError, MemoryError, RuntimeError) as e:
            message = str(e) if isinstance(e, FlaxbenchError) else out_of_memory_message(e)
            if message is None:
                raise
            log(f"{tag}: FAILED: {message}")  # e.g. one model too large for the device: the others still run
            failures.append(f"{spec.name}: {message}")
            if is_main_process():  # for the report, which lists the run as failed, not as never asked for
                write_json_atomic(out / FAILED_FILE, {"name": spec.name, "seed": spec.seed,
                                                      "fold": fold[0] if fold else None, "error": message})
            continue
        log(f"{tag}: test accuracy {100 * result['test_accuracy']:.1f}%, train {result['train_time_s']:.1f} s")
        trained.append((tag, out))
    if external is not None and trained:
        options = {"class_map": class_map, "center_crop": center_crop, "group_by": group_by}
        rows = trained if not folds else _cross_validated_rows(trained, workdir, specs, folds, seeds, log)
        external_failures = _evaluate_external_rows(rows, external, options, log)
    else:
        external_failures = []
    paths = write_report(workdir) if is_main_process() and any(workdir.rglob("results.json")) else {}
    if paths:
        log(f"report: {paths['md']} (report.csv, .json, .tex and the figures beside it)")
    problems = []
    if failures:
        others = "the others are reported" if len(failures) < len(jobs) else "no row trained"
        times = collections.Counter(failures)  # a row failing alike in every fold or seed is said once
        problems.append(f"{len(failures)} of {len(jobs)} study run(s) failed, {others}: " + " | ".join(
            failure + (f" ({n} runs)" if n > 1 else "") for failure, n in times.items()))
    if external_failures:  # every run trained; a test on the external tiles did not
        problems.append(" | ".join(external_failures))
    if problems:
        raise FlaxbenchError("; ".join(problems))
    return paths


def _check_folds(folds: int, overrides: Mapping[str, Any]) -> None:
    """FlaxbenchError unless `--folds` is a fold count the spec overrides leave to it."""
    from data_pipeline import DataError
    from data_pipeline.folds import check_folds

    set_too = [key for key in ("data.cv_folds", "data.cv_fold") if key in overrides or f"spec.{key}" in overrides]
    if set_too:
        raise FlaxbenchError(f"study --folds sets spec.data.cv_folds and spec.data.cv_fold of every run; leave "
                             f"--spec.{set_too[0]} out")
    try:
        check_folds(folds, 0)
    except DataError as e:
        raise FlaxbenchError(f"--folds {folds}: {e}") from None


def _cross_validated_rows(trained: list[tuple[str, Path]], workdir: Path, specs: list[Any], folds: int, seeds: int,
                          log: Callable[[str], None]) -> list[tuple[str, Path]]:
    """(tag, row folder) of each cross-validated row all of whose runs (`folds` x `seeds`) are among `trained` ((tag,
    run folder)); a row with runs missing is said to be left out of the external evaluation."""
    rows = []
    for spec in specs:
        folder = workdir / f"{spec.name}_{folds}fold"
        done = sum(folder in out.parents for _, out in trained)
        if done == folds * seeds:
            rows.append((f"{spec.name} ({folds}-fold ensemble)", folder))
        else:
            log(f"{spec.name} ({folds}-fold): no external evaluation, {done} of its {folds * seeds} runs trained")
    return rows


def _evaluate_external_rows(rows: list[tuple[str, Path]], external: str, options: dict[str, Any],
                            log: Callable[[str], None]) -> list[str]:
    """Test each trained row (tag, workdir) on the tiles at `external` (`options` of evaluate_external), keeping
    earlier results; the failures."""
    from flaxbench.external import evaluate_external, external_target
    from flaxbench.group_intervals import GroupInterval, format_group_interval

    for tag, out in rows:
        target = external_target(out, external)
        if target.exists():
            problem = _external_options_differ(target, external, options)
            if problem:
                log(f"{tag}: external evaluation FAILED: {problem}")
                return [f"external evaluation ({tag}): {problem}"]
            log(f"{tag}: external evaluation kept ({target})")
            continue
        try:
            result, _ = evaluate_external(out, external, **options)
        except FlaxbenchError as e:  # the same tiles and map for every row: the others would fail alike
            log(f"{tag}: external evaluation FAILED: {e}")
            return [f"external evaluation ({tag}): {e}; the trained rows are kept: fix it and run the study again"]
        low, high = result["accuracy_ci"]
        members = (f"; its {len(result['members'])} runs alone {100 * result['member_accuracy_mean']:.1f} ± "
                   f"{100 * result['member_accuracy_std']:.1f}%") if result.get("members") else ""
        groups = None if result["groups"] is None else GroupInterval(result["groups"], result["accuracy_ci_groups"])
        log(f"{tag}: external accuracy {100 * result['accuracy']:.1f}% (95% CI {100 * low:.1f}-{100 * high:.1f}%"
            f"{format_group_interval(groups)}) on {result['tiles']} tiles{members}")
    return []


def _external_options_differ(path: Path, external: str, options: dict[str, Any]) -> str | None:
    """Why the external evaluation in `path` is not the one asked for (`external`, `options`); None if it is."""
    from flaxbench.external import parse_class_map

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"'{path}' cannot be read ({e}); delete it to evaluate the row again"
    asked = {"external": external, "class_map": parse_class_map(options["class_map"]),
             "center_crop": options["center_crop"], "group_by": options["group_by"]}
    for key, value in asked.items():
        if record.get(key) != value:
            flag = "--" + key.replace("_", "-")
            return (f"'{path}' was made with {flag} {record.get(key)!r}, not {value!r}; delete it to evaluate the "
                    "row again, or ask for what it was made with")
    runs = [run.relative_to(path.parent).parts for run in fold_run_dirs(path.parent)]
    scored = [Path(str(member.get("workdir", ""))).parts[-len(run):] if isinstance(member, dict) else ()
              for member, run in zip(record.get("members") or [], runs)]
    if runs and (scored != runs or len(record.get("members") or []) != len(runs)):
        return (f"'{path}' is the ensemble of other runs than the {len(runs)} in '{path.parent}' now; delete it to "
                "evaluate the row again")
    return None
