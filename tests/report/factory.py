"""Plausible results.json contents built from seeded random predictions (no training)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from flaxbench import metrics

CLASSES = ["tumor", "stroma", "complex", "lympho", "debris", "mucosa"]


def make_results(
    name: str,
    *,
    seed: int = 0,
    accuracy: float = 0.8,
    num_tiles: int = 60,
    tile_prefix: str = "test",
    synthetic: bool = True,
    title: str | None = None,
) -> dict[str, Any]:
    """A results dict whose metrics are computed from random predictions right `accuracy` of the time."""
    # The test set (labels) depends on tile_prefix only, so runs with one prefix share tiles.
    labels = np.random.default_rng(zlib.crc32(tile_prefix.encode())).integers(0, len(CLASSES), num_tiles)
    rng = np.random.default_rng([zlib.crc32(name.encode()), seed])
    right = rng.random(num_tiles) < accuracy
    wrong = (labels + rng.integers(1, len(CLASSES), num_tiles)) % len(CLASSES)
    predictions = np.where(right, labels, wrong)
    # class probabilities whose largest is the prediction: the rest shared out at random
    probabilities = rng.dirichlet(np.ones(len(CLASSES)), num_tiles) * 0.5
    probabilities[np.arange(num_tiles), predictions] += 0.5
    cm = metrics.confusion_matrix(labels, predictions, len(CLASSES))
    test_accuracy = float(np.mean(labels == predictions))
    train_time = float(rng.uniform(50, 150))
    test_loss = float(rng.uniform(0.3, 1.0))
    return {
        "format": "flaxbench.results/1",
        "name": name,
        "title": title or f"{name} title",
        "model": "convmodel",
        "source": "synthetic" if synthetic else "kather2016",
        "synthetic": synthetic,
        "classes": CLASSES,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "val_accuracy": test_accuracy,
        "val_loss": test_loss,
        "evaluated_checkpoint": {"which": "best_val", "epoch": 3, "step": 30},
        "train_time_s": train_time,
        "compile_time_s": float(rng.uniform(5, 15)),
        "checkpoint_time_s": 1.0,
        "images_per_second": float(rng.uniform(100, 600)),
        "accuracy_per_second": 100 * test_accuracy / train_time,
        "loss_per_second": test_loss / train_time,
        "params": 123456,
        "layers": 11,
        "flops_per_image": 1.2e8,
        "epochs": 3,
        "seed": seed,
        "batch_size": 16,
        "dtype": "float32",
        "device": "cpu",
        "num_devices": 1,
        "confusion_matrix": cm.tolist(),
        "per_class": {name: {**values, "auc": auc} for (name, values), auc in zip(
            metrics.per_class_metrics(cm, CLASSES).items(), metrics.one_vs_rest_auc(probabilities, labels))},
        "macro_f1": metrics.macro_f1(cm),
        "balanced_accuracy": metrics.balanced_accuracy(cm),
        "macro_auc": metrics.macro_auc(metrics.one_vs_rest_auc(probabilities, labels)),
        "ece": float(rng.uniform(0.01, 0.2)),
        "temperature": float(rng.uniform(0.8, 2.0)),
        "test_loss_temperature_scaled": float(rng.uniform(0.2, 1.0)),
        "ece_temperature_scaled": float(rng.uniform(0.01, 0.1)),
        "history": [
            {"epoch": e, "train_loss": 1.5 / e, "train_accuracy": 0.3 * e, "val_loss": 1.6 / e,
             "val_accuracy": 0.25 * e, "epoch_time_s": 4.0, "images_per_second": 300.0, "learning_rate": 1e-3}
            for e in (1, 2, 3)
        ],
        "test_predictions": {
            "ids": [f"{CLASSES[label]}/{tile_prefix}_{i}.tif" for i, label in enumerate(labels)],
            "labels": labels.tolist(),
            "predictions": predictions.tolist(),
            "probabilities": np.round(probabilities, 6).tolist(),
        },
        "created": "2026-11-25T12:00:00Z",
    }


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """Write `results` as `path` (a results.json), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results), encoding="utf-8")
    return path


def correct_by_id(results: dict[str, Any]) -> dict[str, bool]:
    """{tile id: prediction right} of a results dict."""
    p = results["test_predictions"]
    return {i: a == b for i, a, b in zip(p["ids"], p["labels"], p["predictions"])}
