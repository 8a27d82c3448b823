"""Which forms the models trace: the CPU-only ones on CPU, or the plain ones every other backend runs.

The CPU forms (Winograd and matmul convolutions, depthwise shifts, max-pool taps, chunked
attention, hashed dropout masks) compute the same function faster on XLA:CPU, but not with the
same operations: a Winograd convolution does fewer multiplications, and a batch cut into pieces
runs in a loop that XLA's cost analysis counts once. Whatever describes the model rather than
the machine (its FLOPs per image) is traced inside `plain_forms()`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import jax

_PLAIN = contextvars.ContextVar("flaxbench_plain_forms", default=False)


def cpu_forms() -> bool:
    """Whether code traced now should use the CPU-only forms: on the CPU backend, outside `plain_forms()`."""
    return jax.default_backend() == "cpu" and not _PLAIN.get()


@contextlib.contextmanager
def plain_forms() -> Iterator[None]:
    """Within this block the models trace the forms other backends run (XLA's convolution, pooling, attention)."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)
