"""A trained run's forward pass over tiles: compiled once, however many passes."""

from __future__ import annotations

import numpy as np

from flaxbench.inference import load_trained_run


def test_a_second_pass_over_tiles_compiles_nothing_and_scores_them_alike(kather_run, backend_compiles):
    run = load_trained_run(kather_run, "best")
    tiles = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    first = run.logits(tiles, batch_size=8)
    compiled = len(backend_compiles)
    second = run.logits(tiles, batch_size=8)
    assert compiled > 0 and len(backend_compiles) == compiled  # before: the forward pass compiled every time
    np.testing.assert_array_equal(first, second)
