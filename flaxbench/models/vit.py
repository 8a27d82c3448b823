"""Vision Transformer trained from scratch (the study's ViT patch 10 / patch 15 rows)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flaxbench.errors import SpecError
from flaxbench.models.attention import MultiHeadSelfAttention
from flaxbench.models.dropout import Dropout
from flaxbench.models.layers import check_min_size


def _mlp_linear(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """torchvision's ViT MLP init: Xavier-uniform weights, N(0, 1e-6) biases."""
    return nnx.Linear(
        in_features, out_features, kernel_init=nnx.initializers.xavier_uniform(),
        bias_init=nnx.initializers.normal(1e-6), rngs=rngs,
    )


class MLPBlock(nnx.Module):
    """Transformer feed-forward block: Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, width: int, mlp_dim: int, dropout: float, *, rngs: nnx.Rngs):
        self.fc1 = _mlp_linear(width, mlp_dim, rngs=rngs)
        self.fc2 = _mlp_linear(mlp_dim, width, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.dropout(jax.nn.gelu(self.fc1(x), approximate=False), deterministic=not train)
        return self.dropout(self.fc2(x), deterministic=not train)


class EncoderBlock(nnx.Module):
    """Pre-norm transformer encoder block."""

    def __init__(
        self, width: int, num_heads: int, mlp_dim: int, dropout: float, attention_dropout: float,
        *, rngs: nnx.Rngs,
    ):
        self.ln_1 = nnx.LayerNorm(width, epsilon=1e-6, rngs=rngs)
        self.self_attention = MultiHeadSelfAttention(width, num_heads, attention_dropout, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(width, epsilon=1e-6, rngs=rngs)
        self.mlp = MLPBlock(width, mlp_dim, dropout, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self.self_attention(self.ln_1(x), train=train)
        x = x + self.dropout(y, deterministic=not train)
        return x + self.mlp(self.ln_2(x), train=train)


class ViT(nnx.Module):
    """ViT: patchify conv, class token, learned position embeddings, `depth` encoder blocks.

    Same layers, init and exact GELU as torchvision's `VisionTransformer`; `dropout` acts after
    the embeddings, attention and MLP layers, `attention_dropout` on the attention weights.
    """

    head_path = ("head",)

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        image_size: int = 150,
        patch_size: int = 15,
        depth: int = 9,
        width: int = 64,
        num_heads: int = 4,
        mlp_dim: int = 128,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if image_size % patch_size:
            raise SpecError(
                f"ViT image_size {image_size} is not a multiple of patch_size {patch_size}; set "
                "spec.data.image_size to a multiple of it (the tiles' size is used unless "
                "spec.model.options.image_size is set) or change spec.model.options.patch_size"
            )
        if width % num_heads:
            raise SpecError(
                f"ViT width {width} is not a multiple of num_heads {num_heads}; "
                "change spec.model.options.width or num_heads"
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.min_size = image_size
        num_patches = (image_size // patch_size) ** 2
        self.conv_proj = nnx.Conv(
            3, width, (patch_size, patch_size), strides=patch_size, padding="VALID", rngs=rngs
        )
        self.class_token = nnx.Param(jnp.zeros((1, 1, width)))
        self.pos_embedding = nnx.Param(jax.random.normal(rngs.params(), (1, num_patches + 1, width)) * 0.02)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.layers = nnx.List(
            [EncoderBlock(width, num_heads, mlp_dim, dropout, attention_dropout, rngs=rngs) for _ in range(depth)]
        )
        self.ln = nnx.LayerNorm(width, epsilon=1e-6, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_min_size(x, self.min_size, f"ViT (patch {self.patch_size})")
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise SpecError(
                f"ViT was built for {self.image_size}x{self.image_size} images, got "
                f"{x.shape[1]}x{x.shape[2]}; set spec.model.options.image_size to match"
            )
        x = self.conv_proj(x)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        cls = jnp.broadcast_to(self.class_token[...].astype(x.dtype), (n, 1, c))
        x = jnp.concatenate([cls, x], axis=1) + self.pos_embedding[...].astype(x.dtype)
        x = self.dropout(x, deterministic=not train)
        for layer in self.layers:
            x = layer(x, train=train)
        return self.head(self.ln(x)[:, 0])

    def fit_checkpoint(self, params: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """A checkpoint's flat params for this model: position embeddings of another tile size resampled to its grid."""
        saved = params.get("pos_embedding")
        wanted = self.pos_embedding.shape
        if saved is None or saved.shape == wanted or saved.shape[::2] != wanted[::2]:
            return params  # nothing to fit, or a width mismatch that loading names
        return {**params, "pos_embedding": resample_pos_embedding(saved, wanted[1] - 1)}

    def reset_head(self, num_classes: int, *, rngs: nnx.Rngs) -> None:
        """Replace the classifier with a fresh zero-initialised one."""
        width = self.head.in_features
        self.head = nnx.Linear(width, num_classes, kernel_init=nnx.initializers.zeros, rngs=rngs)


def resample_pos_embedding(pos_embedding: jax.Array, num_patches: int) -> jax.Array:
    """(1, 1 + g*g, width) position embeddings for `num_patches` patches: the class token's kept, the g x g grid
    resized bilinearly (as big_vision and timm do to fine-tune a ViT at another resolution)."""
    old_grid, new_grid = round((pos_embedding.shape[1] - 1) ** 0.5), round(num_patches ** 0.5)
    if old_grid**2 != pos_embedding.shape[1] - 1 or new_grid**2 != num_patches:
        raise SpecError(f"ViT position embeddings of {pos_embedding.shape[1] - 1} patches cannot be resampled to "
                        f"{num_patches}: both must be square grids")
    width = pos_embedding.shape[2]
    grid = jnp.reshape(pos_embedding[0, 1:], (old_grid, old_grid, width))
    grid = jax.image.resize(grid, (new_grid, new_grid, width), method="linear")
    return jnp.concatenate([pos_embedding[:, :1], grid.reshape(1, num_patches, width)], axis=1)
