"""Temperature scaling and ECE: known answers, and a temperature that lowers the error of an overconfident model."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.evaluate.calibration import ece, fit_temperature, nll, softmax


def test_ece_known_answers() -> None:
    # two bins used: confidence 0.9 (4 examples, 3 right: |0.75 - 0.9| = 0.15) and 0.6 (2 examples, both right:
    # |1.0 - 0.6| = 0.4); ECE = 4/6 * 0.15 + 2/6 * 0.4
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    labels = np.array([0, 0, 0, 1, 0, 0])
    assert ece(probs, labels) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.4)
    assert ece(np.array([[0.5, 0.5]] * 4), np.array([0, 1, 0, 1])) == pytest.approx(0.0)  # 50% sure, 50% right
    assert ece(np.array([[1.0, 0.0]]), np.array([0])) == 0.0  # confidence 1.0 falls in the last bin
    assert np.isnan(ece(np.zeros((0, 2)), np.zeros(0, dtype=int)))


def test_a_fitted_temperature_undoes_overconfidence_and_lowers_ece() -> None:
    rng = np.random.default_rng(0)
    calibrated = rng.normal(size=(4000, 5)) * 1.5  # labels drawn from these logits' own softmax: calibrated
    labels = np.array([rng.choice(5, p=p) for p in softmax(calibrated)])
    overconfident = calibrated * 3.0  # the same model, three times too sure
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(overconfident, labels, t) < nll(overconfident, labels)
    before, after = ece(softmax(overconfident), labels), ece(softmax(overconfident, t), labels)
    assert after < before / 3 and after < 0.03
    assert (softmax(overconfident, t).argmax(1) == overconfident.argmax(1)).all()  # predictions never change
