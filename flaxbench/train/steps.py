"""Pure, jit-able training and evaluation functions: an epoch in one `lax.scan`, or step by step (SteppedEpoch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from data_pipeline import augment, normalize, train_batch_indices
from flaxbench.runtime import batch_sharding
from flaxbench.train.state import ModelParts, TrainState, merge


def cast_floats(tree: Any, dtype: jnp.dtype) -> Any:
    """Cast floating leaves to the compute dtype (params stay float32 outside)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _shard_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def make_batch_train_step(
    parts: ModelParts,
    tx: optax.GradientTransformation,
    *,
    augment_ops: tuple[str, ...],
    normalize_mode: str,
    compute_dtype: jnp.dtype,
    label_smoothing: float,
    mesh: Mesh | None,
    class_weights: np.ndarray | None = None,
    frozen_backbone: bool = False,
) -> Callable:
    """`step(state, images, labels, key) -> (state, loss, correct)` on one batch of uint8 tiles.

    A step whose loss is not finite leaves the state unchanged, so the state after an epoch is
    the last good one; the returned losses tell the caller at which step it happened. With a
    `frozen_backbone` (spec.train.freeze_backbone) the model runs as in inference: batch norm uses and
    keeps its running statistics and dropout is off, so the head learns on the features testing sees.
    """

    def loss_fn(params, model_state, images, labels, key):
        model = merge(parts, cast_floats(params, compute_dtype), model_state, key)
        logits = model(images, train=not frozen_backbone).astype(jnp.float32)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        if class_weights is None:
            loss = optax.softmax_cross_entropy(logits, targets).mean()
        else:  # torch's CrossEntropyLoss(weight=w, label_smoothing=...): each class's term weighted by its w, the
            # sum over the batch divided by the weights of the tiles' own classes
            weights = jnp.asarray(class_weights)
            loss = optax.softmax_cross_entropy(logits, targets * weights).sum() / weights[labels].sum()
        new_model_state = nnx.split(model, nnx.Param, nnx.RngState, ...)[3]
        return loss, (logits, new_model_state)

    def step(state: TrainState, images: jax.Array, labels: jax.Array, key: jax.Array):
        aug_key, dropout_key = jax.random.split(key)
        images, labels = _shard_batch(images, mesh), _shard_batch(labels, mesh)
        images = normalize(augment(aug_key, images, augment_ops), normalize_mode, compute_dtype)
        (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.model_state, images, labels, dropout_key
        )
        def update(state: TrainState) -> TrainState:
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return TrainState(optax.apply_updates(state.params, updates), model_state, opt_state)

        # A cond, not a select over the state: the optimizer pass runs once and nothing is copied.
        new = jax.lax.cond(jnp.isfinite(loss), update, lambda state: state, state)
        return new, loss, jnp.sum(jnp.argmax(logits, -1) == labels)

    return step


def make_train_step(parts: ModelParts, tx: optax.GradientTransformation, **options: Any) -> Callable:
    """`step(state, all_images, all_labels, batch_idx, key)`: the batch step on rows `batch_idx` of a split.

    `options` are `make_batch_train_step`'s; the split is device-resident, so the gather runs in the step.
    """
    batch_step = make_batch_train_step(parts, tx, **options)

    def step(state: TrainState, all_images: jax.Array, all_labels: jax.Array, batch_idx: jax.Array, key: jax.Array):
        images = jnp.take(all_images, batch_idx, axis=0)
        return batch_step(state, images, jnp.take(all_labels, batch_idx, axis=0), key)

    return step


def epoch_plan(key: jax.Array, num_examples: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The epoch's shuffled batch indices (steps, batch) and one key per step."""
    perm_key, steps_key = jax.random.split(key)
    batch_indices = train_batch_indices(perm_key, num_examples, batch_size)
    return batch_indices, jax.random.split(steps_key, batch_indices.shape[0])


def make_train_epoch(step: Callable, batch_size: int) -> Callable:
    """`epoch(state, images, labels, key) -> (state, losses, correct)`: all steps in one lax.scan."""

    def epoch(state: TrainState, all_images: jax.Array, all_labels: jax.Array, key: jax.Array):
        batch_indices, keys = epoch_plan(key, all_images.shape[0], batch_size)

        def body(state, inputs):
            state, loss, correct = step(state, all_images, all_labels, *inputs)
            return state, (loss, correct)

        state, (losses, correct) = jax.lax.scan(body, state, (batch_indices, keys))
        return state, losses, correct

    return epoch


class SteppedEpoch:
    """The same epoch as `make_train_epoch`, dispatching one compiled step at a time.

    XLA:CPU runs convolutions inside loop bodies many times slower than outside them
    (jax-ml/jax#12868; 14x measured here), so on CPU the epoch is a Python loop over an
    asynchronously dispatched step: still no host synchronisation inside the epoch.
    """

    def __init__(self, plan: Callable, step: Callable):
        self.plan, self.step = plan, step

    def __call__(
        self, state: TrainState, images: jax.Array, labels: jax.Array, key: jax.Array
    ) -> tuple[TrainState, jax.Array, jax.Array]:
        """Run one epoch; returns (state, losses, correct) like the scanned epoch."""
        batch_indices, keys = self.plan(key)
        losses, correct = [], []
        for i in range(batch_indices.shape[0]):
            state, loss, hits = self.step(state, images, labels, batch_indices[i], keys[i])
            losses.append(loss)
            correct.append(hits)
        return state, jnp.stack(losses), jnp.stack(correct)


# The 8 symmetries of a square tile as (transpose, flip rows, flip columns): every combination.
DIHEDRAL = tuple((t, r, c) for t in (False, True) for r in (False, True) for c in (False, True))


def _dihedral_view(x: jax.Array, flags: jax.Array) -> jax.Array:
    """`x` (N, H, H, C) transposed, then row-flipped, then column-flipped where `flags` (3,) say so."""
    x = jnp.where(flags[0], jnp.swapaxes(x, 1, 2), x)
    x = jnp.where(flags[1], jnp.flip(x, axis=1), x)
    return jnp.where(flags[2], jnp.flip(x, axis=2), x)


def make_batch_predict(
    parts: ModelParts, *, normalize_mode: str, compute_dtype: jnp.dtype, mesh: Mesh | None, tta: bool = False
) -> Callable:
    """`predict(params, model_state, images) -> logits (batch, C)` of one batch of uint8 tiles.

    With `tta`, the logits are log of the class probabilities averaged over the tile's 8 flips and
    rotations (test-time augmentation), so softmax and cross-entropy read them as usual.
    """

    def predict(params, model_state, images):
        model = merge(parts, cast_floats(params, compute_dtype), model_state)

        def logits_of(x):
            return model(normalize(x, normalize_mode, compute_dtype), train=False).astype(jnp.float32)

        x = _shard_batch(images, mesh)
        if not tta:
            return logits_of(x)

        # One traced model call scanned over the 8 views: unrolled, compile time would grow 8-fold.
        def view(_, flags):
            return None, jax.nn.log_softmax(logits_of(_dihedral_view(x, flags)))

        _, log_probs = jax.lax.scan(view, None, jnp.asarray(DIHEDRAL))
        return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(len(DIHEDRAL))

    return predict


def make_predict(parts: ModelParts, **options: Any) -> Callable:
    """`predict(params, model_state, images, batch_indices) -> logits (steps * batch, C)` over a resident split.

    `options` are `make_batch_predict`'s; the batches (rows of `batch_indices`) run in one lax.scan.
    """
    batch_predict = make_batch_predict(parts, **options)

    def predict(params, model_state, images, batch_indices):
        def body(_, idx):
            return None, batch_predict(params, model_state, jnp.take(images, idx, axis=0))

        _, logits = jax.lax.scan(body, None, batch_indices)
        return logits.reshape(-1, logits.shape[-1])

    return predict
