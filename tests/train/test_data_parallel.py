"""Data parallelism over 8 forced CPU devices equals one device (run in a subprocess)."""

import json
import os
import subprocess
import sys
import textwrap

from tests.helpers import REPO

# Float32 sums are reduced in a different order across devices: allow that much, no more.
# Three SGD steps with a small learning rate: Adam would blow rounding noise in near-zero
# gradients up to full-size updates, and longer runs of a from-scratch net with batch-8 BN
# statistics are chaotic (rounding noise grows to O(1) within two epochs either way).
RTOL, ATOL = 1e-4, 1e-5

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from flaxbench.errors import SpecError
    from flaxbench.train.setup import build_run
    from tests.helpers import tiny_spec

    assert len(jax.devices()) == 8, jax.devices()
    out = {}
    # ConvModel: three steps. ResNet18: one step, which shows that BN uses the statistics of the
    # global batch (per-device statistics over 1 image each would differ grossly); later steps of
    # a from-scratch ResNet on batch-8 BN amplify rounding noise too much to compare closely.
    for model, train_tiles, options in [("convmodel", 24, dict(channels=(8, 16, 16), hidden=32, dropout=0.0)),
                                        ("resnet18", 8, {})]:
        finals = {}
        # ConvModel also with its batches sent from host memory (spec.train.data_placement='host'),
        # and as one scanned epoch (spec.train.epoch_loop='scan', the default on GPUs)
        for devices, variant in [(1, "device"), (8, "device")] + [(8, "host"), (8, "scan")] * (model == "convmodel"):
            placement = "host" if variant == "host" else "device"
            spec = tiny_spec(**{"mesh.data": devices, "model.name": model, "data.split": (train_tiles, 12, 12),
                                "train.learning_rate": 1e-3, "train.optimizer": "sgd",
                                "train.data_placement": placement,
                                "train.epoch_loop": "scan" if variant == "scan" else "auto"})
            spec.model.options = options
            run = build_run(spec)
            assert run.placement == placement and run.scan_epochs == (variant == "scan")
            state = run.initial_state()
            run.compile(("train",), state)
            state, losses, _ = run.compiled["train"](
                state, run.splits["train"].images, run.train_labels, jax.random.key(0))
            # with 8 devices, also the evaluation batches (resident, or sent from the host)
            finals[devices, variant] = (np.asarray(losses), jax.tree.leaves(jax.device_get(state.params)),
                                        jax.tree.leaves(jax.device_get(state.model_state)),
                                        [run.logits("val", state)] if devices == 8 else [])
        a = finals[1, "device"]
        for b in [finals[key] for key in ((8, "device"), (8, "scan")) if key in finals]:
            np.testing.assert_allclose(a[0], b[0], rtol=%(rtol)g, atol=%(atol)g)
            for x, y in zip(a[1] + a[2], b[1] + b[2]):
                np.testing.assert_allclose(x, y, rtol=%(rtol)g, atol=%(atol)g)
        b = finals[8, "device"]
        if (8, "host") in finals:  # the same program on the same batches: the same numbers
            host = finals[8, "host"]
            assert len(host[3]) == 1
            for x, y in zip([b[0]] + b[1] + b[2] + b[3], [host[0]] + host[1] + host[2] + host[3]):
                np.testing.assert_array_equal(x, y)
        out[model] = {"losses": a[0].tolist(), "bn_leaves": len(a[2]), "host_fed": (8, "host") in finals,
                      "scanned": (8, "scan") in finals}
    # The CPU layers with hand-written gradients loop over images (lax.map), reorder
    # contractions, split the batch into chunks (attention) or pieces (Winograd); split 8 ways
    # over the batch they must give the single-device numbers, and traced under the mesh (as
    # Run.compile does) each device must work on its own images: no gathering of the batch.
    # These are single layers, so rounding stays at float32 level and the tolerance is tight.
    import ml_collections
    from flax import nnx
    from flaxbench.models.attention import dot_product_attention
    from flaxbench.models.convolution import conv2d
    from flaxbench.models.layers import max_pool2d
    from flaxbench.runtime import batch_sharding, make_mesh
    mesh = make_mesh(ml_collections.ConfigDict({"data": 8}), 8)
    rngs = nnx.Rngs(0)
    depthwise3, depthwise5 = (conv2d(6, 6, k, s, k // 2, groups=6, rngs=rngs) for k, s in ((3, 2), (5, 1)))
    pointwise = conv2d(6, 5, 1, 2, 0, rngs=rngs)
    # by Winograd on CPU, also split: each device's one image of 32 x 32 is 64 F(4x4, 3x3) tiles
    winograd = conv2d(64, 64, 3, 1, 1, rngs=rngs)
    def module(layer):
        graph, params = nnx.split(layer)
        return (lambda params, x: nnx.merge(graph, params)(x)), params
    def stateless(fn):
        return (lambda params, x: fn(x)), {}
    layers = {
        "depthwise_3x3_stride2": module(depthwise3), "depthwise_5x5": module(depthwise5),
        "pointwise_stride2": module(pointwise), "winograd_3x3": module(winograd),
        "max_pool_3x3_stride2": stateless(lambda x: max_pool2d(x, 3, 2, 1)),
        "max_pool_3x3_stride1_ceil": stateless(lambda x: max_pool2d(x, 3, 1, 1, ceil_mode=True)),
        "attention": stateless(lambda x: dot_product_attention(x[:, 0], x[:, 1], x[:, 2])),
        "attention_8_chunks": stateless(lambda x: dot_product_attention(x[:, 0], x[:, 1], x[:, 2])),
    }
    x = jax.random.normal(jax.random.key(1), (8, 11, 12, 6))
    # 16 rows of 300 tokens: on CPU the attention runs in 8 chunks of 2 rows, one per device
    inputs = {"attention_8_chunks": jax.random.normal(jax.random.key(3), (16, 3, 300, 4)),
              "winograd_3x3": jax.random.normal(jax.random.key(4), (8, 32, 32, 64))}
    for name, (apply, params) in layers.items():
        layer_input = inputs.get(name, x)
        cotangent = jax.random.normal(jax.random.key(2), jax.eval_shape(apply, params, layer_input).shape)
        def loss(params, x, apply=apply, cotangent=cotangent):
            return (apply(params, x) * cotangent).sum()
        grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
        one = jax.tree.leaves(grad_fn(params, layer_input))
        sharded_input = jax.device_put(layer_input, batch_sharding(mesh))
        with jax.set_mesh(mesh):
            compiled = grad_fn.lower(params, sharded_input).compile()
        assert "all-gather" not in compiled.as_text(), name
        eight = jax.tree.leaves(compiled(params, sharded_input))
        assert len(eight[-1].sharding.device_set) == 8, name
        assert len(one) == len(eight) == len(jax.tree.leaves(params)) + 1, name
        for a, b in zip(eight, one):
            # absolute error relative to the array's scale: kernel gradients sum over the whole batch
            scale = max(1.0, float(np.abs(np.asarray(b)).max()))
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * scale, err_msg=name)
    out["layers"] = sorted(layers)
    try:
        build_run(tiny_spec(**{"mesh.data": 8, "train.batch_size": 12}))
        out["indivisible"] = "accepted"
    except SpecError as e:
        out["indivisible"] = str(e)
    print("RESULT " + json.dumps(out))
    """
) % {"rtol": RTOL, "atol": ATOL}


def test_eight_devices_match_one_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["resnet18"]["bn_leaves"] > 0  # BN statistics are compared too
    assert result["convmodel"]["host_fed"] and result["convmodel"]["scanned"]
    assert "depthwise_5x5" in result["layers"] and "max_pool_3x3_stride2" in result["layers"]
    assert "attention_8_chunks" in result["layers"] and "winograd_3x3" in result["layers"]
    assert "not divisible" in result["indivisible"] and "8 devices" in result["indivisible"]
