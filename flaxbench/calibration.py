"""Temperature scaling (Guo et al. 2017): one temperature, fitted on validation logits, that calibrates a run's
class probabilities without changing any prediction."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

from flaxbench import metrics
from flaxbench.evaluation import log_softmax, mean_cross_entropy

# The fitted temperature is searched in [1/50, 50]; at or near a bound, the validation tiles leave it undetermined
# (e.g. all of them predicted right: the loss falls with the temperature until it is flat in float64).
_LOG_TEMPERATURE_BOUND = math.log(50.0)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the mean cross-entropy of softmax(logits / T) on these tiles."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise ValueError(f"need logits (n, classes) and n labels, n > 0; got {logits.shape} and {labels.shape}")
    # The loss is convex in 1/T, so unimodal in log T: a bounded scalar search finds its minimum.
    def loss(log_t: float) -> float:
        return mean_cross_entropy(log_softmax(logits / math.exp(log_t)), labels)

    found = minimize_scalar(loss, method="bounded", bounds=(-_LOG_TEMPERATURE_BOUND, _LOG_TEMPERATURE_BOUND),
                            options={"xatol": 1e-6})
    return math.exp(float(found.x))


def temperature_scaled_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """Mean cross-entropy and ECE of softmax(logits / temperature) (accuracy does not change: argmax is kept)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    logp = log_softmax(logits / temperature)
    return {"loss": mean_cross_entropy(logp, labels), "ece": metrics.expected_calibration_error(np.exp(logp), labels)}
