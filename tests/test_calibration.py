"""Temperature scaling: the fitted temperature undoes a known over-confidence and never changes a prediction."""

from __future__ import annotations


import numpy as np
import pytest

from flaxbench import calibration, metrics
from flaxbench.evaluation import split_metrics


def _tiles_drawn_from(logits: np.ndarray, seed: int = 0) -> np.ndarray:
    """A true class per tile, drawn from softmax(logits): those logits are calibrated by construction."""
    rng = np.random.default_rng(seed)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probabilities])


def test_the_fitted_temperature_undoes_a_known_over_confidence():
    calibrated = np.random.default_rng(1).normal(0.0, 1.5, (20000, 5))
    labels = _tiles_drawn_from(calibrated)
    for factor in (3.0, 0.5):  # over- and under-confident by that factor
        assert calibration.fit_temperature(factor * calibrated, labels) == pytest.approx(factor, rel=0.05)


def test_scaling_lowers_loss_and_ece_of_over_confident_logits_and_keeps_the_predictions():
    calibrated = np.random.default_rng(2).normal(0.0, 1.5, (4000, 4))
    labels = _tiles_drawn_from(calibrated, seed=2)
    over = 4.0 * calibrated
    plain = split_metrics(over, labels, list("abcd"), [str(i) for i in range(len(labels))])
    temperature = calibration.fit_temperature(over, labels)
    scaled = calibration.temperature_scaled_metrics(over, labels, temperature)
    assert scaled["loss"] < plain["loss"] and scaled["ece"] < 0.5 * plain["ece"]
    unscaled = calibration.temperature_scaled_metrics(over, labels, 1.0)
    assert unscaled["loss"] == pytest.approx(plain["loss"]) and unscaled["ece"] == pytest.approx(plain["ece"])
    # Dividing logits by a positive number keeps each tile's top class: accuracy is unchanged.
    probabilities = np.exp(over / temperature)
    assert np.array_equal(probabilities.argmax(axis=1), over.argmax(axis=1))
    assert metrics.expected_calibration_error(probabilities / probabilities.sum(1, keepdims=True), labels) == \
        pytest.approx(scaled["ece"])


def test_tiles_that_leave_the_temperature_undetermined_stop_at_the_bound():
    # Every tile right: the loss keeps falling as the temperature does, until it is flat in float64 near the
    # search's bound of 1/50.
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert 1 / 50 <= calibration.fit_temperature(logits, np.array([0, 1, 0])) < 0.05


@pytest.mark.parametrize(("logits", "labels"), [(np.zeros((0, 3)), np.zeros(0)), (np.zeros((4, 3)), np.zeros(3)),
                                                (np.zeros(4), np.zeros(4))])
def test_logits_and_labels_that_do_not_match_are_refused(logits, labels):
    with pytest.raises(ValueError, match="need logits"):
        calibration.fit_temperature(logits, labels)
