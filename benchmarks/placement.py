"""What feeding batches from host memory costs: flaxbench's epoch with the tiles on device and from the host.

    python benchmarks/placement.py --models convmodel,resnet18 --batch 64 --size 150 [--dtype bfloat16] [--json]

spec.train.data_placement='host' keeps the tiles in host memory and sends each step's batch to the
devices (flaxbench/train/host_feed.py), for tile sets that do not fit on them. For each study row
this times the same jitted training step both ways in one process, interleaved as throughput.py
times flaxbench against torch, and prints images/s of each, the ratio host / device of the
medians and the range of the single rounds' ratios. On accelerators the device epoch is one
lax.scan and the host-fed one a Python loop over steps, so the ratio includes both the copies
and the dispatch of each step. Both placements train on all local devices (spec.mesh.data=-1), as
a run does by default, so --batch must divide among them.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.throughput import (  # noqa: E402
    busy_cores, check_args, exit_if_failed, flax_timer, interleaved_times, measure_rows, timing_parser)
from flaxbench.host_memory import restart_with_huge_pages  # noqa: E402


def main() -> None:
    """Parse flags, time every row both ways, print a table or JSON lines."""
    parser = timing_parser(__doc__.splitlines()[0], "convmodel,resnet18")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    check_args(parser, args)
    load = busy_cores()

    def measure(row: str) -> dict:
        built = {placement: flax_timer(row, args.batch, args.size, args.dtype, args.steps, placement, devices=-1)
                 for placement in ("device", "host")}
        times = interleaved_times({placement: timer for placement, (timer, _) in built.items()}, args.repeats,
                                  settle=args.settle)
        img_s = {name: args.batch * args.steps / statistics.median(t) for name, t in times.items()}
        round_ratios = [t_device / t_host for t_device, t_host in zip(times["device"], times["host"])]
        return {"model": row, "device_img_s": round(img_s["device"], 1), "host_img_s": round(img_s["host"], 1),
                "ratio": round(img_s["host"] / img_s["device"], 3),
                "ratio_range": [round(min(round_ratios), 3), round(max(round_ratios), 3)],
                "device": built["device"][1]["device"], "dtype": args.dtype, "batch": args.batch, "size": args.size,
                "steps": args.steps, "rounds": args.repeats, "busy_cores_at_start": round(load, 2)}

    rows, failed = measure_rows(args.models, measure, args.json)
    if not args.json and rows:
        print(f"device: {rows[0]['device']}; batch {args.batch}, {args.size} px, {args.dtype}, "
              f"{args.steps} steps per call")
        print(f"{'model':<16}{'on device img/s':>16}{'from host img/s':>16}{'host/device':>13}{'round ratios':>15}")
        for r in rows:
            spread = f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}"
            print(f"{r['model']:<16}{r['device_img_s']:>16.1f}{r['host_img_s']:>16.1f}{r['ratio']:>13.2f}{spread:>15}")
    exit_if_failed("placement", failed)


if __name__ == "__main__":
    restart_with_huge_pages()  # as `python -m flaxbench` does
    main()
