"""ViT: torchvision parity, the CPU attention gradient, attention dropout, size errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torchvision.models.vision_transformer import VisionTransformer

from flaxbench.errors import FlaxbenchError, SpecError
from flaxbench.models import build_model
from flaxbench.models.attention import _attention, dot_product_attention
from tests.models.torch_parity import (
    assert_close_to_scale,
    compiled_logits,
    random_images,
    torch_logits,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TINY = dict(image_size=30, patch_size=10, depth=2, width=16, num_heads=4, mlp_dim=32)


def torch_vit_state_to_nnx(state: dict[str, torch.Tensor], depth: int) -> dict[tuple[str, ...], np.ndarray]:
    """torchvision ViT state_dict -> our parameter paths, name by name (Linear weights transposed)."""
    t = {k: v.detach().numpy() for k, v in state.items()}
    out = {
        ("conv_proj", "kernel"): t["conv_proj.weight"].transpose(2, 3, 1, 0),
        ("conv_proj", "bias"): t["conv_proj.bias"],
        ("class_token",): t["class_token"],
        ("pos_embedding",): t["encoder.pos_embedding"],
        ("ln", "scale"): t["encoder.ln.weight"],
        ("ln", "bias"): t["encoder.ln.bias"],
        ("head", "kernel"): t["heads.head.weight"].T,
        ("head", "bias"): t["heads.head.bias"],
    }
    for i in range(depth):
        src, dst = f"encoder.layers.encoder_layer_{i}.", ("layers", str(i))
        out |= {
            (*dst, "ln_1", "scale"): t[src + "ln_1.weight"],
            (*dst, "ln_1", "bias"): t[src + "ln_1.bias"],
            (*dst, "self_attention", "in_proj", "kernel"): t[src + "self_attention.in_proj_weight"].T,
            (*dst, "self_attention", "in_proj", "bias"): t[src + "self_attention.in_proj_bias"],
            (*dst, "self_attention", "out_proj", "kernel"): t[src + "self_attention.out_proj.weight"].T,
            (*dst, "self_attention", "out_proj", "bias"): t[src + "self_attention.out_proj.bias"],
            (*dst, "ln_2", "scale"): t[src + "ln_2.weight"],
            (*dst, "ln_2", "bias"): t[src + "ln_2.bias"],
            (*dst, "mlp", "fc1", "kernel"): t[src + "mlp.0.weight"].T,
            (*dst, "mlp", "fc1", "bias"): t[src + "mlp.0.bias"],
            (*dst, "mlp", "fc2", "kernel"): t[src + "mlp.3.weight"].T,
            (*dst, "mlp", "fc2", "bias"): t[src + "mlp.3.bias"],
        }
    return out


def load_torch_vit(model: nnx.Module, torch_model: torch.nn.Module, depth: int) -> None:
    """Overwrite every parameter of `model` with the mapped torchvision weight (shapes must match)."""
    mapped = torch_vit_state_to_nnx(torch_model.state_dict(), depth)
    params = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(params))
    assert {tuple(str(p) for p in k) for k in flat} == set(mapped)
    for path, var in flat.items():
        value = mapped[tuple(str(p) for p in path)]
        assert var.get_value().shape == value.shape, path
        var.set_value(jnp.asarray(value))
    nnx.update(model, params)


def test_eval_logits_match_torchvision():
    torch.manual_seed(0)
    reference = VisionTransformer(hidden_dim=TINY["width"], num_layers=TINY["depth"], num_classes=6,
                                  **{k: TINY[k] for k in ("image_size", "patch_size", "num_heads", "mlp_dim")})
    with torch.no_grad():  # torchvision zero-inits the head; random weights make the check meaningful
        reference.heads.head.weight.normal_()
    ours = build_model("vit", 6, **TINY)
    load_torch_vit(ours, reference, TINY["depth"])
    images = random_images(3, TINY["image_size"])
    assert_close_to_scale(compiled_logits(ours, jnp.asarray(images)), torch_logits(reference.eval(), images))


def _attention_loss(attention, keep_mask):
    def loss(q, k, v):
        return jnp.sum(jnp.sin(attention(q, k, v, keep_mask, 0.7)))
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


@pytest.mark.parametrize("with_dropout", [False, True])
@pytest.mark.parametrize("tokens", [11, 300])  # 300: on CPU the heads run in 3 chunks of 2
def test_attention_gradient_matches_autodiff(with_dropout, tokens):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(6, tokens, 8)), jnp.float32) for _ in range(3))
    keep_mask = jnp.asarray(rng.random((6, tokens, tokens)) > 0.3) if with_dropout else None
    value, grads = _attention_loss(dot_product_attention, keep_mask)(q, k, v)
    expected_value, expected_grads = _attention_loss(_attention, keep_mask)(q, k, v)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for ours, theirs in zip(grads, expected_grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_attention_dropout_is_random_in_training_only():
    model = build_model("vit", 6, **TINY, dropout=0.0, attention_dropout=0.5)
    # The zero-init head hides everything, and equal columns would only sum the centred LayerNorm output.
    model.head.kernel.set_value(jax.random.normal(jax.random.key(0), model.head.kernel[...].shape))
    images = jnp.asarray(random_images(2, TINY["image_size"]))
    train_a, train_b = compiled_logits(model, images, train=True), compiled_logits(model, images, train=True)
    assert np.abs(np.asarray(train_a) - np.asarray(train_b)).max() > 1e-3
    np.testing.assert_array_equal(compiled_logits(model, images), compiled_logits(model, images))


def test_mismatched_sizes_are_clear_errors():
    with pytest.raises(SpecError, match="image_size 35 is not a multiple of patch_size 10"):
        build_model("vit", 6, **{**TINY, "image_size": 35})
    with pytest.raises(SpecError, match="width 16 is not a multiple of num_heads 3"):
        build_model("vit", 6, **{**TINY, "num_heads": 3})
    model = build_model("vit", 6, **TINY)
    with pytest.raises(FlaxbenchError, match="at least 30x30"):
        model(jnp.zeros((1, 20, 20, 3)))
    with pytest.raises(SpecError, match="built for 30x30"):
        model(jnp.zeros((1, 40, 40, 3)))


def test_resampled_pos_embedding_keeps_the_class_token_and_smooth_grids():
    from flaxbench.models.vit import resample_pos_embedding

    rows, cols = np.meshgrid(np.linspace(0, 1, 3), np.linspace(0, 1, 3), indexing="ij")
    grid = np.stack([np.full((3, 3), 0.7), rows], axis=-1).reshape(1, 9, 2)  # a constant and a top-down ramp
    pos = np.concatenate([np.array([[[5.0, -5.0]]]), grid], axis=1).astype(np.float32)
    same = resample_pos_embedding(pos, 9)
    np.testing.assert_allclose(same, pos, atol=1e-6)
    bigger = np.asarray(resample_pos_embedding(pos, 36))
    assert bigger.shape == (1, 37, 2)
    np.testing.assert_array_equal(bigger[0, 0], [5.0, -5.0])
    new_grid = bigger[0, 1:].reshape(6, 6, 2)
    np.testing.assert_allclose(new_grid[..., 0], 0.7, atol=1e-6)
    assert np.all(np.diff(new_grid[..., 1], axis=0) >= 0) and np.all(np.diff(new_grid[..., 1], axis=1) == 0)
    assert new_grid[0, 0, 1] < 0.2 and new_grid[-1, 0, 1] > 0.8  # top stays top, bottom stays bottom
    with pytest.raises(SpecError, match="square grids"):
        resample_pos_embedding(pos, 8)
