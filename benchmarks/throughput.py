"""Training-step throughput, flaxbench vs PyTorch/torchvision, side by side in one process.

    python benchmarks/throughput.py --models convmodel,vit_p15,resnet18 --batch 64 --size 150 [--dtype bfloat16] [--json]

For each study row (spec name) it times flaxbench's real jitted epoch function (augmentation
and normalisation on device, data resident on device) and the same architecture in torch (same
batch, size, AdamW, precision; on GPU with autocast and channels_last; eager and torch.compile
where it works). After one warm-up call each, the contenders are timed interleaved, one call of
each per round, so load from elsewhere on a shared machine hits both sides of a ratio. Within a
round each timed call comes right after two untimed calls of the same contender (`--settle`), so
it is timed in the steady state of a training run rather than in the wake of the other
framework (see `interleaved_times`). Reports each contender's median over the rounds in
training images per second, the ratio of the medians, and the lowest and highest ratio of
single rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# flaxbench and torch share one GPU here, both alive while they are timed interleaved; JAX would
# otherwise reserve 75% of its memory at start and leave torch the rest.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine_load import busy_cores, warn_if_busy  # noqa: E402
from data_pipeline import Split, TileDataset  # noqa: E402
from flaxbench.spec import load_spec_file  # noqa: E402
from flaxbench.compile_cache import disable_compilation_cache  # noqa: E402
from flaxbench.errors import FlaxbenchError  # noqa: E402
from flaxbench.host_memory import restart_with_huge_pages  # noqa: E402
from flaxbench.runtime import describe_devices  # noqa: E402
from flaxbench.study import parse_study_rows  # noqa: E402
from flaxbench.train.setup import Run, build_run  # noqa: E402
from flaxbench.train.state import TrainState  # noqa: E402

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"
Timer = Callable[[], float]  # runs one timed call, returns its seconds


def random_dataset(n: int, size: int, num_classes: int = 6) -> TileDataset:
    """Random uint8 tiles: throughput does not depend on pixel values."""
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                  rng.integers(0, num_classes, n).astype(np.int32), tuple(str(i) for i in range(n)))
    classes = tuple(f"c{i}" for i in range(num_classes))
    return TileDataset(split, split, split, classes, "random", True, (size, size), ())


def compiled_benchmark_run(row: str, batch: int, size: int, dtype: str, steps: int,
                           placement: str = "device", devices: int = 1) -> tuple[Run, TrainState]:
    """Study row `row` built from scratch on `steps` batches of random tiles, its epoch compiled.

    `placement` is spec.train.data_placement: tiles on device, or batches sent from host memory.
    `devices` is spec.mesh.data: 1 by default, as the torch twins train on one device; -1 for all.
    """
    spec = load_spec_file(SPEC_DIR / f"{row}.py")
    spec.model.init = "scratch"
    spec.train.batch_size, spec.train.dtype = batch, dtype
    spec.train.data_placement = placement
    spec.mesh.data = devices
    spec.train.eval_batch_size = batch
    if spec.model.name == "vit":
        spec.model.options.image_size = size
    run = build_run(spec, dataset=random_dataset(batch * steps, size))
    state = run.initial_state()
    run.compile(("train",), state)
    return run, state


def flax_timer(row: str, batch: int, size: int, dtype: str, steps: int,
               placement: str = "device", devices: int = 1) -> tuple[Timer, dict]:
    """A timer for one call of flaxbench's jitted epoch (`steps` steps), and what was built."""
    run, state = compiled_benchmark_run(row, batch, size, dtype, steps, placement, devices)
    fn, images, labels = run.compiled["train"], run.splits["train"].images, run.train_labels
    carry = {"state": state, "calls": 0}

    def timed_call() -> float:
        carry["calls"] += 1
        start = time.perf_counter()
        carry["state"], losses, _ = fn(carry["state"], images, labels, jax.random.key(carry["calls"]))
        losses.block_until_ready()
        return time.perf_counter() - start

    timed_call()  # warm-up
    spec = run.spec
    return timed_call, {"compile_s": run.compile_time_s, "model": spec.model.name,
                        "options": spec.model.options.to_dict(), "device": describe_devices(run.mesh)}


def torch_timer(name: str, options: dict, batch: int, size: int, dtype: str, steps: int,
                compile_model: bool) -> Timer | None:
    """A timer for `steps` training steps of the torch twin; None if torch.compile fails here."""
    import torch

    from benchmarks.torch_reference import build, train_step_fn

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = build(name, 6, size, dict(options)).to(device).train()
    fmt = torch.channels_last if device == "cuda" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if compile_model:
        try:
            model = torch.compile(model)
        except Exception:
            return None
    step = train_step_fn(model, 1e-3, dtype, device)
    images = torch.rand(batch, 3, size, size, device=device).to(memory_format=fmt)
    labels = torch.randint(0, 6, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed_call() -> float:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(images, labels)
        loss.item()
        sync()
        return time.perf_counter() - start

    try:
        timed_call()  # warm-up; torch.compile compiles here and can fail here
    except Exception:
        if compile_model:
            return None
        raise
    return timed_call


def interleaved_times(timers: dict[str, Timer], repeats: int, optional: frozenset[str] = frozenset(),
                      settle: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each timer over `repeats` rounds, one timed call of each per round.

    Interleaving puts every contender under the same load at almost the same time, so a burst
    of activity from elsewhere on a shared machine slows both sides of a ratio, not one. The
    order rotates each round, so no contender always runs right after the same other one.

    Each timed call follows `settle` untimed calls of the same contender. XLA:CPU allocates a
    fresh temp buffer for every step (938 MB for DenseNet-121 at batch 16) and frees it after,
    where torch's buffers stay in malloc's heap. Back to back, XLA gets the same pages again
    at once. After a pause of a few seconds, a VM that hands free guest pages back to its host
    (free page reporting, as on this project's CPU machines) has to fault them in from the host
    again: there DenseNet-121 ran 10.0 img/s with 2.36 s of kernel time per call after a plain
    3 s sleep between calls, 15.4 img/s and 0.32 s back to back. Another framework's call is
    such a pause; the steps of a training run follow each other without one, so the settled
    call is the one to time. One settling call is not enough there: after two torch calls,
    DenseNet-121's next three calls ran 10.0-10.7, 10.8-12.2 and 15.9-16.5 img/s (kernel time
    1.8-2.4, 1.3-1.7 and 0.23-0.28 s; four rounds), hence two by default.

    A contender named in `optional` that raises is dropped (with a line on stderr) and the
    others go on; any other contender's error propagates.
    """
    names = list(timers)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            try:
                for _ in range(settle):
                    timers[name]()
                times[name].append(timers[name]())
            except Exception as error:
                if name not in optional:
                    raise
                print(f"{name}: dropped after failing in round {round_index + 1}: {type(error).__name__}",
                      file=sys.stderr, flush=True)
                names.remove(name)
                del times[name]
    return times


def count(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject unknown study rows before anything is built or timed."""
    try:
        args.models = parse_study_rows(args.models, "--models")
    except FlaxbenchError as error:
        parser.error(str(error))


def timing_parser(description: str, models: str) -> argparse.ArgumentParser:
    """The flags of the interleaved-timing scripts (throughput.py, placement.py), `models` the default rows."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", default=models)
    parser.add_argument("--batch", type=count, default=64)
    parser.add_argument("--size", type=count, default=150)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=count, default=5, help="training steps per timed call")
    parser.add_argument("--repeats", type=count, default=5,
                        help="timed rounds after one warm-up call each; a round times one call of every contender")
    parser.add_argument("--settle", type=int, default=2, choices=range(0, 10), metavar="N",
                        help="untimed calls of a contender right before each of its timed calls (0-9, default 2)")
    return parser


def measure_rows(models: list[str], measure: Callable[[str], dict], as_json: bool,
                 hint: str = "") -> tuple[list[dict], list[str]]:
    """`measure(row)` for every study row in turn, and the rows that failed.

    A row that raises is named on stderr (with `hint`, if given) and left out: one failing row must
    not lose the others' numbers. With `as_json`, each row is printed as one JSON line as it ends.
    """
    rows, failed = [], []
    for row in models:
        try:
            rows.append(measure(row))
        except Exception as error:
            first_line = str(error).splitlines()[0] if str(error) else ""
            print(f"{row}: failed: {type(error).__name__}: {first_line}{hint}", file=sys.stderr, flush=True)
            failed.append(row)
            continue
        if as_json:
            print(json.dumps(rows[-1]), flush=True)
    return rows, failed


def exit_if_failed(script: str, failed: list[str]) -> None:
    """Exit with status 1 naming the failed rows, if any."""
    if failed:
        sys.exit(f"{script}: {len(failed)} model(s) failed: {', '.join(failed)}")


def main() -> None:
    """Parse flags, time every model, print a table or JSON lines."""
    parser = timing_parser(__doc__.splitlines()[0], "convmodel,vit_p15,resnet18")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    check_args(parser, args)
    import torch

    torch_device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    torch.backends.cudnn.benchmark = True  # let cuDNN autotune its convolutions, as XLA does
    # Measured here: with a test suite holding both cores, torch's 2-thread CPU steps slowed
    # about 25x and XLA's far less, so a ConvModel ratio read 10.4 (0.97 on 1 torch thread).
    consequence = ("on CPU, torch's threads slow down far more than XLA's under load, so the ratios lean toward "
                   "flaxbench")
    on_cpu = torch_device.startswith("cpu")
    load = busy_cores()
    if on_cpu:
        warn_if_busy(load, "at the start", consequence)

    def measure(row: str) -> dict:
        flax_call, built = flax_timer(row, args.batch, args.size, args.dtype, args.steps)
        timers = {"jax": flax_call, "torch": torch_timer(built["model"], built["options"], args.batch, args.size,
                                                         args.dtype, args.steps, False)}
        compiled = None if args.no_compile else torch_timer(
            built["model"], built["options"], args.batch, args.size, args.dtype, args.steps, True)
        if compiled:
            timers["torch_compile"] = compiled
        times = interleaved_times(timers, args.repeats, optional=frozenset({"torch_compile"}), settle=args.settle)
        img_s = {name: args.batch * args.steps / statistics.median(t) for name, t in times.items()}
        round_ratios = [t_torch / t_jax for t_jax, t_torch in zip(times["jax"], times["torch"])]
        best_torch = max(img_s["torch"], img_s.get("torch_compile", 0.0))
        load_after = busy_cores()
        if on_cpu:
            warn_if_busy(load_after, f"right after timing {row}", consequence)
        return {"model": row, "jax_img_s": round(img_s["jax"], 1), "torch_img_s": round(img_s["torch"], 1),
                "torch_compile_img_s": round(img_s["torch_compile"], 1) if "torch_compile" in img_s else None,
                "ratio": round(img_s["jax"] / img_s["torch"], 3),
                "ratio_range": [round(min(round_ratios), 3), round(max(round_ratios), 3)],
                "ratio_vs_best_torch": round(img_s["jax"] / best_torch, 3),
                "jax_compile_s": round(built["compile_s"], 2), "device": built["device"],
                "torch_device": torch_device, "dtype": args.dtype, "batch": args.batch, "size": args.size,
                "steps": args.steps, "repeats": args.repeats, "rounds": args.repeats, "settle": args.settle,
                "busy_cores_at_start": round(load, 2), "busy_cores_after": round(load_after, 2)}

    rows, failed = measure_rows(args.models, measure, args.json, hint=" (this script's tile size is --size)")
    if not args.json and rows:
        print(f"device: {rows[0]['device']}; torch: {torch_device}; batch {args.batch}, {args.size} px, {args.dtype}")
        print(f"{'model':<16}{'flaxbench img/s':>16}{'torch img/s':>13}{'compile img/s':>15}{'ratio':>8}"
              f"{'round ratios':>15}{'jax compile s':>15}")
        for r in rows:
            comp = f"{r['torch_compile_img_s']:.1f}" if r["torch_compile_img_s"] else "n/a"
            spread = f"{r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}"
            print(f"{r['model']:<16}{r['jax_img_s']:>16.1f}{r['torch_img_s']:>13.1f}{comp:>15}{r['ratio']:>8.2f}"
                  f"{spread:>15}{r['jax_compile_s']:>15.1f}")
    exit_if_failed("throughput", failed)


if __name__ == "__main__":
    restart_with_huge_pages()  # as `python -m flaxbench` does
    disable_compilation_cache()  # compile times are compiles, not loads from a cache
    main()
