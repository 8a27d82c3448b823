"""Multi-head self-attention laid out like `torch.nn.MultiheadAttention` (packed in_proj, out_proj).

On CPU the attention core has a hand-written gradient: XLA:CPU runs the transposed batched
matmuls that autodiff produces (P^T @ dO, dS^T @ Q) through a slow generic dot, and
materialises softmax broadcasts. Measured here for ViT patch 10 shapes (64 heads x 226
tokens x 16 dims), forward plus backward took 33-41 ms with autodiff and 13-20 ms with the
gradient below (torch: 10-12 ms). It also runs over independent chunks of the (batch * heads)
axis, which XLA:CPU executes concurrently on the cores: a whole ViT patch 10 training step took
1.12-1.13x less time than with the same gradient over all heads at once (patch 15: 1.01x), in
same-process A/B runs, and in a profile its ops added up to 1.2x the step's wall time instead of
1.0x. Both still held once standalone dots left YNNPACK (`flaxbench/xla_flags.py`): plain
autodiff made the patch 10 step 1.48x slower, one chunk 1.18x (same-process A/B, 8 pairs).
Other backends use plain autodiff, which XLA fuses well.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxbench.models.dropout import dropout_keep_mask
from flaxbench.models.forms import cpu_forms
from flaxbench.models.layers import torch_linear


def _scores_to_probs(q: jax.Array, k: jax.Array) -> jax.Array:
    """softmax(q @ k^T) over keys, computed in float32, returned in q's dtype."""
    scores = jnp.einsum("bqd,bkd->bqk", q, k, preferred_element_type=jnp.float32)
    return jax.nn.softmax(scores, axis=-1).astype(q.dtype)


def _drop(probs: jax.Array, keep_mask: jax.Array | None, keep_prob: float) -> jax.Array:
    """Attention dropout: zero the weights outside `keep_mask`, rescale the rest by 1/keep_prob."""
    if keep_mask is None:
        return probs
    return jnp.where(keep_mask, probs / jnp.asarray(keep_prob, probs.dtype), jnp.zeros((), probs.dtype))


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, keep_mask: jax.Array | None, keep_prob: float) -> jax.Array:
    return jnp.einsum("bqk,bkd->bqd", _drop(_scores_to_probs(q, k), keep_mask, keep_prob), v)


# On CPU, attention runs over chunks of (batch * heads) whose float32 score matrices take about
# this much memory: chunks of 0.8-1.6 MB were fastest here, for 64 and 256 heads of 101 and 226
# tokens (fewer, larger chunks leave cores idle; more, smaller ones add per-op overhead).
_CPU_CHUNK_BYTES = 1 << 20
_CPU_MAX_CHUNKS = 16  # bounds the unrolled program: 64 chunks took ViT patch 10 at batch 64 49 s to compile


def _cpu_chunk_size(batch: int, queries: int, keys: int) -> int:
    """A divisor of `batch`: the largest whose score matrices fit _CPU_CHUNK_BYTES, or larger to cap the chunk count."""
    fits = max(1, _CPU_CHUNK_BYTES // (4 * queries * keys))
    divisors = [d for d in range(1, batch + 1) if batch % d == 0]
    size = max(d for d in divisors if d <= fits)
    return min(d for d in divisors if d >= max(size, -(-batch // _CPU_MAX_CHUNKS)))


def _chunks(size: int, *arrays: jax.Array | None):
    """Consecutive `size`-row slices of each array (None stays None), one tuple per chunk."""
    total = arrays[0].shape[0]
    for i in range(0, total, size):
        yield tuple(None if a is None else a[i : i + size] for a in arrays)


def _join(parts: list[jax.Array]) -> jax.Array:
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention_cpu(q, k, v, keep_mask, keep_prob, chunk):
    return _attention(q, k, v, keep_mask, keep_prob)


def _attention_cpu_fwd(q, k, v, keep_mask, keep_prob, chunk):
    outs, saved = [], []
    for qc, kc, vc, mc in _chunks(chunk, q, k, v, keep_mask):
        probs = _scores_to_probs(qc, kc)
        dropped = _drop(probs, mc, keep_prob)
        outs.append(jnp.einsum("bqk,bkd->bqd", dropped, vc))
        saved.append((probs, dropped))
    return _join(outs), (q, k, v, keep_mask, saved)


def _chunk_grads(keep_prob, q, k, v, keep_mask, probs, dropped, grad_out):
    grad_probs = _drop(jnp.einsum("bqd,bkd->bqk", grad_out, v), keep_mask, keep_prob)
    grad_scores = probs * (grad_probs - jnp.sum(grad_probs * probs, axis=-1, keepdims=True))
    # Contract over queries with the small operand transposed, and keep XLA from folding the
    # transposes back into the dot (which turns it into the slow non-canonical form).
    grad_out_t, q_t = jax.lax.optimization_barrier((grad_out.swapaxes(1, 2), q.swapaxes(1, 2)))
    grad_v_t, grad_k_t = jax.lax.optimization_barrier(
        (jnp.einsum("bdq,bqk->bdk", grad_out_t, dropped), jnp.einsum("bdq,bqk->bdk", q_t, grad_scores))
    )
    grad_q = jnp.einsum("bqk,bkd->bqd", grad_scores, k)
    return grad_q, grad_k_t.swapaxes(1, 2), grad_v_t.swapaxes(1, 2)


def _attention_cpu_bwd(keep_prob, chunk, residuals, grad_out):
    q, k, v, keep_mask, saved = residuals
    grads = [
        _chunk_grads(keep_prob, qc, kc, vc, mc, *saved_c, gc)
        for (qc, kc, vc, mc, gc), saved_c in zip(_chunks(chunk, q, k, v, keep_mask, grad_out), saved)
    ]
    grad_mask = None if keep_mask is None else np.zeros(keep_mask.shape, jax.dtypes.float0)
    return (*(_join(list(g)) for g in zip(*grads)), grad_mask)


_attention_cpu.defvjp(_attention_cpu_fwd, _attention_cpu_bwd)


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, keep_mask: jax.Array | None = None, keep_prob: float = 1.0
) -> jax.Array:
    """softmax(q k^T) v over (batch*heads, tokens, dims) arrays, with dropout where `keep_mask` is False."""
    if not cpu_forms():
        return _attention(q, k, v, keep_mask, keep_prob)
    return _attention_cpu(q, k, v, keep_mask, keep_prob, _cpu_chunk_size(q.shape[0], q.shape[1], k.shape[1]))


class MultiHeadSelfAttention(nnx.Module):
    """Self-attention with torch's parameter layout and init: packed q/k/v projection, output projection."""

    def __init__(self, width: int, num_heads: int, dropout: float = 0.0, *, rngs: nnx.Rngs):
        if width % num_heads:
            raise ValueError(f"attention width {width} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj = nnx.Linear(
            width, 3 * width, kernel_init=nnx.initializers.xavier_uniform(), bias_init=nnx.initializers.zeros,
            rngs=rngs,
        )
        self.out_proj = torch_linear(width, width, zero_bias=True, rngs=rngs)
        self.dropout_rate = dropout
        self.dropout_rngs = rngs.dropout.fork() if dropout > 0 else None

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Attend over the tokens of `x` (batch, tokens, width); dropout on the weights when training."""
        n, t, c = x.shape
        h, d = self.num_heads, c // self.num_heads
        # Split before the head transpose: the gradient of a split is one concatenate, while the
        # gradient of indexing a stacked (3, ...) array pads each part with zeros and adds them.
        q, k, v = (
            part.reshape(n, t, h, d).transpose(0, 2, 1, 3).reshape(n * h, t, d)
            for part in jnp.split(self.in_proj(x), 3, axis=-1)
        )
        q = q * jnp.asarray(d**-0.5, x.dtype)
        keep_mask = None
        if train and self.dropout_rate > 0:
            keep_mask = dropout_keep_mask(self.dropout_rngs(), 1.0 - self.dropout_rate, (n * h, t, t))
        out = dot_product_attention(q, k, v, keep_mask, 1.0 - self.dropout_rate)
        return self.out_proj(out.reshape(n, h, t, d).transpose(0, 2, 1, 3).reshape(n, t, c))
