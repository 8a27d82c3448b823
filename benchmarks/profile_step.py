"""Where a training step's time goes: flaxbench's compiled ops by time, and torch's for the same step.

    python benchmarks/profile_step.py --model vit_p10 --batch 16 --size 150 [--top 30] [--torch]

Traces one call of the real jitted epoch (`--steps` steps on device-resident random tiles, after
a warm-up call) with `jax.profiler`, matches every traced op to its instruction in the
optimized HLO, and prints ops grouped by kind, output shape and the JAX operation they came
from, in ms per step. `--torch` adds torch.profiler's table for the same architecture's `--steps`
steps, its times totals over them, under a line giving the torch step's wall ms per step.
Checked on XLA:CPU. There, work that XLA hands to a thread pool and does not wait for in the op
(Eigen convolutions) is missing from the op times, so compare their sum with the wall time.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.throughput import compiled_benchmark_run, count  # noqa: E402
from flaxbench.errors import FlaxbenchError  # noqa: E402
from flaxbench.host_memory import restart_with_huge_pages  # noqa: E402
from flaxbench.runtime import describe_devices  # noqa: E402
from flaxbench.study import parse_study_rows  # noqa: E402

_INSTRUCTION = re.compile(r"\s*(?:ROOT\s+)?%?([\w.\-]+) = (\S+) ([\w\-]+)\(")
_SOURCE_OP = re.compile(r'op_name="([^"]*)"')


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str, str]]:
    """Instruction name -> (output shape, opcode, JAX operation it came from) for optimized HLO text."""
    table = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            source = _SOURCE_OP.search(line)
            op = re.sub(r"^jit\([^)]*\)/", "", source.group(1)) if source else ""
            table[match.group(1)] = (match.group(2), match.group(3), op)
    return table


def op_events(trace_dir: Path, module: str) -> list[dict]:
    """Complete ('X') events of HLO module `module` in the Perfetto trace written under `trace_dir`.

    Events of other programs (the epoch's batch plan, random seeds) can share instruction names
    with the step's, so they are told apart by the module each event names.
    """
    files = sorted(trace_dir.glob("**/perfetto_trace.json.gz"), key=lambda f: f.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}; this JAX build wrote none")
    events = json.load(gzip.open(files[-1]))  # the newest, if --trace-dir holds earlier traces
    events = events["traceEvents"] if isinstance(events, dict) else events
    return [e for e in events if e.get("ph") == "X" and "dur" in e
            and e.get("args", {}).get("hlo_module", module) == module]


def group_op_times(events: list[dict], instructions: dict[str, tuple[str, str, str]],
                   steps: int) -> tuple[list[dict], float]:
    """Traced HLO ops grouped by (kind, shape, JAX op), busiest first, and their total, in ms per step."""
    time_us, calls = collections.Counter(), collections.Counter()
    for event in events:
        if event["name"] not in instructions:
            continue  # runtime and Python events, not ops
        shape, opcode, source = instructions[event["name"]]
        kind = opcode if opcode != "fusion" else re.sub(r"\.\d+$", "", event["name"])
        key = (kind, shape, source)
        time_us[key] += event["dur"]
        calls[key] += 1
    total_ms = sum(time_us.values()) / 1000 / steps
    rows = [{"kind": k[0], "shape": k[1], "source": k[2], "ms_per_step": t / 1000 / steps,
             "calls_per_step": calls[k] / steps} for k, t in time_us.most_common()]
    return rows, total_ms


def profile_flaxbench(row: str, batch: int, size: int, dtype: str, steps: int, trace_dir: Path) -> dict:
    """Wall ms per step of an untraced call, then one traced call's ops grouped by `group_op_times`."""
    run, state = compiled_benchmark_run(row, batch, size, dtype, steps)
    epoch, images, labels = run.compiled["train"], run.splits["train"].images, run.train_labels
    compiled_step = getattr(epoch, "step", epoch)  # the step of a stepped (CPU) epoch, else the scanned epoch
    for seed in range(2):  # warm-up, then one timed call
        start = time.perf_counter()
        state, losses, _ = epoch(state, images, labels, jax.random.key(seed))
        losses.block_until_ready()
    wall_ms = (time.perf_counter() - start) * 1000 / steps
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        state, losses, _ = epoch(state, images, labels, jax.random.key(2))
        losses.block_until_ready()
    hlo_text = compiled_step.as_text()
    module = re.search(r"^HloModule (\S+?),?\s", hlo_text, re.M).group(1)
    rows, op_ms = group_op_times(op_events(trace_dir, module), hlo_instructions(hlo_text), steps)
    return {"model": row, "wall_ms_per_step": wall_ms, "op_ms_per_step": op_ms, "ops": rows,
            "device": describe_devices(run.mesh), "name": run.spec.model.name,
            "options": run.spec.model.options.to_dict()}


def torch_profile_table(name: str, options: dict, batch: int, size: int, dtype: str, steps: int, top: int) -> str:
    """torch.profiler's table (self time, busiest first) for `steps` steps of the torch twin, under a line saying so.

    The table's times are totals over the `steps` steps, as torch.profiler sums them; the line above it
    gives the profiled wall time per step, to compare with flaxbench's ms per step.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.torch_reference import build, train_step_fn

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = build(name, 6, size, dict(options)).to(device).train()
    step = train_step_fn(model, 1e-3, dtype, device)
    images = torch.rand(batch, 3, size, size, device=device)
    labels = torch.randint(0, 6, (batch,), device=device)
    step(images, labels).item()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(images, labels)
        loss.item()
        wall_ms = (time.perf_counter() - start) * 1000 / steps
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=50)
    steps_text = f"{steps} step" + ("" if steps == 1 else "s")
    return (f"torch twin on {device}: {wall_ms:.1f} ms per step profiled; the table below is torch.profiler's, "
            f"its times and calls totals over all {steps_text}, not per step\n{table}")


def check_trace_dir(trace_dir: Path) -> str | None:
    """Why `trace_dir` cannot hold the trace (it is created if missing), or None if it can."""
    if trace_dir.exists() and not trace_dir.is_dir():
        return "it is a file, not a folder"
    try:
        trace_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=trace_dir):
            pass
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


def main() -> None:
    """Parse flags, profile one study row, print the tables (or one JSON object with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_p15", help="study row (spec name), e.g. vit_p10 or resnet18")
    parser.add_argument("--batch", type=count, default=16)
    parser.add_argument("--size", type=count, default=150)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=count, default=2, help="training steps in the traced call")
    parser.add_argument("--top", type=count, default=30, help="rows to print")
    parser.add_argument("--torch", action="store_true", help="also profile the torch twin's step")
    parser.add_argument("--trace-dir", type=Path, help="keep the raw trace here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        (args.model,) = parse_study_rows(args.model, "--model")
    except (FlaxbenchError, ValueError) as error:
        parser.error(str(error) if isinstance(error, FlaxbenchError) else "--model takes one study row")
    if args.json and args.torch:
        parser.error("--json prints flaxbench's ops only; drop --torch or --json")
    if args.trace_dir and (problem := check_trace_dir(args.trace_dir)):
        parser.error(f"--trace-dir {args.trace_dir}: cannot create or write a folder there ({problem}); "
                     "give a writable folder")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            result = profile_flaxbench(args.model, args.batch, args.size, args.dtype, args.steps,
                                       args.trace_dir or Path(scratch))
    except FlaxbenchError as error:  # e.g. a tile size the model refuses: one line, as throughput.py gives
        sys.exit(f"profile_step: {args.model} failed: {type(error).__name__}: {str(error).splitlines()[0]} "
                 "(this script's tile size is --size)")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k not in ("name", "options")}))
    else:
        print(f"{args.model} on {result['device']}, batch {args.batch}, {args.size} px, "
              f"{args.dtype}: {result['wall_ms_per_step']:.1f} ms per step untraced, "
              f"{result['op_ms_per_step']:.1f} ms of traced ops per step")
        print(f"{'ms/step':>9}{'%ops':>6}{'calls':>7}  {'kind':<28}{'shape':<30}source")
        for row in result["ops"][: args.top]:
            share = 100 * row["ms_per_step"] / result["op_ms_per_step"]
            print(f"{row['ms_per_step']:>9.1f}{share:>6.1f}{row['calls_per_step']:>7.0f}  {row['kind'][:27]:<28}"
                  f"{row['shape'][:29]:<30}{row['source'][:90]}")
    if args.torch:
        print(torch_profile_table(result["name"], result["options"], args.batch, args.size, args.dtype,
                                  args.steps, args.top))


if __name__ == "__main__":
    restart_with_huge_pages()  # as `python -m flaxbench` does
    main()
