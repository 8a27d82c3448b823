"""flaxbench's XLA switches: CPU convolutions leave single-threaded YNNPACK unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"

# Prints XLA_FLAGS as the process ended up with, then whether the compiled convolution runs as a
# YNNPACK fusion. argv[1] says when flaxbench is imported: "never", "first" or "after_jax".
PROBE = """
import logging, os, sys
logging.basicConfig(level=logging.WARNING)
import jax, jax.numpy as jnp
if sys.argv[1] == "after_jax":
    jnp.zeros(1).block_until_ready()
if sys.argv[1] != "never":
    import flaxbench
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
text = conv.lower(jnp.ones((2, 16, 16, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
print(os.environ.get("XLA_FLAGS", ""))
print("ynn" if "ynn_fusion" in text else "xla")
"""


def probe(when: str, xla_flags: str | None = None) -> tuple[str, str, str]:
    """(XLA_FLAGS at the end, 'ynn' or 'xla' for the convolution, stderr) of a fresh CPU process."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    done = subprocess.run([sys.executable, "-c", PROBE, when], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    flags, backend = done.stdout.splitlines()[-2:]
    return flags, backend, done.stderr


@pytest.fixture(scope="module")
def jax_uses_ynn_for_convolutions() -> None:
    if probe("never")[1] != "ynn":
        pytest.skip("this jaxlib does not run CPU convolutions through YNNPACK")


def test_import_moves_cpu_convolutions_off_ynnpack(jax_uses_ynn_for_convolutions):
    flags, backend, _ = probe("first")
    assert f"{YNN_FLAG}=-individual_convolution" in flags
    assert backend == "xla"


def test_a_users_own_ynn_setting_is_kept(jax_uses_ynn_for_convolutions):
    own = f"--xla_cpu_enable_fast_math=false {YNN_FLAG}=+individual_convolution"
    flags, backend, _ = probe("first", own)
    assert flags == own
    assert backend == "ynn"


def test_importing_after_jax_started_warns(jax_uses_ynn_for_convolutions):
    _, backend, stderr = probe("after_jax")
    assert "flaxbench was imported after JAX started" in stderr
    assert backend == "ynn"
