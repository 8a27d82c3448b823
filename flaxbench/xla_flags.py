"""XLA_FLAGS switches that must be set before JAX starts; importing this module never imports JAX."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import sys

# XLA:CPU in jaxlib 0.10 hands convolutions and standalone dots to YNNPACK. Convolutions there
# ran on one thread here while XLA's own (Eigen) convolutions use every core: on this project's
# 2-core CPU a 3x3 convolution's forward took 16 vs 9 ms and its weight gradient 55 vs 17 ms, and
# a ResNet-18 training step went from 14 to 22 img/s. Standalone dots (the linear layers and their
# gradients) were slower there too: a ViT patch 10 training step took 1.15-1.22x longer
# (alternating processes, 2026-11-27). Dots fused with other ops, reductions and elementwise ops
# stay with YNNPACK.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_YNN_TYPES_OFF = "-individual_convolution,-individual_dot"


def use_threaded_cpu_kernels() -> None:
    """Keep XLA:CPU convolutions and standalone dots off YNNPACK unless XLA_FLAGS already chooses.

    Runs on `import flaxbench`; it must precede the first JAX computation of the process. To give
    them back to YNNPACK, start with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
    +individual_convolution,+individual_dot.
    """
    try:
        jaxlib_version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return
    if tuple(map(int, re.match(r"(\d+)\.(\d+)", jaxlib_version).groups())) < (0, 10):
        return  # older XLA builds may not know the flag, and an unknown flag aborts the process
    if _YNN_FLAG in os.environ.get("XLA_FLAGS", ""):
        return
    if backends_started():  # XLA read its flags when the first backend started
        import jax

        if jax.default_backend() == "cpu":
            logging.warning("flaxbench was imported after JAX started; XLA:CPU convolutions and dots stay "
                            "on YNNPACK, slower here. Import flaxbench first, or set XLA_FLAGS=%s=%s",
                            _YNN_FLAG, _YNN_TYPES_OFF)
        return
    add_xla_flag(_YNN_FLAG, _YNN_TYPES_OFF)


def backends_started() -> bool:
    """Whether JAX has created its backends (XLA has then read XLA_FLAGS); never imports JAX."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # no public API tells whether backends started

    return getattr(xla_bridge, "backends_are_initialized", lambda: False)()


def add_xla_flag(name: str, value: str) -> None:
    """Append `name=value` to XLA_FLAGS unless the flag is already set there."""
    flags = os.environ.get("XLA_FLAGS", "")
    if name not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {name}={value}".strip()
