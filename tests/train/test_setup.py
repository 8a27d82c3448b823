"""Building a run's model: a random init for training, no init at all for restoring a checkpoint."""

from __future__ import annotations

import jax
import jax.monitoring
import numpy as np
import pytest
from flax import nnx

from flaxbench.train.setup import init_model
from tests.helpers import tiny_spec

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CLASSES = ("a", "b", "c")


@pytest.fixture
def backend_compiles():
    """A list that gains one entry per program XLA compiles while the test runs (in-process caches cleared)."""
    compiled: list[float] = []

    def record(event: str, duration_s: float, **_: object) -> None:
        if event == BACKEND_COMPILE_EVENT:
            compiled.append(duration_s)

    jax.clear_caches()
    jax.monitoring.register_event_duration_secs_listener(record)
    yield compiled
    jax.monitoring.unregister_event_duration_listener(record)


def resnet18_spec():
    """ResNet-18 from scratch on 32 px tiles: one distinct weight shape per few layers."""
    return tiny_spec(**{"model.name": "resnet18", "model.options": {}, "model.init": "scratch"})


def test_a_random_init_compiles_programs(backend_compiles):
    init_model(resnet18_spec(), CLASSES, 32)
    assert len(backend_compiles) >= 10  # one per weight shape; the counter below would miss nothing


def test_a_model_built_for_restoring_compiles_nothing(backend_compiles):
    model = init_model(resnet18_spec(), CLASSES, 32, load_weights=False)
    # seeding its dropout stream takes 3 scalar programs; a random init takes one per weight shape (above)
    assert len(backend_compiles) <= 3, f"{len(backend_compiles)} programs compiled to build a model only restored into"
    drawn = init_model(resnet18_spec(), CLASSES, 32)
    built, expected = nnx.state(model, nnx.Param), nnx.state(drawn, nnx.Param)
    assert jax.tree.structure(built) == jax.tree.structure(expected)
    for leaf, like in zip(jax.tree.leaves(built), jax.tree.leaves(expected)):
        assert (leaf.shape, leaf.dtype) == (like.shape, like.dtype)
        assert not np.any(np.asarray(leaf))  # zeros: nothing drawn that the checkpoint then replaces
