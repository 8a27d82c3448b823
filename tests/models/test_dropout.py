"""Dropout masks: right keep rate, no pattern across positions or keys, nnx.Dropout's semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxbench.models.dropout import Dropout, dropout_keep_mask


def sigmas(observed: float, p: float, n: int) -> float:
    """How many binomial standard deviations `observed` (a frequency over n draws) is from p."""
    return abs(observed - p) / np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("keep_prob", [0.9, 0.5, 0.2])
def test_keep_rate_and_neighbouring_elements_independent(keep_prob):
    mask = np.asarray(dropout_keep_mask(jax.random.key(3), keep_prob, (16, 226, 64)))
    flat = mask.ravel()
    assert sigmas(flat.mean(), keep_prob, flat.size) < 5
    both = (flat[:-1] & flat[1:]).mean()  # consecutive indices must not be correlated
    assert sigmas(both, keep_prob**2, flat.size - 1) < 5


def test_every_position_kept_at_the_same_rate_across_keys():
    keys = jax.random.split(jax.random.key(0), 4000)
    masks = np.asarray(jax.vmap(lambda k: dropout_keep_mask(k, 0.7, (8, 8)))(keys)).reshape(4000, -1)
    worst = max(sigmas(rate, 0.7, 4000) for rate in masks.mean(axis=0))
    assert worst < 5
    agreement = (masks[:-1] == masks[1:]).mean()  # consecutive keys give independent masks
    assert sigmas(agreement, 0.7**2 + 0.3**2, masks[1:].size) < 5


def test_mask_is_a_function_of_the_key():
    a, b = (np.asarray(dropout_keep_mask(jax.random.key(s), 0.5, (1000,))) for s in (1, 1))
    c = np.asarray(dropout_keep_mask(jax.random.key(2), 0.5, (1000,)))
    assert (a == b).all() and not (a == c).all()


def test_dropout_layer_scales_survivors_and_is_identity_when_deterministic():
    layer = Dropout(0.25, rngs=nnx.Rngs(dropout=0))
    x = jnp.arange(1.0, 4001.0).reshape(40, 100)
    assert (layer(x, deterministic=True) == x).all()
    y = np.asarray(layer(x, deterministic=False))
    kept = y != 0
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)
    assert sigmas(kept.mean(), 0.75, kept.size) < 5
    assert not (np.asarray(layer(x, deterministic=False)) == y).all()  # a new mask every call


def test_dropout_broadcast_dims_share_the_mask():
    layer = Dropout(0.5, broadcast_dims=(1,), rngs=nnx.Rngs(dropout=0))
    y = np.asarray(layer(jnp.ones((64, 10)), deterministic=False))
    assert ((y == 0) == (y[:, :1] == 0)).all() and 0 < (y == 0).mean() < 1
