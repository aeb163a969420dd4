"""The model's fast linear scoring gives scikit-learn's probabilities, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from bench.rules import feature_rows
from models.artifact import DEFAULT_DIR, load_model
from models.features import model_matrix


def test_fast_scores_equal_predict_proba_for_every_batch_size() -> None:
    model = load_model(DEFAULT_DIR)
    assert model._linear() is not None  # the shipped model is scaler + logistic regression
    rows = feature_rows(1500)
    for size in (1, 2, 3, 17, 500):
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            reference = model.estimator.predict_proba(model_matrix(batch))[:, 1]
            assert np.array_equal(model.predict(batch), reference)


def test_non_finite_features_still_go_through_scikit_learn() -> None:
    model = load_model(DEFAULT_DIR)
    row = dict(feature_rows(1)[0])
    row["amount_to_customer_avg_30d"] = float("inf")
    with pytest.raises(ValueError):
        model.predict([row])


def test_other_estimators_have_no_fast_path() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from models.artifact import _linear_scorer

    x = np.random.default_rng(0).random((40, 3))
    y = np.arange(40) % 2
    assert _linear_scorer(HistGradientBoostingClassifier(max_iter=3).fit(x, y)) is None
