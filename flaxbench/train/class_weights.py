"""`spec.train.class_weights`: a per-class weight on the training loss, for imbalanced tile sets.

None: every tile counts the same (the study). "balanced": class c weighs n / (k * n_c) over the
training split (n tiles, k classes, n_c of class c; scikit-learn's "balanced"), so every class
adds as much to the loss as any other. A tuple gives one positive weight per class, in the order
of spec.data.classes (or of the source's classes when that is None). The loss of a batch is then
sum(w[y] * loss) / sum(w[y]), as torch's CrossEntropyLoss(weight=...) computes it. Validation and
test losses stay unweighted, so rows remain comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flaxbench.errors import SpecError

FORMS = "None, 'balanced', or one positive number per class, e.g. (1.0, 2.5, 1.0)"


def check_class_weights(setting: Any) -> None:
    """SpecError for a spec.train.class_weights that no tile set could take (checked before the tiles load)."""
    if setting is None or setting == "balanced":
        return
    if isinstance(setting, (str, bool)) or not isinstance(setting, (list, tuple)) or not setting:
        raise SpecError(f"spec.train.class_weights={setting!r} must be {FORMS}")
    for weight in setting:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight <= 0:
            raise SpecError(f"spec.train.class_weights={tuple(setting)!r}: weight {weight!r} must be a number above 0")


def class_weights(setting: Any, train_labels: np.ndarray, classes: Sequence[str]) -> np.ndarray | None:
    """float32 (k,) weights of the training loss for `setting` (None: unweighted)."""
    check_class_weights(setting)
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(np.asarray(train_labels), minlength=len(classes)).astype(np.float64)
        missing = [name for name, count in zip(classes, counts) if count == 0]
        if missing:
            raise SpecError(f"spec.train.class_weights='balanced': class '{missing[0]}' has no training tiles")
        return (counts.sum() / (len(classes) * counts)).astype(np.float32)
    if len(setting) != len(classes):
        raise SpecError(
            f"spec.train.class_weights gives {len(setting)} weights for {len(classes)} classes "
            f"({', '.join(classes)}); give one per class in that order"
        )
    return np.asarray(setting, np.float32)
