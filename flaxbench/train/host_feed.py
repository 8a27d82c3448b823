"""Tiles kept in host memory and sent to the devices batch by batch, for tile sets that do not fit on them.

By default every split is copied to every device once (`spec.train.data_placement`): the fastest
way, and the one the study's numbers come from. A large tile set (NCT-CRC-HE-100K at 224 px is
15 GB of uint8) does not fit beside a model on many GPUs, and on a CPU a device copy would double
the host memory it needs (loaded tiles are aligned so that CPU devices share them instead). Fed
from the host, each step's batch is gathered in numpy, in the same order and with the same
per-step keys as on device, so a run trains to the same numbers either way.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from data_pipeline.sources.tiles import aligned_empty
from flaxbench.errors import SpecError
from flaxbench.runtime import any_process, batch_sharding, to_device

PLACEMENTS = ("auto", "device", "host")
# 'auto' keeps the tiles on device while they need at most this share of the smallest device's
# memory; the rest is left to the model, its activations and the optimizer state.
DEVICE_SHARE = 0.5
IN_FLIGHT = 2  # batches sent ahead of the step that is running; more would only hold device memory
ALIGNMENT = 64  # bytes: XLA's CPU client shares a host array's memory from this alignment on (tiles.aligned_empty)


def check_placement(value: Any) -> str:
    """spec.train.data_placement as one of PLACEMENTS (None reads as 'auto'), or a SpecError."""
    value = "auto" if value is None else value
    if value not in PLACEMENTS:
        raise SpecError(f"spec.train.data_placement={value!r} is unknown; use 'auto', 'device' or 'host'")
    return value


def available_host_bytes() -> int | None:
    """Memory the kernel could give this process now (MemAvailable), or None where it does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_memory_bytes(devices: Sequence[jax.Device]) -> int | None:
    """The smallest memory limit among `devices`, or None if they do not report one (CPU)."""
    limits = []
    for device in devices:
        try:
            stats = device.memory_stats()
        except Exception:  # not every backend implements it
            stats = None
        if stats and stats.get("bytes_limit"):
            limits.append(int(stats["bytes_limit"]))
    return min(limits) if limits else None


def choose_placement(requested: str, images: Sequence[np.ndarray], mesh: Mesh) -> tuple[str, str | None]:
    """('device' or 'host', why 'auto' chose the host or None) for the splits' tile arrays `images`.

    On accelerators every device holds a copy of the tiles, so they must fit in DEVICE_SHARE of
    the smallest one. On CPU a device copy is a second copy in host memory, so it must fit in what
    the host has left; an array that a CPU device takes without copying costs nothing. In a
    multi-process run, every process must call this.
    """
    if requested != "auto":
        return requested, None
    reason = _why_not_on_device(images, [d for d in mesh.devices.flat if d.process_index == jax.process_index()])
    # Every process must run the same programs: one whose devices or host are short decides for all.
    if any_process(reason is not None) and reason is None:
        reason = "another process of this run has too little memory for them"
    return ("host" if reason else "device"), reason


def _why_not_on_device(images: Sequence[np.ndarray], local_devices: Sequence[jax.Device]) -> str | None:
    """Why a copy of `images` on each of `local_devices` would not fit, or None if it would."""
    gib = 2.0 ** 30
    limit = device_memory_bytes(local_devices)
    if limit is not None:
        tile_bytes = sum(array.nbytes for array in images)
        if tile_bytes > DEVICE_SHARE * limit:
            return (f"the tiles take {tile_bytes / gib:.1f} GiB, over {DEVICE_SHARE:.0%} of the "
                    f"{limit / gib:.1f} GiB of device memory")
        return None
    copied = sum(array.nbytes for array in images if not taken_without_copy(array, local_devices[0]))
    free = available_host_bytes()
    if free is not None and copied > free:
        return (f"a device copy of the tiles ({copied / gib:.1f} GiB) would not fit in the "
                f"{free / gib:.1f} GiB of host memory left")
    return None


def taken_without_copy(array: np.ndarray, device: jax.Device) -> bool:
    """Whether `device` would take host array `array` as it is, sharing its memory (a CPU device, if aligned)."""
    aligned = isinstance(array, np.ndarray) and array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0
    return device.platform == "cpu" and aligned and _cpu_shares_aligned_arrays(device)


@functools.cache
def _cpu_shares_aligned_arrays(device: jax.Device) -> bool:
    """Whether this jaxlib's CPU `device` shares an aligned host array's memory (tried once, on a small one)."""
    probe = aligned_empty((ALIGNMENT,), ALIGNMENT)
    return jax.device_put(probe, device).unsafe_buffer_pointer() == probe.ctypes.data


def host_value(array: jax.Array) -> np.ndarray:
    """A replicated (or single-device) array's value on this host."""
    return np.asarray(array.addressable_data(0))


class HostFedEpoch:
    """The training epoch of `make_train_epoch`, with each batch gathered on the host and sent to the devices.

    `plan(key)` gives the epoch's (batch indices, step keys) exactly as on device; `step` is
    `make_batch_train_step`'s, compiled. At most IN_FLIGHT batches wait on the devices.
    """

    def __init__(self, plan: Callable, step: Callable, mesh: Mesh):
        self.plan, self.step, self.sharding = plan, step, batch_sharding(mesh)

    def __call__(
        self, state: Any, images: np.ndarray, labels: np.ndarray, key: jax.Array
    ) -> tuple[Any, jax.Array, jax.Array]:
        """Run one epoch over host arrays; returns (state, losses, correct) like the device epoch."""
        batch_indices, keys = self.plan(key)
        batch_indices = host_value(batch_indices)
        losses, correct = [], []
        for i, rows in enumerate(batch_indices):
            batch = to_device(images[rows], self.sharding), to_device(labels[rows], self.sharding)
            state, loss, hits = self.step(state, *batch, keys[i])
            losses.append(loss)
            correct.append(hits)
            if i >= IN_FLIGHT:
                losses[i - IN_FLIGHT].block_until_ready()
        return state, jnp.stack(losses), jnp.stack(correct)


def host_fed_logits(predict: Callable, params: Any, model_state: Any, images: np.ndarray,
                    batch_indices: np.ndarray, mesh: Mesh) -> list[jax.Array]:
    """`predict(params, model_state, batch)` over the rows of `batch_indices`, each batch sent from the host."""
    sharding, outputs = batch_sharding(mesh), []
    for i, rows in enumerate(batch_indices):
        outputs.append(predict(params, model_state, to_device(images[rows], sharding)))
        if i >= IN_FLIGHT:
            outputs[i - IN_FLIGHT].block_until_ready()
    return outputs


def log_placement(reason: str | None) -> None:
    """Say why 'auto' left the tiles in host memory (the device is the default and needs no word)."""
    if reason:
        logging.warning("spec.train.data_placement='auto': %s, so they stay in host memory and each batch is "
                        "sent to the devices as it is needed (set 'device' to force them onto it)", reason)
