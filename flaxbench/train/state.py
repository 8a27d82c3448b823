"""The functional training state: NNX model split into pytrees that jit and orbax can carry."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class TrainState(NamedTuple):
    """Everything a train step updates; all leaves are arrays."""

    params: nnx.State  # nnx.Param variables, float32
    model_state: nnx.State  # BatchStat and other non-parameter variables
    opt_state: Any  # optax state over `params`


class ModelParts(NamedTuple):
    """An NNX model split for pure functions: rebuild with `merge`."""

    graphdef: nnx.GraphDef
    params: nnx.State
    rng_state: nnx.State  # reseeded every step from the run's key, never checkpointed
    model_state: nnx.State


def split_model(model: nnx.Module) -> ModelParts:
    """Split `model` into graph, params, RNG streams and the remaining state."""
    return ModelParts(*nnx.split(model, nnx.Param, nnx.RngState, ...))


def merge(parts: ModelParts, params: nnx.State, model_state: nnx.State, key: jax.Array | None = None) -> nnx.Module:
    """Rebuild a model from its graph, `params` and `model_state`; `key` seeds its RNG streams."""
    rng_state = parts.rng_state if key is None else seeded_rng_state(parts.rng_state, key)
    # Fresh Variable objects at the current trace level: variables built by an outer trace
    # (e.g. jit around value_and_grad) cannot be updated inside the inner one.
    fresh = jax.tree.map(lambda x: x, (params, rng_state, model_state))
    return nnx.merge(parts.graphdef, *fresh)


def seeded_rng_state(rng_state: nnx.State, key: jax.Array) -> nnx.State:
    """RNG streams with keys derived from `key` (one per stream) and counters reset, built in-trace."""
    leaves, treedef = jax.tree.flatten(rng_state)
    fresh = [
        jax.random.fold_in(key, i) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else jnp.zeros_like(leaf)
        for i, leaf in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, fresh)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_names(path: tuple) -> tuple[str, ...]:
    """A pytree key path as plain names, without NNX's trailing `.value`."""
    names = tuple(_key_name(k) for k in path)
    return names[:-1] if names and names[-1] == "value" else names


def flat_arrays(tree: Any) -> dict[str, jax.Array]:
    """A pytree as {'layer1.0.conv1.kernel': array}: readable names for checkpoints."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        out[".".join(path_names(path)) or "value"] = leaf
    return out


def unflat_arrays(template: Any, flat: dict[str, Any]) -> Any:
    """Inverse of `flat_arrays` given a template with the same structure."""
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [".".join(path_names(p)) or "value" for p, _ in paths_and_leaves]
    missing = [n for n in names if n not in flat]
    if missing:
        raise KeyError(missing[0])
    return jax.tree_util.tree_unflatten(treedef, [flat[n] for n in names])


def count_params(params: nnx.State) -> int:
    """Number of scalar parameters."""
    return int(sum(x.size for x in jax.tree.leaves(params)))
