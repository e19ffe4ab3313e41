"""Submissions follow sample_submission.csv exactly; a wrong one is never written."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from competition.core.errors import CompetitionError
from competition.core.metrics import METRICS
from competition.inference.submission import make_submission, submission_path, validate_submission


def test_labels_in_sample_order_with_original_values():
    sample = pd.DataFrame({"PassengerId": [903, 901, 902], "Survived": [0, 0, 0]})
    test_ids = [901, 902, 903]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    sub = make_submission(sample, test_ids, probs, [0, 1], "PassengerId", "Survived")
    assert list(sub.columns) == ["PassengerId", "Survived"]
    assert sub["PassengerId"].tolist() == [903, 901, 902]
    assert sub["Survived"].tolist() == [1, 0, 1]
    validate_submission(sub, sample, "PassengerId")


def test_string_labels_and_probability_samples():
    sample = pd.DataFrame({"id": ["b", "a"], "cat": [0.5, 0.5], "dog": [0.5, 0.5]})
    probs = np.array([[0.7, 0.3], [0.1, 0.9]])
    sub = make_submission(sample, ["a", "b"], probs, ["cat", "dog"], "id", "label")
    assert sub.to_dict("list") == {"id": ["b", "a"], "cat": [0.1, 0.7], "dog": [0.9, 0.3]}
    labels = make_submission(pd.DataFrame({"id": ["b", "a"], "label": ["x", "x"]}), ["a", "b"], probs,
                             ["cat", "dog"], "id", "label")
    assert labels["label"].tolist() == ["dog", "cat"]


def test_unusable_sample_columns_are_named():
    sample = pd.DataFrame({"id": [1], "something": [0]})
    with pytest.raises(CompetitionError, match=r"expected 'id' plus 'label'"):
        make_submission(sample, [1], np.array([[0.5, 0.5]]), [0, 1], "id", "label")


def test_validation_catches_count_ids_order_and_missing_values():
    sample = pd.DataFrame({"id": [1, 2, 3], "label": [0, 0, 0]})
    good = sample.assign(label=[1, 0, 1])
    validate_submission(good, sample, "id")
    with pytest.raises(CompetitionError, match="sample_submission.csv has 3 rows, the submission 2"):
        validate_submission(good.iloc[:2], sample, "id")
    with pytest.raises(CompetitionError, match="ids differ"):
        validate_submission(good.assign(id=[1, 2, 4]), sample, "id")
    with pytest.raises(CompetitionError, match="row 1 has id 2"):
        validate_submission(good.iloc[[1, 0, 2]], sample, "id")
    with pytest.raises(CompetitionError, match="column 'label' has missing values"):
        validate_submission(good.assign(label=[1, None, 0]), sample, "id")
    with pytest.raises(CompetitionError, match="columns"):
        validate_submission(good.rename(columns={"label": "target"}), sample, "id")


def test_submission_name_carries_time_and_cv():
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert submission_path("submissions", "digits", 0.98765, when).name == "digits-20260102-030405-cv0.98765.csv"


def test_metrics_know_their_direction():
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]])
    assert METRICS["accuracy"](y, p) == 1.0
    assert METRICS["roc_auc"](y, p) == 1.0
    assert METRICS["f1_macro"](y, p) == 1.0
    assert METRICS["log_loss"](y, p) < METRICS["log_loss"](y, p[:, ::-1])
    assert METRICS["log_loss"].better(0.1, 0.2) and METRICS["accuracy"].better(0.9, 0.8)
    assert not METRICS["log_loss"].better(0.3, 0.2)
