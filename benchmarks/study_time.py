"""Training time of the whole nine-row study on this device, against the study's 2,401 s.

    python benchmarks/study_time.py                       # 30 epochs per row, as the study
    python benchmarks/study_time.py --epochs 2 --extrapolate 30   # time 2 epochs, scale to 30

Each row trains its real spec (random init instead of downloaded weights: speed does not
depend on weight values) on study-shaped data: 6 classes, 2550/600/600 tiles of 150 px. The
pixels are random because the real tiles cannot be downloaded here. Time is flaxbench's
`train_time_s` (all epochs with per-epoch validation, after compilation); compile is shown
apart. With --extrapolate the printed totals are per-epoch means times that many epochs, and
the output says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.throughput import count, random_dataset  # noqa: E402
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


def study_shaped_dataset(size: int) -> TileDataset:
    """2550/600/600 random tiles of the study's shape."""
    whole = random_dataset(3750, size)

    def part(lo: int, hi: int) -> Split:
        return Split(whole.train.images[lo:hi], whole.train.labels[lo:hi], whole.train.ids[lo:hi])

    return TileDataset(part(0, 2550), part(2550, 3150), part(3150, 3750), whole.classes, "random", True,
                       whole.image_size, ())


def main() -> None:
    """Train every row, print per-row and total times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(STUDY_ROWS))
    parser.add_argument("--epochs", type=count, default=30)
    parser.add_argument("--extrapolate", type=count, default=None, help="scale the mean epoch time to N epochs")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        args.rows = parse_study_rows(args.rows, "--rows")
    except FlaxbenchError as error:
        parser.error(str(error))
    data = study_shaped_dataset(150)
    total, total_compile, rows, failed = 0.0, 0.0, [], []
    epochs = args.extrapolate or args.epochs
    scale = epochs / STUDY_EPOCHS  # the study's times are for 30 epochs: compare like with like
    for row in args.rows:
        spec = load_spec_file(Path(__file__).resolve().parent.parent / "specs" / f"{row}.py")
        spec.model.init = "scratch"
        spec.train.epochs = args.epochs
        if args.dtype:
            spec.train.dtype = args.dtype
        try:
            with tempfile.TemporaryDirectory() as workdir:
                result = train_and_evaluate(spec, workdir, log=lambda s: None, dataset=data)
        except Exception as error:  # one failing row must not lose the others' numbers
            print(f"{row}: failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                  file=sys.stderr, flush=True)
            failed.append(row)
            continue
        seconds = result["train_time_s"]
        if args.extrapolate:
            seconds = seconds / args.epochs * args.extrapolate
        total += seconds
        total_compile += result["compile_time_s"]
        rows.append({"row": row, "train_time_s": round(seconds, 2), "compile_time_s": round(result["compile_time_s"], 2),
                     "images_per_second": round(result["images_per_second"], 1),
                     "study_s": round(STUDY_SECONDS[row] * scale, 2),
                     "device": result["device"], "dtype": result["dtype"],
                     "epochs": epochs, "extrapolated": bool(args.extrapolate)})
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
    if not args.json and rows:
        note = f" (extrapolated from {args.epochs} epochs)" if args.extrapolate else ""
        scaled = "" if epochs == STUDY_EPOCHS else f"; study times scaled from {STUDY_EPOCHS} to {epochs} epochs"
        print(f"device: {rows[0]['device']}, {rows[0]['dtype']}, {epochs} epochs per row{note}{scaled}")
        print(f"{'row':<18}{'train s':>10}{'study s':>10}{'speed-up':>10}{'compile s':>11}{'img/s':>9}")
        for r in rows:
            print(f"{r['row']:<18}{r['train_time_s']:>10.1f}{r['study_s']:>10.1f}{r['study_s'] / r['train_time_s']:>9.3g}x"
                  f"{r['compile_time_s']:>11.1f}{r['images_per_second']:>9.0f}")
        study_total = sum(r["study_s"] for r in rows)
        print(f"{'total':<18}{total:>10.1f}{study_total:>10.1f}{study_total / total:>9.3g}x{total_compile:>11.1f}")
    if failed:
        sys.exit(f"study_time: {len(failed)} row(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    restart_with_huge_pages()  # as `python -m flaxbench` does
    disable_compilation_cache()  # compile times are compiles, not loads from a cache
    main()
