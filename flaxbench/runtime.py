"""Devices, the data-parallel mesh, and XLA switches."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxbench.errors import FlaxbenchError, SpecError
from flaxbench.host_cpu import describe_cpu
from flaxbench.xla_flags import add_xla_flag, backends_started

# The mesh axis a batch is split over (the CPU layers' batch loops read it too: models/local_batch.py).
DATA_AXIS = "data"


def enable_determinism(enabled: bool) -> None:
    """Turn on XLA's deterministic GPU ops (takes effect if no GPU computation ran before)."""
    if enabled:
        if backends_started() and "--xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
            logging.warning("spec.train.deterministic: JAX already started; set XLA_FLAGS="
                            "--xla_gpu_deterministic_ops=true before starting Python to be sure")
        add_xla_flag("--xla_gpu_deterministic_ops", "true")
        os.environ.setdefault("TF_CUDNN_DETERMINISTIC", "1")


DISTRIBUTED_HELP = ("set JAX_COORDINATOR_ADDRESS=HOST:PORT (a free port on process 0's host), JAX_NUM_PROCESSES=N "
                    "and JAX_PROCESS_ID=0..N-1 on every process, or run under SLURM (README, 'Several GPUs and hosts')")


def initialize_distributed() -> None:
    """Join a multi-host run: SLURM is detected by JAX; elsewhere the JAX_* variables are read.

    JAX reads JAX_COORDINATOR_ADDRESS itself; JAX_NUM_PROCESSES and JAX_PROCESS_ID are passed on. Says on stderr
    what it waits for (JAX waits minutes for the others without a word); a mistake is a FlaxbenchError.
    """
    kwargs = {}
    for variable, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if variable in os.environ:
            try:
                kwargs[key] = int(os.environ[variable])
            except ValueError:
                raise FlaxbenchError(f"--distributed: {variable}={os.environ[variable]!r} is not a whole number; "
                                     f"{DISTRIBUTED_HELP}") from None
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address is None and "SLURM_JOB_ID" not in os.environ:
        raise FlaxbenchError(f"--distributed: JAX_COORDINATOR_ADDRESS is not set and this is no SLURM job; "
                             f"{DISTRIBUTED_HELP}")
    joining = (f"process {kwargs['process_id']} of {kwargs['num_processes']}" if len(kwargs) == 2
               else "the run's processes")
    print(f"--distributed: joining {joining} at {address or 'the coordinator SLURM names'} (JAX waits up to 5 "
          "minutes for every process to start)", file=sys.stderr, flush=True)
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FlaxbenchError(f"--distributed at {address or 'SLURM'}: {reason}; {DISTRIBUTED_HELP}") from None


def make_mesh(cfg: ml_collections.ConfigDict, batch_size: int) -> Mesh:
    """A 1-D `data` mesh over `cfg.data` devices (-1: all), checking the batch divides."""
    devices = jax.devices()
    count = len(devices) if cfg.data in (-1, None) else int(cfg.data)
    if jax.process_count() > 1 and count != len(devices):
        raise SpecError(
            f"spec.mesh.data={cfg.data}: a run of {jax.process_count()} processes trains on every device of each, "
            f"{len(devices)} here; set spec.mesh.data=-1 (or {len(devices)}), or start fewer processes"
        )
    if not 1 <= count <= len(devices):
        raise SpecError(
            f"spec.mesh.data={cfg.data} must be -1 (all devices) or a device count from 1 to {len(devices)}, "
            f"the devices available here"
        )
    if batch_size % count:
        raise SpecError(
            f"spec.train.batch_size={batch_size} is not divisible by the {count} devices of the data "
            f"mesh; use a multiple of {count} or set spec.mesh.data"
        )
    return Mesh(np.array(devices[:count]), (DATA_AXIS,))


def global_mesh() -> Mesh:
    """A 1-D `data` mesh over every process's devices, as `evaluate` splits its batches."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def local_mesh() -> Mesh:
    """A 1-D `data` mesh over this process's devices, as inference splits its batches."""
    return Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits a batch's rows over the mesh's `data` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def describe_devices(mesh: Mesh) -> str:
    """e.g. 'gpu: NVIDIA H100 80GB HBM3 x1' or 'cpu: AMD EPYC 7B13 (2 cores) x1'."""
    first = mesh.devices.flat[0]
    return f"{first.platform}: {device_model(first)} x{mesh.devices.size}"


def device_model(device: jax.Device) -> str:
    """What `device` is, e.g. 'NVIDIA H100 80GB HBM3'; for a CPU (XLA calls every one 'cpu'), `describe_cpu()`."""
    # timings from two CPU machines are no more alike than from two GPUs
    return describe_cpu() if device.platform == "cpu" else getattr(device, "device_kind", device.platform)


# The libraries whose versions change a run's numbers or speed, as results.json records them.
VERSIONED_PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt",
                      "flax", "optax", "orbax-checkpoint", "numpy")


def library_versions() -> dict[str, str]:
    """Python's and VERSIONED_PACKAGES' versions (a package not installed is left out)."""
    import importlib.metadata
    import platform

    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def flaxbench_version() -> str:
    """flaxbench's version, with the git commit of its checkout where it runs from one: '0.1.0+g1a2b3c4d5e6f'
    (and '.dirty' where tracked files differ from that commit), so that a run names the code that made it."""
    import subprocess

    from flaxbench import __version__

    checkout = Path(__file__).resolve().parent.parent
    git = ["git", "-c", "safe.directory=*", "-C", str(checkout)]  # a checkout another user owns (a container's mount)
    try:
        top, commit = subprocess.run([*git, "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
                                     capture_output=True, text=True, timeout=10, check=True).stdout.split()
        if Path(top).resolve() != checkout:  # installed inside another project's repository
            return __version__
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", "flaxbench",
                                  "data_pipeline"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, ValueError, subprocess.SubprocessError):  # no git, or not a checkout (an installed wheel)
        return __version__
    return f"{__version__}+g{commit}" + (".dirty" if changed.strip() else "")


def to_device(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array as a global jax.Array with `sharding` (every process passes the same data)."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(array: jax.Array) -> np.ndarray:
    """A (possibly multi-process) jax.Array gathered to a numpy array on this host."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(jax.device_get(array))


def is_main_process() -> bool:
    """Whether this process writes shared outputs (results, reports)."""
    return jax.process_index() == 0


def sync_processes(name: str) -> None:
    """Wait until every process of a multi-process run has reached the point called `name`."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def check_processes_agree(settings: dict[str, Any]) -> None:
    """Fail on every process of a multi-process run, naming the first difference, unless all have these `settings`
    (JSON values: the spec, the flags): processes of other specs would train different models in one mesh, or wait
    for each other for ever."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    from flaxbench.workdir import first_difference

    mine = json.loads(json.dumps(settings, sort_keys=True))
    text = json.dumps(mine, sort_keys=True).encode()
    sizes = np.asarray(multihost_utils.process_allgather(np.array([len(text)], np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:len(text)] = np.frombuffer(text, np.uint8)
    every = np.asarray(multihost_utils.process_allgather(padded))
    for process, (row, size) in enumerate(zip(every, sizes)):
        found = first_difference(json.loads(bytes(row[:size]).decode()), mine)
        if found:
            key, theirs, ours = found
            raise FlaxbenchError(
                f"the processes of this run differ: process {process} has {key}={theirs!r}, process "
                f"{jax.process_index()} has {ours!r}; start every process with the same command, spec and "
                "flaxbench checkout")


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any process; every process must call this at the same point."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))
