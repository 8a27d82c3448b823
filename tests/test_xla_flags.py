"""flaxbench's XLA switches: CPU convolutions and standalone dots leave YNNPACK unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"

# Prints XLA_FLAGS as the process ended up with, then for a compiled convolution and a compiled
# matmul whether each runs as a YNNPACK fusion. argv[1] says when flaxbench is imported: "never",
# "first" or "after_jax".
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
dot = jax.jit(lambda a, b: a @ b)
texts = [conv.lower(jnp.ones((2, 16, 16, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text(),
         dot.lower(jnp.ones((256, 64)), jnp.ones((64, 128))).compile().as_text()]
print(os.environ.get("XLA_FLAGS", ""))
print(" ".join("ynn" if "ynn_fusion" in text else "xla" for text in texts))
"""


def probe(when: str, xla_flags: str | None = None) -> tuple[str, str, str]:
    """(XLA_FLAGS at the end, 'ynn' or 'xla' for the convolution and the matmul, stderr) of a fresh CPU process."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    done = subprocess.run([sys.executable, "-c", PROBE, when], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    flags, backend = done.stdout.splitlines()[-2:]
    return flags, backend, done.stderr


@pytest.fixture(scope="module")
def jax_uses_ynn() -> None:
    if probe("never")[1] != "ynn ynn":
        pytest.skip("this jaxlib does not run CPU convolutions and matmuls through YNNPACK")


def test_import_moves_cpu_convolutions_and_dots_off_ynnpack(jax_uses_ynn):
    flags, backends, _ = probe("first")
    assert f"{YNN_FLAG}=-individual_convolution,-individual_dot" in flags
    assert backends == "xla xla"


def test_a_users_own_ynn_setting_is_kept(jax_uses_ynn):
    own = f"--xla_cpu_enable_fast_math=false {YNN_FLAG}=-individual_convolution"
    flags, backends, _ = probe("first", own)
    assert flags == own
    assert backends == "xla ynn"


def test_importing_after_jax_started_warns(jax_uses_ynn):
    _, backends, stderr = probe("after_jax")
    assert "flaxbench was imported after JAX started" in stderr
    assert backends == "ynn ynn"
