"""Metrics beyond accuracy: known answers, and a class that is never predicted."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.evaluate import classification_report, score


def test_a_class_never_predicted_shows_in_macro_f1_and_balanced_accuracy_not_in_accuracy() -> None:
    y = np.array([0] * 90 + [1] * 10)
    always_zero = np.zeros(100, dtype=int)
    assert score("accuracy", y, always_zero) == pytest.approx(0.9)
    assert score("balanced_accuracy", y, always_zero) == pytest.approx(0.5)  # recalls 1 and 0
    assert score("macro_f1", y, always_zero) == pytest.approx((2 * 0.9 / 1.9 + 0) / 2)  # F1 of class 0: 2PR/(P+R)
    report = classification_report(y, always_zero, ["common", "rare"])
    assert report["recall"] == {"common": 1.0, "rare": 0.0}
    assert report["confusion"] == [[90, 0], [10, 0]]


def test_known_answers_on_three_classes() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    assert score("accuracy", y, pred) == pytest.approx(4 / 6)
    assert score("balanced_accuracy", y, pred) == pytest.approx((0.5 + 1 + 0.5) / 3)
    f1 = [2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5]  # P, R per class: (1/2, 1/2), ...
    assert score("macro_f1", y, pred) == pytest.approx(sum(f1) / 3)
    assert classification_report(y, pred, ["a", "b", "c", "d"])["recall"]["d"] is None  # absent: no recall


def test_the_linear_probe_head_gives_the_logistic_regressions_logits_and_probabilities() -> None:
    """LP-FT's head on raw features equals scikit-learn's fit on standardised ones: the same decision values (three
    classes), the same probabilities (two classes, one logit split in two), a class never seen far below."""
    import numpy as np

    from transferlab.evaluate.logreg import fit_linear, linear_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) * [1, 10, 100, 0.1] + [5, -3, 50, 0]
    y = (x[:, 0] - 5 + (x[:, 1] + 3) / 10 > 0).astype(int) + (x[:, 2] > 50).astype(int)
    weight, bias, c = linear_head(x, y, 3)
    mean, std = x.mean(0), x.std(0)
    model, c2, _ = fit_linear((x - mean) / std, y)
    assert c == c2 and np.allclose(x @ weight.T + bias, model.decision_function((x - mean) / std), atol=1e-8)

    yb = (y > 0).astype(int)
    weight, bias, _ = linear_head(x, yb, 3)  # class 2 never seen
    model, _, _ = fit_linear((x - mean) / std, yb)
    z = x @ weight.T + bias
    p = np.exp(z[:, :2] - z[:, :2].max(1, keepdims=True))
    assert np.allclose(p / p.sum(1, keepdims=True), model.predict_proba((x - mean) / std), atol=1e-8)
    assert (weight[2] == 0).all() and bias[2] == bias[:2].min() - 10


def test_a_constant_feature_never_amplifies_the_probe_head() -> None:
    """MiniLM's sentence embeddings of 80 glosses had columns at std 1e-33 and 5e-9 (values near 0, float32
    noise): divided by them, the folded head's weights reached 1e6 and the first fine-tuning step, with dropout
    moving those features, had a loss of 84. Such columns are constant: their weights stay those of a 0."""
    import numpy as np

    from transferlab.evaluate.logreg import linear_head

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4))
    x[:, 2] = np.where(np.arange(40) % 2, 1e-33, 0.0)  # constant up to float rounding (std 5e-34)
    x[:, 3] = rng.normal(size=40) * 5e-9 - 2e-8  # float32 noise near 0, next to features of scale 1
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    weight, bias, _ = linear_head(x, y, 3)
    assert np.isfinite(weight).all() and np.abs(weight[:, 2:]).max() < 1e3
    moved = x.copy()
    moved[:, 2:] += 0.01  # what dropout does to them
    assert np.abs(moved @ weight.T - x @ weight.T).max() < 10
