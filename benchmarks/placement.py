"""What feeding batches from host memory costs: flaxbench's epoch with the tiles on device and from the host.

    python benchmarks/placement.py --models convmodel,resnet18 --batch 64 --size 150 [--dtype bfloat16] [--json]

spec.train.data_placement='host' keeps the tiles in host memory and sends each step's batch to the
devices (flaxbench/train/host_feed.py), for tile sets that do not fit on them. For each study row
this times the same jitted training step both ways in one process, interleaved as throughput.py
times flaxbench against torch, and prints images/s of each, the ratio host / device of the
medians and the range of the single rounds' ratios. On accelerators the device epoch is one
lax.scan and the host-fed one a Python loop over steps, so the ratio includes both the copies
and the dispatch of each step.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.throughput import busy_cores, check_args, flax_timer, interleaved_times, timing_parser  # noqa: E402
from flaxbench.host_memory import restart_with_huge_pages  # noqa: E402
from flaxbench.runtime import device_model  # noqa: E402


def main() -> None:
    """Parse flags, time every row both ways, print a table or JSON lines."""
    import jax

    parser = timing_parser(__doc__.splitlines()[0], "convmodel,resnet18")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    check_args(parser, args)
    device = f"{jax.devices()[0].platform}: {device_model(jax.devices()[0])} x{len(jax.devices())}"
    load = busy_cores()
    rows, failed = [], []
    for row in args.models:
        try:
            timers = {placement: flax_timer(row, args.batch, args.size, args.dtype, args.steps, placement)[0]
                      for placement in ("device", "host")}
            times = interleaved_times(timers, args.repeats, settle=args.settle)
        except Exception as error:  # one failing row must not lose the others' numbers
            print(f"{row}: failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                  file=sys.stderr, flush=True)
            failed.append(row)
            continue
        img_s = {name: args.batch * args.steps / statistics.median(t) for name, t in times.items()}
        round_ratios = [t_device / t_host for t_device, t_host in zip(times["device"], times["host"])]
        rows.append({"model": row, "device_img_s": round(img_s["device"], 1), "host_img_s": round(img_s["host"], 1),
                     "ratio": round(img_s["host"] / img_s["device"], 3),
                     "ratio_range": [round(min(round_ratios), 3), round(max(round_ratios), 3)],
                     "device": device, "dtype": args.dtype, "batch": args.batch, "size": args.size,
                     "steps": args.steps, "rounds": args.repeats, "busy_cores_at_start": round(load, 2)})
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
    if not args.json:
        print(f"device: {device}; batch {args.batch}, {args.size} px, {args.dtype}, {args.steps} steps per call")
        print(f"{'model':<16}{'on device img/s':>16}{'from host img/s':>16}{'host/device':>13}{'round ratios':>15}")
        for r in rows:
            spread = f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}"
            print(f"{r['model']:<16}{r['device_img_s']:>16.1f}{r['host_img_s']:>16.1f}{r['ratio']:>13.2f}{spread:>15}")
    if failed:
        sys.exit(f"placement: {len(failed)} model(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    restart_with_huge_pages()  # as `python -m flaxbench` does
    main()
