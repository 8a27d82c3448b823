"""`LastDataset`: the tiles of the last spec.data loaded, kept for the next run that asks for the same tiles."""

from __future__ import annotations

import json
import time
from typing import Any

from data_pipeline.dataset import TileDataset, check_device_options, load_dataset

# Keys of spec.data applied on device at every step: they leave the loaded tiles as they are.
DEVICE_KEYS = ("augment", "normalize")


def _tiles_key(cfg: Any) -> str:
    """What `load_dataset(cfg)` returns depends on this alone: spec.data without its device keys."""
    items = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return json.dumps({k: v for k, v in items.items() if k not in DEVICE_KEYS}, sort_keys=True, default=repr)


class LastDataset:
    """`load_dataset` that reuses the last dataset it loaded while spec.data asks for the same tiles.

    A study's rows differ in model and normalisation, not in their tiles: this decodes a large
    folder once per study instead of once per row and seed.
    """

    def __init__(self) -> None:
        self._key: str | None = None
        self._dataset: TileDataset | None = None
        self.load_time_s: float | None = None  # seconds the last `load` took to load, None if it reused the tiles

    def load(self, cfg: Any) -> TileDataset:
        """The dataset of `cfg`, reused if the last call's `cfg` differed only in augment/normalize."""
        check_device_options(cfg)
        key = _tiles_key(cfg)
        self.load_time_s = None
        if key != self._key:
            self._key, self._dataset = None, None  # let the old tiles go before decoding new ones
            start = time.perf_counter()
            self._dataset = load_dataset(cfg)
            self.load_time_s = time.perf_counter() - start
            self._key = key
        return self._dataset
