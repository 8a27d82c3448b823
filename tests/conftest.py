"""Fixtures shared by the whole test suite."""

import pytest


@pytest.fixture
def other_backend(monkeypatch):
    """A function that, once called, makes code traced afterwards in the test see a GPU backend.

    The models pick their CPU-only forms by `jax.default_backend()` at trace time; caches are
    cleared on both sides so that no trace crosses over.
    """
    import jax

    def switch():
        jax.clear_caches()
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")

    yield switch
    jax.clear_caches()


@pytest.fixture(scope="module")
def kather_run(tmp_path_factory):
    """Workdir of a one-epoch ConvModel trained on the eight Kather sample classes at 32 px."""
    from flaxbench.train.loop import train_and_evaluate
    from tests.helpers import SHARED_DATA, tiny_spec

    workdir = tmp_path_factory.mktemp("runs") / "kather"
    spec = tiny_spec(**{"data.source": f"folder:{SHARED_DATA / 'kather2016_sample'}", "data.classes": None,
                        "data.split": (8, 8, 8), "train.epochs": 1, "train.batch_size": 8})
    train_and_evaluate(spec, workdir, log=lambda line: None)
    return workdir


def pytest_configure(config):
    """Tests run without the persistent compilation cache unless one asks for it (tests/test_compile_cache.py).

    The CLI would otherwise write into ~/.cache and a test's compile could come from an earlier run's.
    """
    import os

    os.environ["FLAXBENCH_COMPILATION_CACHE"] = "off"


BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def backend_compiles():
    """A list that gains one entry per program XLA compiles while the test runs (in-process caches cleared)."""
    compiled: list[float] = []

    import jax

    def record(event: str, duration_s: float, **_: object) -> None:
        if event == BACKEND_COMPILE_EVENT:
            compiled.append(duration_s)

    jax.clear_caches()
    jax.monitoring.register_event_duration_secs_listener(record)
    yield compiled
    jax.monitoring.unregister_event_duration_listener(record)
