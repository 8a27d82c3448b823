"""Where `predict` spends its time: decoding tile files, the model's forward pass, and both streamed together.

    python benchmarks/predict_stream.py --models convmodel,resnet50 --tiles 2048 --size 150 [--format png] [--json]

`predict` and `evaluate --external` decode tiles on one thread per core while the devices classify
the chunk before (flaxbench/inference.py). For each study row (random weights: the speed does not
depend on them) this writes `--tiles` synthetic tissue tiles as files once, then times, `--repeats`
times each, interleaved: decoding them alone (tiles/s), the forward pass alone over tiles already in
memory, and the stream of both as predict runs it. With the two overlapped, the stream runs at the
slower of the two (overlap 1.0); run one after the other, at 1 / (1/decode + 1/model). On a CPU
both share the cores, so expect the latter; on a GPU, the former.
"""

from __future__ import annotations

import argparse
import collections
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ml_collections  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.throughput import SPEC_DIR, busy_cores, check_args, count, exit_if_failed, measure_rows  # noqa: E402
from data_pipeline.sources.folder_source import decode_tiles, open_class_folders  # noqa: E402
from data_pipeline.sources.synthetic import synthetic_class_tiles  # noqa: E402
from flaxbench.errors import FlaxbenchError  # noqa: E402
from flaxbench.host_memory import restart_with_huge_pages  # noqa: E402
from flaxbench.inference import TrainedRun  # noqa: E402
from flaxbench.runtime import describe_devices, local_mesh  # noqa: E402
from flaxbench.spec import load_spec_file  # noqa: E402
from flaxbench.train.setup import check_model_builds, init_model  # noqa: E402
from flaxbench.train.state import TrainState, split_model  # noqa: E402

CLASSES = ("tumor", "stroma", "lympho")
FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF"}
SAVE_OPTIONS = {"tif": {"compression": "packbits"}}  # as Kather 2016's tiles are stored


def write_tiles(folder: Path, count_: int, size: int, suffix: str) -> None:
    """`count_` synthetic tissue tiles of `size` px as files in class folders of `folder`."""
    for index, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        share = count_ // len(CLASSES) + (index < count_ % len(CLASSES))
        for k, tile in enumerate(synthetic_class_tiles(name, share, size)):
            buffer = io.BytesIO()
            Image.fromarray(tile).save(buffer, FORMATS[suffix], **SAVE_OPTIONS.get(suffix, {}))
            (folder / name / f"{k:06d}.{suffix}").write_bytes(buffer.getvalue())


def row_spec(row: str, size: int, dtype: str) -> ml_collections.ConfigDict:
    """Study row `row`'s spec, set for random weights on tiles of `size` px."""
    spec = load_spec_file(SPEC_DIR / f"{row}.py")
    spec.model.init, spec.train.dtype = "scratch", dtype
    if spec.model.name == "vit":
        spec.model.options.image_size = size
    return spec


def size_problem(rows: list[str], size: int) -> str | None:
    """Why a row cannot take tiles of `size` px, or None: checked before any tile is written."""
    for row in rows:
        try:
            check_model_builds(row_spec(row, size, "float32"), size)
        except FlaxbenchError as error:
            return f"{row}: {str(error).splitlines()[0]}"
    return None


def random_run(row: str, size: int, dtype: str) -> TrainedRun:
    """Study row `row` with random weights, as `load_trained_run` would return a trained one."""
    spec = row_spec(row, size, dtype)
    parts = split_model(init_model(spec, CLASSES, size))
    return TrainedRun(Path("."), spec, list(CLASSES), size, None, True, "random", 0,
                      TrainState(parts.params, parts.model_state, None), parts)


def time_contenders(folder: Path, run: TrainedRun, batch: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of each contender per round: decoding alone, the model alone, and the stream of both."""
    with open_class_folders(str(folder), None) as source:
        def decoded():
            return decode_tiles(source.tiles, run.image_size, None, False, [], collections.Counter())

        in_memory = [(tile.id, image) for tile, image in decoded()]

        def drain(chunks) -> None:
            for _ in chunks:
                pass

        contenders = {
            "decode": lambda: drain(decoded()),
            "model": lambda: drain(run.stream_logits(in_memory, "random tiles", batch_size=batch)),
            "stream": lambda: drain(run.stream_logits(decoded(), "random tiles", batch_size=batch)),
        }
        contenders["model"]()  # compiles the forward pass
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeats):
            for name, contender in contenders.items():
                start = time.perf_counter()
                contender()
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    """Parse flags, time every row's three contenders, print a table or JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="convmodel,resnet50")
    parser.add_argument("--tiles", type=count, default=2048)
    parser.add_argument("--size", type=count, default=150)
    parser.add_argument("--batch", type=count, default=64)
    parser.add_argument("--format", default="png", choices=sorted(FORMATS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=count, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    check_args(parser, args)
    if args.tiles < len(CLASSES):
        parser.error(f"--tiles {args.tiles} leaves a class folder empty; give at least {len(CLASSES)}, one tile for "
                     f"each of {', '.join(CLASSES)}")
    if problem := size_problem(args.models, args.size):
        parser.error(f"--size {args.size} does not suit a row ({problem}); give another --size")
    device = describe_devices(local_mesh())
    load = busy_cores()
    with tempfile.TemporaryDirectory(prefix="predict_stream_") as tmp:
        write_tiles(Path(tmp), args.tiles, args.size, args.format)
        tiles = sum(1 for _ in Path(tmp).rglob(f"*.{args.format}"))

        def measure(row: str) -> dict:
            times = time_contenders(Path(tmp), random_run(row, args.size, args.dtype), args.batch, args.repeats)
            rate = {name: tiles / statistics.median(t) for name, t in times.items()}
            serial = 1 / (1 / rate["decode"] + 1 / rate["model"])
            return {"model": row, "decode_tiles_s": round(rate["decode"], 1),
                    "model_tiles_s": round(rate["model"], 1), "stream_tiles_s": round(rate["stream"], 1),
                    "overlap": round(rate["stream"] / min(rate["decode"], rate["model"]), 3),
                    "stream_over_serial": round(rate["stream"] / serial, 3),
                    "tiles": tiles, "format": args.format, "size": args.size, "batch": args.batch,
                    "dtype": args.dtype, "device": device, "rounds": args.repeats,
                    "busy_cores_at_start": round(load, 2)}

        rows, failed = measure_rows(args.models, measure, args.json)
    if not args.json and rows:
        print(f"device: {device}; {tiles} {args.format} tiles of {args.size} px, batch {args.batch}, {args.dtype}")
        print(f"{'model':<16}{'decode/s':>10}{'model/s':>10}{'stream/s':>10}{'overlap':>9}{'vs serial':>11}")
        for r in rows:
            print(f"{r['model']:<16}{r['decode_tiles_s']:>10.0f}{r['model_tiles_s']:>10.0f}{r['stream_tiles_s']:>10.0f}"
                  f"{r['overlap']:>9.2f}{r['stream_over_serial']:>11.2f}")
    exit_if_failed("predict_stream", failed)


if __name__ == "__main__":
    restart_with_huge_pages()  # as `python -m flaxbench` does
    main()
