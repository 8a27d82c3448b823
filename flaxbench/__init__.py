"""flaxbench: a JAX/Flax benchmark for classifying histopathology tiles."""

from flaxbench.xla_flags import use_threaded_cpu_kernels

__version__ = "0.1.0"

use_threaded_cpu_kernels()
