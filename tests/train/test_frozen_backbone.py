"""spec.train.freeze_backbone: the head trains alone on the features testing sees (a linear probe)."""

import numpy as np
import pytest

from flaxbench.errors import SpecError
from flaxbench.train.loop import train_and_evaluate
from tests.helpers import tiny_spec
from tests.train.test_loop import last_params


def test_frozen_backbone_trains_only_the_head(tmp_path):
    from flaxbench.train.setup import build_run
    from flaxbench.train.state import flat_arrays

    spec = tiny_spec(**{"train.epochs": 1, "train.freeze_backbone": True})
    initial = flat_arrays(build_run(spec).initial_state().params)
    train_and_evaluate(spec, tmp_path, log=lambda s: None)
    trained = last_params(spec, tmp_path)
    changed = {k for k in initial if not np.array_equal(np.asarray(initial[k]), np.asarray(trained[k]))}
    assert changed == {"fc2.kernel", "fc2.bias"}


def test_a_frozen_backbone_keeps_its_batch_norm_statistics_and_clips_the_heads_gradients_alone(tmp_path):
    from flaxbench.checkpoints import LAST, RunCheckpoints
    from flaxbench.train.setup import build_run
    from flaxbench.train.state import flat_arrays

    spec = tiny_spec(**{"model.name": "resnet18", "model.options": {}, "train.epochs": 1,
                        "train.freeze_backbone": True, "train.grad_clip_norm": 1e-3, "train.optimizer": "sgd",
                        "train.weight_decay": 0.0, "train.momentum": 0.0, "train.learning_rate": 1.0})
    initial = build_run(spec).initial_state()
    train_and_evaluate(spec, tmp_path, log=lambda s: None)
    trained = RunCheckpoints(tmp_path / "checkpoints").restore(LAST, initial)[0]
    for name, value in flat_arrays(initial.model_state).items():  # running means and variances, as a linear probe
        np.testing.assert_array_equal(np.asarray(flat_arrays(trained.model_state)[name]), np.asarray(value), name)
    # The clip norm bounds the head's gradients alone: large backbone gradients do not shrink its step.
    import jax.numpy as jnp

    from flaxbench.train.optim import make_optimizer

    tx, _ = make_optimizer(spec.train, 1, ("fc",))
    params = {"conv1": {"kernel": jnp.zeros(4)}, "fc": {"kernel": jnp.zeros(3)}}
    grads = {"conv1": {"kernel": jnp.full(4, 100.0)}, "fc": {"kernel": jnp.array([0.0, 3e-3, 4e-3])}}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(np.asarray(updates["fc"]["kernel"]), [0.0, -6e-4, -8e-4], rtol=1e-5)  # norm 1e-3
    assert not np.any(np.asarray(updates["conv1"]["kernel"]))
    with pytest.raises(SpecError, match="freeze_backbone=True trains no backbone weights, so "
                                        "spec.train.backbone_lr_scale=0.1 would do nothing"):
        build_run(tiny_spec(**{"train.freeze_backbone": True, "train.backbone_lr_scale": 0.1}))
