"""How long loading a source's tiles takes, and its peak memory: every split, against one split alone.

    python benchmarks/load_tiles.py --data source=folder:/data/NCT-CRC-HE-100K --data classes=None \
        --data "split=(0.7,0.15,0.15)" [--spec specs/convmodel.py] [--split test] [--repeats 3] [--json]

`spec.data` is the spec's (default: the study's, Kather 2016 through TFDS, six classes, 2550/600/600)
with `--data KEY=VALUE` overrides (a Python literal, or else a string). Training decodes every split;
`evaluate --split test` decodes its split alone (folders, zips and TFDS datasets are listed and split
first). Each load runs in a fresh process, so its peak resident memory is its own; the two kinds
alternate, `--repeats` times each, and medians are reported.
"""

from __future__ import annotations

import argparse
import ast
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPLITS = ("train", "val", "test")


def data_overrides(pairs: list[str]) -> dict:
    """{key: value} of `KEY=VALUE` pairs; a value that is no Python literal stays a string."""
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--data {pair!r} is not KEY=VALUE, e.g. --data source=folder:/data/tiles")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return overrides


def load_once(spec_file: str, overrides: dict, decode: tuple[str, ...]) -> dict:
    """Load the spec's tiles in this process: seconds, peak resident GB, tiles decoded."""
    from data_pipeline import load_dataset
    from flaxbench.spec import load_spec_file

    data = load_spec_file(spec_file).data
    unknown = sorted(set(overrides) - set(data.keys()))
    if unknown:
        raise ValueError(f"--data {unknown[0]}: spec.data has no such key; its keys: {', '.join(sorted(data.keys()))}")
    data.update(overrides)
    start = time.perf_counter()
    dataset = load_dataset(data, decode=decode)
    seconds = time.perf_counter() - start
    decoded = sum(len(getattr(dataset, name).ids) for name in decode)
    return {"seconds": seconds, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "tiles": decoded, "source": dataset.source, "image_size": list(dataset.image_size)}


def timed_in_child(args: argparse.Namespace, decode: tuple[str, ...]) -> dict:
    """`load_once` in a fresh Python process; SystemExit with its error if it fails."""
    command = [sys.executable, __file__, "--child", ",".join(decode), "--spec", args.spec,
               *[f"--data={pair}" for pair in args.data]]
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.exit(f"load_tiles: loading failed: {last}")
    return json.loads(lines[-1])


def main() -> None:
    """Parse flags, time loading every split and one split alone, print a table or JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(Path(__file__).resolve().parent.parent / "specs" / "convmodel.py"))
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", default="test", choices=SPLITS, help="the split loaded alone")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        overrides = data_overrides(args.data)
    except ValueError as error:
        parser.error(str(error))
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.child:
        try:
            print(json.dumps(load_once(args.spec, overrides, tuple(args.child.split(",")))))
        except Exception as error:  # the parent prints this line
            sys.exit(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        return
    from benchmarks.throughput import busy_cores  # not in the children: its imports would count in their memory

    load = busy_cores()
    kinds = {"all splits": SPLITS, f"{args.split} alone": (args.split,)}
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for kind, decode in kinds.items():
            runs[kind].append(timed_in_child(args, decode))
    rows = []
    for kind, results in runs.items():
        first = results[0]
        seconds = [r["seconds"] for r in results]
        rows.append({"load": kind, "tiles": first["tiles"], "seconds": round(statistics.median(seconds), 3),
                     "seconds_range": [round(min(seconds), 3), round(max(seconds), 3)],
                     "peak_gb": round(statistics.median(r["peak_gb"] for r in results), 3),
                     "source": first["source"], "image_size": first["image_size"], "repeats": args.repeats,
                     "busy_cores_at_start": round(load, 2)})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{rows[0]['source']}, tiles of {rows[0]['image_size'][0]} px; medians of {args.repeats} runs")
    print(f"{'load':<14}{'tiles':>8}{'seconds':>9}{'range':>16}{'peak GB':>9}")
    for row in rows:
        low, high = row["seconds_range"]
        span = f"{low:.2f}-{high:.2f}"
        print(f"{row['load']:<14}{row['tiles']:>8}{row['seconds']:>9.2f}{span:>16}{row['peak_gb']:>9.2f}")


if __name__ == "__main__":
    main()
