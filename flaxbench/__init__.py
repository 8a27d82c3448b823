"""flaxbench: a JAX/Flax benchmark for classifying histopathology tiles."""

__version__ = "0.1.0"
