"""XLA_FLAGS switches that must be set before JAX starts; importing this module never imports JAX."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import sys

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
            logging.warning("flaxbench was imported after JAX started; XLA:CPU convolutions stay on "
                            "one thread. Import flaxbench first, or set XLA_FLAGS=%s=-individual_convolution",
                            _YNN_FLAG)
        return
    add_xla_flag(_YNN_FLAG, "-individual_convolution")


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
