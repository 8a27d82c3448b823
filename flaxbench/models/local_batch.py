"""Batch loops of the CPU layers, run on each device's own share of a data-parallel batch.

The CPU layers loop over the images or pieces of a batch (`lax.map`). Under data parallelism
the batch is split over the mesh's `data` axis, and XLA cannot split such a loop: it gathers
the whole batch onto every device and each runs the whole loop (with 2 forced CPU devices,
2026-12-05, a GoogLeNet training step at batch 16 took 1.6x as long as with the loops per device,
9 all-gathers; EfficientNet-B4 1.27x, 64 all-gathers; benchmarks/README.md).
Traced under `jax.set_mesh` (as `Run.compile` does), `on_local_batch` runs such a loop under
`jax.shard_map` instead, each device over its own images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from jax.sharding import AxisType, PartitionSpec

from flaxbench.runtime import DATA_AXIS


def data_axis_size() -> int:
    """Devices the batch is split over in the mesh being traced under (1 without one, or inside shard_map)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return 1
    if mesh.axis_types[mesh.axis_names.index(DATA_AXIS)] != AxisType.Auto:
        return 1  # already per device (Manual), or sharding carried in the types (Explicit)
    return mesh.shape[DATA_AXIS]


def _splits(batched: Sequence[jax.Array]) -> int:
    """Over how many devices `on_local_batch` splits these arrays' rows (1: it does not split them)."""
    devices = data_axis_size()
    return 1 if any(array.shape[0] % devices for array in batched) else devices


def local_share(x: jax.Array) -> jax.Array | jax.ShapeDtypeStruct:
    """The shape and dtype of one device's share of `x` as `on_local_batch` splits it (`x` if unsplit)."""
    devices = _splits([x])
    return x if devices == 1 else jax.ShapeDtypeStruct((x.shape[0] // devices, *x.shape[1:]), x.dtype)


def on_local_batch(fn: Callable, batched: Sequence[jax.Array], replicated: Sequence[jax.Array] = (), *,
                   summed: bool = False) -> jax.Array:
    """`fn(*batched, *replicated)`, each device computing it over its share of the `batched` arrays' rows.

    The result is split over the devices like the batch, or, with `summed`, a sum over the batch that
    `fn` returns per share and that is added up over the devices.
    """
    if _splits(batched) == 1:
        return fn(*batched, *replicated)

    def local(*arrays: jax.Array) -> jax.Array:
        out = fn(*arrays)
        return jax.lax.psum(out, DATA_AXIS) if summed else out

    in_specs = (PartitionSpec(DATA_AXIS),) * len(batched) + (PartitionSpec(),) * len(replicated)
    out_specs = PartitionSpec() if summed else PartitionSpec(DATA_AXIS)
    # check_vma=False: the custom-gradient layers inside do not mark their outputs as varying
    # over devices, which the check requires; the specs above state what is split.
    return jax.shard_map(local, in_specs=in_specs, out_specs=out_specs, check_vma=False)(*batched, *replicated)
