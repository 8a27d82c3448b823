"""Copy a torchvision state_dict into an NNX model, one explicitly named tensor at a time.

Each model family's `*_convert.py` walks its model and calls `conv`, `linear`, `bn` with the
torchvision key prefix of that layer, so the mapping reads like torchvision's state_dict.
Nothing here imports torch: tensors arrive as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxbench.errors import WeightsError
from flaxbench.models.layers import BatchNorm2d

# Bookkeeping buffers that hold no weights.
IGNORED_SUFFIXES = ("num_batches_tracked",)


class StateDictMapper:
    """Hands out state_dict tensors by name and checks that every key is used exactly once."""

    def __init__(self, state_dict: Mapping[str, np.ndarray], arch: str):
        # Copies (the converters' only ones): on CPU jnp.asarray may share memory with a numpy array, and these
        # may be views of torch's buffers, which torch changes in place when it trains.
        self.tensors = {k: np.array(v, copy=True) for k, v in state_dict.items()}
        self.arch = arch
        self.used: set[str] = set()

    def take(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """Return tensor `key`, checking that it exists and has torch shape `shape`."""
        if key not in self.tensors:
            raise WeightsError(
                f"state_dict for {self.arch} lacks key '{key}': is it a {self.arch} state_dict "
                "(torchvision names)?"
            )
        value = self.tensors[key]
        if tuple(value.shape) != tuple(shape):
            raise WeightsError(
                f"state_dict key '{key}' has shape {tuple(value.shape)}, {self.arch} expects "
                f"{tuple(shape)}: is it a state_dict of another architecture?"
            )
        self.used.add(key)
        return value

    def conv(self, conv: nnx.Conv, prefix: str) -> None:
        """torch Conv2d `prefix.weight` (O, I/g, kh, kw) [+ bias] -> kernel (kh, kw, I/g, O)."""
        kh, kw, cin, cout = conv.kernel.get_value().shape
        w = self.take(f"{prefix}.weight", (cout, cin, kh, kw))
        conv.kernel.set_value(jnp.asarray(w.transpose(2, 3, 1, 0), jnp.float32))
        if conv.bias is not None:
            conv.bias.set_value(jnp.asarray(self.take(f"{prefix}.bias", (cout,)), jnp.float32))

    def linear(self, linear: nnx.Linear, prefix: str) -> None:
        """torch Linear `prefix.weight` (O, I) + bias -> kernel (I, O)."""
        cin, cout = linear.kernel.get_value().shape
        linear.kernel.set_value(jnp.asarray(self.take(f"{prefix}.weight", (cout, cin)).T, jnp.float32))
        if linear.bias is not None:
            linear.bias.set_value(jnp.asarray(self.take(f"{prefix}.bias", (cout,)), jnp.float32))

    def bn(self, bn: BatchNorm2d, prefix: str) -> None:
        """torch BatchNorm2d weight, bias, running_mean, running_var -> scale, bias, mean, var."""
        n = (bn.num_features,)
        bn.scale.set_value(jnp.asarray(self.take(f"{prefix}.weight", n), jnp.float32))
        bn.bias.set_value(jnp.asarray(self.take(f"{prefix}.bias", n), jnp.float32))
        bn.mean.set_value(jnp.asarray(self.take(f"{prefix}.running_mean", n), jnp.float32))
        bn.var.set_value(jnp.asarray(self.take(f"{prefix}.running_var", n), jnp.float32))

    def finish(self) -> None:
        """Raise naming the first state_dict key that no layer took."""
        unexpected = sorted(
            k for k in self.tensors if k not in self.used and not k.endswith(IGNORED_SUFFIXES)
        )
        if unexpected:
            more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
            raise WeightsError(
                f"state_dict for {self.arch} has unexpected key '{unexpected[0]}'{more}: "
                "is it a state_dict of another architecture?"
            )
