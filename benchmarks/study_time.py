"""Training time of the whole nine-row study on this device, against the study's 2,401 s.

    python benchmarks/study_time.py                       # 30 epochs per row, as the study
    python benchmarks/study_time.py --epochs 2 --extrapolate 30   # time 2 epochs, scale to 30
    python benchmarks/study_time.py --rows convmodel --epochs 1 --tiles 64 --size 32   # a quick trial

Each row trains its real spec (random init instead of downloaded weights: speed does not
depend on weight values) on study-shaped data: 6 classes, 2550/600/600 tiles of 150 px. The
pixels are random because the real tiles cannot be downloaded here. Time is flaxbench's
`train_time_s` (all epochs with per-epoch validation, after compilation); compile is shown
apart. With --extrapolate the printed totals are per-epoch means times that many epochs, and
the output says so. `--tiles` and `--size` shrink the data for a quick trial; the study's times are
then not comparable and are left out. Other processes' load on the machine is sampled at the start
and after each row, warned about when they keep more than half the cores busy, and recorded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine_load import busy_cores, warn_if_busy  # noqa: E402
from benchmarks.throughput import SPEC_DIR, count, random_dataset  # noqa: E402
from data_pipeline import Split, TileDataset  # noqa: E402
from flaxbench.spec import load_spec_file  # noqa: E402
from flaxbench.compile_cache import disable_compilation_cache  # noqa: E402
from flaxbench.errors import FlaxbenchError  # noqa: E402
from flaxbench.host_memory import restart_with_huge_pages  # noqa: E402
from flaxbench.study import STUDY_ROWS, parse_study_rows  # noqa: E402
from flaxbench.train.loop import train_and_evaluate  # noqa: E402

STUDY_SECONDS = {"vit_p10": 359.7, "vit_p15": 129.9, "convmodel": 52.8, "resnet18": 148.5, "alexnet": 95.5,
                 "googlenet": 162.2, "densenet121": 408.5, "resnet50": 434.3, "efficientnet_b4": 609.8}
STUDY_EPOCHS = 30  # the epochs behind STUDY_SECONDS
STUDY_TILES, STUDY_HELD_OUT, STUDY_SIZE = 2550, 600, 150  # training tiles, validation (and test) tiles, px
LOAD_CONSEQUENCE = "the times run long under load"


def study_shaped_dataset(size: int, tiles: int = STUDY_TILES) -> TileDataset:
    """`tiles` random training tiles of `size` px, and validation and test splits in the study's 2550/600/600 shape."""
    held_out = max(1, round(tiles * STUDY_HELD_OUT / STUDY_TILES))
    whole = random_dataset(tiles + 2 * held_out, size)

    def part(lo: int, hi: int) -> Split:
        return Split(whole.train.images[lo:hi], whole.train.labels[lo:hi], whole.train.ids[lo:hi])

    return TileDataset(part(0, tiles), part(tiles, tiles + held_out), part(tiles + held_out, tiles + 2 * held_out),
                       whole.classes, "random", True, whole.image_size, ())


class _TimingRunWarmup(logging.Filter):
    """Drops flaxbench's warning that warm-up spans the whole run: expected when timing an epoch or two."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for that one warning, so it is not printed."""
        return not str(record.msg).startswith("spec.train.warmup_epochs=")


def plural(count_: int, noun: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{count_} {noun}{'' if count_ == 1 else 's'}"


def print_table(rows: list[dict], args: argparse.Namespace, total: float, total_compile: float) -> None:
    """Per-row and total times; the study's times and the speed-up only where the data is study-shaped."""
    epochs = rows[0]["epochs"]
    note = f" (extrapolated from {plural(args.epochs, 'epoch')})" if args.extrapolate else ""
    scaled = "" if epochs == STUDY_EPOCHS else f"; study times scaled from {STUDY_EPOCHS} to {epochs} epochs"
    if rows[0]["study_s"] is None:
        scaled = f"; {args.tiles} training tiles of {args.size} px, not the study's: no study times to compare"
    print(f"device: {rows[0]['device']}, {rows[0]['dtype']}, {epochs} epochs per row{note}{scaled}")
    print(f"{'row':<18}{'train s':>10}{'study s':>10}{'speed-up':>10}{'compile s':>11}{'img/s':>9}")

    def study_columns(study_s: float | None, seconds: float) -> str:
        """The study's seconds and the speed-up over them, or dashes where there are none."""
        return f"{'-':>10}{'-':>10}" if study_s is None else f"{study_s:>10.1f}{study_s / seconds:>9.3g}x"

    for r in rows:
        print(f"{r['row']:<18}{r['train_time_s']:>10.1f}{study_columns(r['study_s'], r['train_time_s'])}"
              f"{r['compile_time_s']:>11.1f}{r['images_per_second']:>9.0f}")
    study_total = None if rows[0]["study_s"] is None else sum(r["study_s"] for r in rows)
    print(f"{'total':<18}{total:>10.1f}{study_columns(study_total, total)}{total_compile:>11.1f}")


def main() -> None:
    """Train every row, print per-row and total times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(STUDY_ROWS))
    parser.add_argument("--epochs", type=count, default=30)
    parser.add_argument("--extrapolate", type=count, default=None, help="scale the mean epoch time to N epochs")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    parser.add_argument("--tiles", type=count, default=STUDY_TILES,
                        help=f"training tiles (default the study's {STUDY_TILES}; validation and test scale with it)")
    parser.add_argument("--size", type=count, default=STUDY_SIZE, help=f"tile size in px (default {STUDY_SIZE})")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        args.rows = parse_study_rows(args.rows, "--rows")
    except FlaxbenchError as error:
        parser.error(str(error))
    specs = {row: load_spec_file(SPEC_DIR / f"{row}.py") for row in args.rows}
    batch = max(spec.train.batch_size for spec in specs.values())
    if args.tiles < batch:
        parser.error(f"--tiles {args.tiles} is fewer than one training batch of the rows ({batch}); "
                     f"use at least {batch}")
    logging.getLogger().addFilter(_TimingRunWarmup())
    load = busy_cores()
    warn_if_busy(load, "at the start", LOAD_CONSEQUENCE)
    data = study_shaped_dataset(args.size, args.tiles)
    study_shaped = (args.tiles, args.size) == (STUDY_TILES, STUDY_SIZE)
    total, total_compile, rows, failed = 0.0, 0.0, [], []
    epochs = args.extrapolate or args.epochs
    scale = epochs / STUDY_EPOCHS  # the study's times are for 30 epochs: compare like with like
    for row in args.rows:
        spec = specs[row]
        spec.model.init = "scratch"
        spec.train.epochs = args.epochs
        if args.dtype:
            spec.train.dtype = args.dtype
        try:
            with tempfile.TemporaryDirectory() as workdir:
                result = train_and_evaluate(spec, workdir, log=lambda s: None, dataset=data)
        except Exception as error:  # one failing row must not lose the others' numbers
            print(f"{row}: failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                  " (this script's tile size is --size)", file=sys.stderr, flush=True)
            failed.append(row)
            continue
        load_after = busy_cores()
        warn_if_busy(load_after, f"right after training {row}", LOAD_CONSEQUENCE)
        seconds = result["train_time_s"]
        if args.extrapolate:
            seconds = seconds / args.epochs * args.extrapolate
        total += seconds
        total_compile += result["compile_time_s"]
        rows.append({"row": row, "train_time_s": round(seconds, 2), "compile_time_s": round(result["compile_time_s"], 2),
                     "images_per_second": round(result["images_per_second"], 1),
                     "study_s": round(STUDY_SECONDS[row] * scale, 2) if study_shaped else None,
                     "device": result["device"], "dtype": result["dtype"],
                     "epochs": epochs, "extrapolated": bool(args.extrapolate), "timed_epochs": args.epochs,
                     "measured_train_s": round(result["train_time_s"], 2), "tiles": args.tiles, "size": args.size,
                     "busy_cores_at_start": round(load, 2), "busy_cores_after": round(load_after, 2)})
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
    if not args.json and rows:
        print_table(rows, args, total, total_compile)
    if failed:
        sys.exit(f"study_time: {len(failed)} row(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    restart_with_huge_pages()  # as `python -m flaxbench` does
    disable_compilation_cache()  # compile times are compiles, not loads from a cache
    main()
