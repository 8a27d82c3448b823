"""Devices, the data-parallel mesh, and XLA switches."""

from __future__ import annotations

import logging
import os
import re

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxbench.errors import SpecError


def enable_determinism(enabled: bool) -> None:
    """Turn on XLA's deterministic GPU ops (takes effect if no GPU computation ran before)."""
    if enabled:
        if _backends_started() and "--xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
            logging.warning("spec.train.deterministic: JAX already started; set XLA_FLAGS="
                            "--xla_gpu_deterministic_ops=true before starting Python to be sure")
        _add_xla_flag("--xla_gpu_deterministic_ops", "true")
        os.environ.setdefault("TF_CUDNN_DETERMINISTIC", "1")


# XLA:CPU in jaxlib 0.10 hands convolutions to YNNPACK, which ran them on one thread here while
# XLA's own (Eigen) convolutions use every core: on this project's 2-core CPU a 3x3 convolution's
# forward took 16 vs 9 ms and its weight gradient 55 vs 17 ms, and a ResNet-18 training step
# went from 14 to 22 img/s. Dots, reductions and elementwise ops stay with YNNPACK.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def use_threaded_cpu_convolutions() -> None:
    """Keep XLA:CPU convolutions off YNNPACK (single-threaded) unless XLA_FLAGS already chooses.

    Runs on `import flaxbench`; it must precede the first JAX computation of the process. To give
    convolutions back to YNNPACK, start with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
    +individual_convolution.
    """
    import jaxlib

    if tuple(map(int, re.match(r"(\d+)\.(\d+)", jaxlib.__version__).groups())) < (0, 10):
        return  # older XLA builds may not know the flag, and an unknown flag aborts the process
    if _YNN_FLAG in os.environ.get("XLA_FLAGS", ""):
        return
    if _backends_started():  # XLA read its flags when the first backend started
        if jax.default_backend() == "cpu":
            logging.warning("flaxbench was imported after JAX started; XLA:CPU convolutions stay on "
                            "one thread. Import flaxbench first, or set XLA_FLAGS=%s=-individual_convolution",
                            _YNN_FLAG)
        return
    _add_xla_flag(_YNN_FLAG, "-individual_convolution")


def _backends_started() -> bool:
    from jax._src import xla_bridge  # no public API tells whether backends started

    return getattr(xla_bridge, "backends_are_initialized", lambda: False)()


def _add_xla_flag(name: str, value: str) -> None:
    """Append `name=value` to XLA_FLAGS unless the flag is already set there."""
    flags = os.environ.get("XLA_FLAGS", "")
    if name not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {name}={value}".strip()


def initialize_distributed() -> None:
    """Join a multi-host run: SLURM is detected by JAX; elsewhere the JAX_* variables are read.

    JAX reads JAX_COORDINATOR_ADDRESS itself; JAX_NUM_PROCESSES and JAX_PROCESS_ID are passed on.
    """
    kwargs = {}
    if "JAX_NUM_PROCESSES" in os.environ:
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in os.environ:
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)


def make_mesh(cfg: ml_collections.ConfigDict, batch_size: int) -> Mesh:
    """A 1-D `data` mesh over `cfg.data` devices (-1: all), checking the batch divides."""
    devices = jax.devices()
    count = len(devices) if cfg.data in (-1, None) else int(cfg.data)
    if not 1 <= count <= len(devices):
        raise SpecError(f"spec.mesh.data={cfg.data} but {len(devices)} devices are available")
    if batch_size % count:
        raise SpecError(
            f"spec.train.batch_size={batch_size} is not divisible by the {count} devices of the data "
            f"mesh; use a multiple of {count} or set spec.mesh.data"
        )
    return Mesh(np.array(devices[:count]), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def describe_devices(mesh: Mesh) -> str:
    """e.g. 'gpu: NVIDIA H100 80GB HBM3 x1' or 'cpu: cpu x8'."""
    first = mesh.devices.flat[0]
    return f"{first.platform}: {getattr(first, 'device_kind', first.platform)} x{mesh.devices.size}"


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
