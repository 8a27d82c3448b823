"""The forms GPUs and TPUs run compute what the CPU-only forms compute, in float32 and in bfloat16.

On CPU flaxbench replaces some layers with forms XLA:CPU runs faster (Winograd and matmul
convolutions, depthwise shifts, max-pool taps, chunked attention, hashed dropout masks). Every
other backend runs the plain forms, which CPU tests would otherwise never trace: here they run
on CPU by making the models see another backend while they are traced.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flaxbench.models import build_model, head_module
from flaxbench.models.efficientnet import EfficientNet, inverted_residual_setting
from flaxbench.train.state import merge, split_model
from flaxbench.train.steps import cast_floats

from .torch_parity import QUICK_COMPILE, random_images

# Small enough to compile in seconds, large enough that every CPU form engages: at 64 px and
# batch 4 ResNet-18's first two stages take Winograd and its last the matmul form; AlexNet and
# GoogLeNet the max-pool taps and 1x1 matmuls; EfficientNet the depthwise shifts (k3 and k5, stride
# 1 and 2: its first three stages have them all, and the others no other form, so it is cut there
# to compile in a third of the time); ViT's 226 tokens the chunked attention. ResNet-50 and
# DenseNet-121 add no other form. Rates are 0 because the two backends draw different dropout
# masks (hashed vs bernoulli) by design.
MODELS = {
    "convmodel": dict(image_size=48, channels=(8, 16, 16), hidden=16, dropout=0.0),
    "vit": dict(image_size=60, patch_size=4, depth=1, width=16, num_heads=2, mlp_dim=32, dropout=0.0),
    "resnet18": {},
    "alexnet": dict(dropout=0.0),
    "googlenet": dict(dropout=0.0),
    "efficientnet_b0": dict(dropout=0.0, stochastic_depth_prob=0.0),
}
ALEXNET_MIN_SIZE = 63
BATCH = 4


def _loss_stats_and_grads(model: nnx.Module, images: jax.Array, labels: jax.Array, dtype) -> tuple:
    """Training-mode loss and updated batch statistics; eval-mode loss and parameter gradients.

    Gradients come from eval mode, where BN is the identity at init: gradients through small
    batches' statistics amplify rounding several hundredfold in the deep nets at random init
    (ResNet-50, batch 2-4, 64 px: 1-6% apart between two compilations of the same forms; measured
    2026-12-05), which would drown a real difference between the forms.
    """
    parts = split_model(model)

    def loss_fn(params, model_state, train):
        net = merge(parts, cast_floats(params, dtype), model_state, jax.random.key(0))
        logits = net(images.astype(dtype), train=train).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), nnx.state(net, nnx.BatchStat)

    @functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
    def run(params, model_state):
        train_loss, stats = loss_fn(params, model_state, True)
        eval_loss, grads = jax.value_and_grad(lambda p: loss_fn(p, model_state, False)[0])(params)
        return train_loss, stats, eval_loss, grads

    train_loss, stats, eval_loss, grads = run(parts.params, parts.model_state)
    return float(train_loss), jax.tree.leaves(stats), float(eval_loss), jax.tree.leaves(grads)


EFFICIENTNET_STAGES = 3


def _model(name: str) -> nnx.Module:
    if name == "efficientnet_b0":
        setting = inverted_residual_setting(1.0, 1.0)[:EFFICIENTNET_STAGES]
        model = EfficientNet(name, setting, num_classes=6, **MODELS[name], rngs=nnx.Rngs(params=0, dropout=1))
    else:
        model = build_model(name, 6, **MODELS[name])
    # ViT's zero-initialised head would leave every other gradient zero.
    head = head_module(model)
    head.kernel.set_value(0.01 * jax.random.normal(jax.random.key(0), head.kernel[...].shape))
    return model


def _image_size(name: str) -> int:
    return MODELS[name].get("image_size", ALEXNET_MIN_SIZE if name == "alexnet" else 64)


def _run(name: str, dtype=jnp.float32) -> tuple:
    model = _model(name)
    images = jnp.asarray(random_images(BATCH, _image_size(name), seed=3))
    labels = jnp.arange(BATCH) % 6
    return _loss_stats_and_grads(model, images, labels, dtype)


def _jaxpr(name: str) -> str:
    model = _model(name)
    images = jnp.zeros((BATCH, _image_size(name), _image_size(name), 3))
    graphdef, state = nnx.split(model)
    return str(jax.make_jaxpr(lambda state, x: nnx.merge(graphdef, state)(x, train=True))(state, images))


def _assert_stats_close(ours: list, theirs: list, tolerance: float) -> None:
    """Running means start at 0, so differences are measured against 1 + the statistic's size."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.abs(a - b).max() <= tolerance * (1 + np.abs(b).max())


@pytest.mark.parametrize("name", list(MODELS))
def test_plain_forms_give_the_cpu_forms_loss_statistics_and_gradients(name, other_backend):
    cpu_train_loss, cpu_stats, cpu_eval_loss, cpu_grads = _run(name)
    cpu_jaxpr = _jaxpr(name)
    other_backend()
    assert _jaxpr(name) != cpu_jaxpr, "the model has no CPU-only form, so this test compares nothing"
    train_loss, stats, eval_loss, grads = _run(name)
    np.testing.assert_allclose([train_loss, eval_loss], [cpu_train_loss, cpu_eval_loss], rtol=1e-4)
    _assert_stats_close(stats, cpu_stats, 1e-3)
    # Relative to each gradient's own size, unless that is negligible beside the largest one.
    norms = [np.linalg.norm(np.asarray(g, np.float64)) for g in cpu_grads]
    assert len(grads) == len(norms) and max(norms) > 0
    for ours, theirs, norm in zip(grads, cpu_grads, norms):
        difference = np.linalg.norm(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))
        assert difference <= 1e-3 * max(norm, 1e-4 * max(norms))


@pytest.mark.parametrize("name", ["resnet18", "vit", "efficientnet_b0"])
def test_bfloat16_compute_on_the_plain_forms_tracks_float32(name, other_backend):
    """GPUs train in bfloat16 by default. Gradients at random init amplify bf16 rounding far beyond
    anything checkable (see `_loss_stats_and_grads`), so they are only checked to be finite."""
    other_backend()
    train32, stats32, eval32, _ = _run(name)
    train16, stats16, eval16, grads16 = _run(name, jnp.bfloat16)
    np.testing.assert_allclose([train16, eval16], [train32, eval32], rtol=1e-2)
    _assert_stats_close(stats16, stats32, 5e-2)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads16)
