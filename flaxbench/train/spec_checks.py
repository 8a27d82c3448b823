"""Checks of a spec's values, each a one-line SpecError naming its key; build_run makes most before any tile loads."""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections

from flaxbench.errors import SpecError

# spec.train numbers that would train without error but to meaningless results: key -> (test, valid range).
TRAIN_NUMBER_RANGES = {
    "learning_rate": (lambda v: v > 0, "a number above 0"),
    "weight_decay": (lambda v: v >= 0, "a number of at least 0"),
    "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "warmup_epochs": (lambda v: v >= 0, "a number of at least 0"),
    "backbone_lr_scale": (lambda v: v >= 0, "a number of at least 0"),
    "grad_clip_norm": (lambda v: v > 0, "None or a number above 0"),
    "early_stopping_patience": (lambda v: v >= 1 and v == int(v), "None or a whole number of epochs of at least 1"),
}
# spec.train.select_by (None: val_accuracy): the validation value that picks the best epoch -> higher is better.
SELECT_BY = {"val_accuracy": True, "val_balanced_accuracy": True, "val_macro_f1": True, "val_loss": False}
OPTIONAL_TRAIN_NUMBERS = ("grad_clip_norm", "early_stopping_patience")  # None switches them off


# Keys that take True or False only: a string such as "False" would read as true (data_pipeline checks its own).
BOOLEAN_KEYS = (("train", "freeze_backbone"), ("train", "deterministic"))


def check_run_settings(spec: ml_collections.ConfigDict) -> None:
    """SpecError naming spec.seed, spec.mesh.data or a True/False key whose value cannot be what is meant."""
    seed = spec.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise SpecError(f"spec.seed={seed!r} must be a whole number from 0 to 2**32 - 1")
    devices = spec.mesh.get("data") if spec.get("mesh") is not None else -1
    if isinstance(devices, bool) or not isinstance(devices, int) or not (devices == -1 or devices >= 1):
        raise SpecError(f"spec.mesh.data={devices!r} must be -1 (all devices) or a device count of at least 1")
    for section, key in BOOLEAN_KEYS:
        value = spec[section].get(key, False)
        if not isinstance(value, bool):
            raise SpecError(f"spec.{section}.{key}={value!r} must be True or False")


def check_init(init: str, arch: str | None = None) -> None:
    """SpecError for an unknown spec.model.init, or a weights file or folder it names that is not there; with `arch`
    (spec.model.name), weights of another model are refused too (weights.check_weights_source)."""
    if not isinstance(init, str):
        raise SpecError(f"spec.model.init={init!r} must be 'scratch', 'imagenet', 'torchvision:FILE.pth' or "
                        "'checkpoint:DIR'")
    if init in ("scratch", "imagenet"):
        return
    if init.startswith("torchvision:"):
        path = init.removeprefix("torchvision:")
        if os.path.isdir(path):
            raise SpecError(f"spec.model.init: '{path}' is a folder; give the torchvision .pth file (or use "
                            f"checkpoint:{path} for a 'flaxbench convert' output or a run)")
        if not os.path.isfile(path):
            raise SpecError(f"spec.model.init: weights file '{path}' does not exist; download the torchvision .pth first")
    elif init.startswith("checkpoint:"):
        path = init.removeprefix("checkpoint:")
        if os.path.isfile(path):
            raise SpecError(f"spec.model.init: '{path}' is a file, not a 'flaxbench convert' output or a run directory; "
                            f"for a torchvision .pth use spec.model.init=torchvision:{path}")
        if not os.path.isdir(path):
            raise SpecError(
                f"spec.model.init: '{path}' does not exist; give a 'flaxbench convert' output or a run directory"
            )
    else:
        raise SpecError(
            f"spec.model.init '{init}' is unknown; use 'scratch', 'imagenet', 'torchvision:FILE.pth' "
            "or 'checkpoint:DIR' (a 'flaxbench convert' output or a flaxbench run)"
        )
    if arch is not None:
        from flaxbench.weights import check_weights_source

        check_weights_source(init, arch)


def check_train_numbers(cfg: ml_collections.ConfigDict) -> None:
    """SpecError naming the first spec.train count or number outside its range (OPTIONAL_TRAIN_NUMBERS may be None)."""
    for key in ("epochs", "batch_size", "eval_batch_size"):
        value = cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"spec.train.{key}={value!r} must be a whole number of at least 1")
    for key, (in_range, valid) in TRAIN_NUMBER_RANGES.items():
        value = cfg.get(key)
        if key in OPTIONAL_TRAIN_NUMBERS and value is None:
            continue
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (is_number and in_range(value)):
            raise SpecError(f"spec.train.{key}={value!r} must be {valid}")


def check_min_size(spec: ml_collections.ConfigDict, min_size: Any, size: int) -> None:
    """SpecError naming spec.data.image_size if tiles of `size` px are below the model's minimum."""
    if isinstance(min_size, int) and size < min_size:
        raise SpecError(
            f"spec.data.image_size: {spec.model.name} needs tiles of at least {min_size} px, got {size}; "
            "use larger tiles"
        )


def check_select_by(select_by: Any) -> None:
    """SpecError if spec.train.select_by names no validation value SELECT_BY knows (None: val_accuracy)."""
    if select_by is not None and select_by not in SELECT_BY:
        raise SpecError(f"spec.train.select_by={select_by!r} is unknown; use None (val_accuracy) or one of "
                        f"{', '.join(SELECT_BY)}")
