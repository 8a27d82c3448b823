"""Multi-head self-attention laid out like `torch.nn.MultiheadAttention` (packed in_proj, out_proj).

On CPU the attention core has a hand-written gradient: XLA:CPU runs the transposed batched
matmuls that autodiff produces (P^T @ dO, dS^T @ Q) through a slow generic dot, and
materialises softmax broadcasts. Measured here for ViT patch 10 shapes (64 heads x 226
tokens x 16 dims), forward plus backward took 33-41 ms with autodiff and 13-20 ms with the
gradient below (torch: 10-12 ms). Other backends use plain autodiff, which XLA fuses well.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flaxbench.models.layers import torch_linear


def _scores_to_probs(q: jax.Array, k: jax.Array) -> jax.Array:
    """softmax(q @ k^T) over keys, computed in float32, returned in q's dtype."""
    scores = jnp.einsum("bqd,bkd->bqk", q, k, preferred_element_type=jnp.float32)
    return jax.nn.softmax(scores, axis=-1).astype(q.dtype)


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, keep: jax.Array | None) -> jax.Array:
    probs = _scores_to_probs(q, k)
    if keep is not None:
        probs = probs * keep.astype(probs.dtype)
    return jnp.einsum("bqk,bkd->bqd", probs, v)


@jax.custom_vjp
def _attention_cpu(q: jax.Array, k: jax.Array, v: jax.Array, keep: jax.Array | None) -> jax.Array:
    return _attention(q, k, v, keep)


def _attention_cpu_fwd(q, k, v, keep):
    probs = _scores_to_probs(q, k)
    dropped = probs if keep is None else probs * keep.astype(probs.dtype)
    return jnp.einsum("bqk,bkd->bqd", dropped, v), (q, k, v, keep, probs, dropped)


def _attention_cpu_bwd(residuals, grad_out):
    q, k, v, keep, probs, dropped = residuals
    grad_dropped = jnp.einsum("bqd,bkd->bqk", grad_out, v)
    grad_probs = grad_dropped if keep is None else grad_dropped * keep.astype(grad_dropped.dtype)
    grad_scores = probs * (grad_probs - jnp.sum(grad_probs * probs, axis=-1, keepdims=True))
    # Contract over queries with the small operand transposed, and keep XLA from folding the
    # transposes back into the dot (which turns it into the slow non-canonical form).
    grad_out_t, q_t = jax.lax.optimization_barrier((grad_out.swapaxes(1, 2), q.swapaxes(1, 2)))
    grad_v_t, grad_k_t = jax.lax.optimization_barrier(
        (jnp.einsum("bdq,bqk->bdk", grad_out_t, dropped), jnp.einsum("bdq,bqk->bdk", q_t, grad_scores))
    )
    grad_q = jnp.einsum("bqk,bkd->bqd", grad_scores, k)
    grad_keep = None if keep is None else jnp.zeros_like(keep)
    return grad_q, grad_k_t.swapaxes(1, 2), grad_v_t.swapaxes(1, 2), grad_keep


_attention_cpu.defvjp(_attention_cpu_fwd, _attention_cpu_bwd)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    """softmax(q k^T) v over (batch*heads, tokens, dims) arrays; `keep` scales the weights (dropout)."""
    if jax.default_backend() == "cpu":
        return _attention_cpu(q, k, v, keep)
    return _attention(q, k, v, keep)


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
        self.out_proj = torch_linear(width, width, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Attend over the tokens of `x` (batch, tokens, width); dropout on the weights when training."""
        n, t, c = x.shape
        h, d = self.num_heads, c // self.num_heads
        qkv = self.in_proj(x).reshape(n, t, 3, h, d).transpose(2, 0, 3, 1, 4).reshape(3, n * h, t, d)
        q, k, v = qkv[0] * jnp.asarray(d**-0.5, x.dtype), qkv[1], qkv[2]
        keep = None
        if train and self.dropout.rate > 0:
            keep = self.dropout(jnp.ones((n * h, t, t), x.dtype), deterministic=False)
        out = dot_product_attention(q, k, v, keep)
        return self.out_proj(out.reshape(n, h, t, d).transpose(0, 2, 1, 3).reshape(n, t, c))
