"""Metrics of one split from its logits: the numbers results.json and `evaluate` report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.special

from flaxbench import metrics
from flaxbench.auc_intervals import class_auc_cis, macro_auc_interval
from flaxbench.class_intervals import (
    CI_LEVEL, accuracy_interval, balanced_accuracy_interval, class_cis, with_class_cis,
)
from flaxbench.group_design_effects import group_class_auc_intervals, group_design_fields
from flaxbench.group_intervals import (
    GroupInterval, format_group_interval, group_accuracy_interval, group_class_intervals, group_fields, recorded_groups,
    with_class_group_intervals,
)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis, in float64."""
    return scipy.special.log_softmax(np.asarray(logits, np.float64), axis=-1)


def mean_cross_entropy(logp: np.ndarray, labels: np.ndarray) -> float:
    """The mean over tiles of -log p(true class), from log-probabilities (n, classes)."""
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def split_metrics(
    logits: np.ndarray, labels: np.ndarray, classes: Sequence[str], ids: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, mean cross-entropy, confusion matrix, per-class metrics (with one-vs-rest AUC), per-tile predictions."""
    labels = np.asarray(labels, np.int64)
    logp = log_softmax(logits)
    predictions = logp.argmax(axis=-1)
    cm = metrics.confusion_matrix(labels, predictions, len(classes))
    probabilities = np.exp(logp)
    aucs = metrics.one_vs_rest_auc(probabilities, labels)
    per_class = metrics.per_class_metrics(cm, classes)
    for name, auc in zip(classes, aucs):
        per_class[name]["auc"] = auc
    return {
        "accuracy": float(np.mean(predictions == labels)),
        "loss": mean_cross_entropy(logp, labels),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "macro_f1": metrics.macro_f1(cm),
        "macro_auc": metrics.macro_auc(aucs),
        "ece": metrics.expected_calibration_error(probabilities, labels),
        "balanced_accuracy": metrics.balanced_accuracy(cm),
        "predictions": {
            "ids": list(ids),
            "labels": labels.tolist(),
            "predictions": predictions.tolist(),
            # class probabilities per tile (rows in `ids` order, columns in class order), unrounded: the report
            # recomputes AUCs, their CIs and curves from them, and rounding ties or zeroes small ones
            "probabilities": probabilities.tolist(),
        },
    }


def accuracy_without(predictions: dict[str, Any], left_out: set[str]) -> float | None:
    """The accuracy of per-tile `predictions` (ids, labels, predictions) over the tiles not in `left_out`; None if
    no tile is left."""
    kept = [label == predicted for tile, label, predicted
            in zip(predictions["ids"], predictions["labels"], predictions["predictions"]) if tile not in left_out]
    return float(np.mean(kept)) if kept else None


def split_cis(result: dict[str, Any], classes: Sequence[str], group_by: str | None = None) -> dict[str, Any]:
    """95% CIs of a `split_metrics` result from its per-tile predictions: accuracy and balanced accuracy (Wilson
    intervals), macro AUC (auc_intervals), and `per_class` again with each class's `<key>_ci` (class_intervals' Wilson
    intervals, auc_intervals' score intervals); with a `group_by` pattern grouping the tiles, each also over the groups
    (group_intervals' group_fields, per class `<key>_ci_groups` and `<key>_groups`;
    group_design_effects.group_design_fields)."""
    predictions = result["predictions"]
    labels = np.asarray(predictions["labels"], np.int64)
    predicted = np.asarray(predictions["predictions"], np.int64)
    probabilities = np.asarray(predictions["probabilities"], np.float64)
    correct = (predicted == labels).astype(np.int64)
    said = np.eye(len(classes), dtype=np.int64)[predicted]
    aucs = [result["per_class"][name].get("auc") for name in classes]
    cis = {**class_cis(correct, np.ones_like(labels), labels, said, CI_LEVEL),
           "auc": class_auc_cis(aucs, labels, CI_LEVEL)}
    per_class = with_class_cis(result["per_class"], classes, cis)
    groups = recorded_groups(predictions["ids"], group_by)
    if groups is not None:
        per_class = with_class_group_intervals(per_class, classes, {
            **group_class_intervals(correct, np.ones_like(labels), labels, said, groups),
            "auc": group_class_auc_intervals([probabilities], [labels], [np.arange(len(labels))], groups)})
    balanced_ci = list(balanced_accuracy_interval(correct, np.ones_like(labels), labels, CI_LEVEL))
    found = macro_auc_interval([probabilities], [labels], level=CI_LEVEL) if result["macro_auc"] is not None else None
    auc_ci = None if found is None else list(found)
    return {
        "ci_level": CI_LEVEL,
        "accuracy_ci": list(accuracy_interval(correct, level=CI_LEVEL)),
        "balanced_accuracy_ci": balanced_ci,
        "macro_auc_ci": auc_ci,
        "per_class": per_class,
        **group_fields(None if groups is None else group_accuracy_interval(correct, None, groups)),
        **group_design_fields(predictions, groups, balanced_ci, auc_ci),
    }


def format_metrics(name: str, split: str, m: dict[str, Any], synthetic: bool = False) -> str:
    """One human line for a split's headline metrics (the accuracy's 95% CI where `m` holds `accuracy_ci`, and over
    patients or slides where it holds `groups` and `accuracy_ci_groups`), marked when the data was synthetic."""
    low, high = m.get("accuracy_ci", (None, None))
    groups = None if m.get("groups") is None else GroupInterval(m["groups"], m.get("accuracy_ci_groups"))
    interval = "" if low is None else f" (95% CI {100 * low:.1f}-{100 * high:.1f}%{format_group_interval(groups)})"
    return (
        f"{name} [{split}]{' [SYNTHETIC DATA]' if synthetic else ''} accuracy {100 * m['accuracy']:.2f}%{interval}  "
        f"loss {m['loss']:.4f}  macro-F1 {m['macro_f1']:.4f}  balanced accuracy {100 * m['balanced_accuracy']:.2f}%"
    )
