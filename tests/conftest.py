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


def pytest_configure(config):
    """Tests run without the persistent compilation cache unless one asks for it (tests/test_compile_cache.py).

    The CLI would otherwise write into ~/.cache and a test's compile could come from an earlier run's.
    """
    import os

    os.environ["FLAXBENCH_COMPILATION_CACHE"] = "off"
