"""Submissions follow sample_submission.csv exactly, in the layout the metric needs; a wrong one is
never written, and a written one reads back as the leaderboard reads it."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from competition.core.errors import CompetitionError
from competition.core.metrics import METRICS
from competition.data.targets import Target
from competition.inference.submission import (
    make_submission,
    read_back,
    render,
    submission_layout,
    submission_path,
    validate_submission,
)

BINARY = Target("single", [0, 1], "Survived")
ANIMALS = Target("single", ["cat", "dog"], "label")
THREE = Target("single", ["a", "b", "c"], "label")
TAGS = Target("multi_label", ["haze", "road", "water"], "tags")
LEAVES = Target("multi_label", ["healthy", "rust", "scab"], None, ["healthy", "rust", "scab"])


def _write(sample, test_ids, probs, target, metric="accuracy", output="auto", thresholds=None, id_column="id"):
    layout = submission_layout(sample, id_column, target, metric, output)
    sub = make_submission(sample, test_ids, render(layout, probs, target, thresholds), layout, target)
    validate_submission(sub, sample, id_column)
    return layout, sub


def test_labels_in_sample_order_with_original_values():
    sample = pd.DataFrame({"PassengerId": [903, 901, 902], "Survived": [0, 0, 0]})
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    layout, sub = _write(sample, [901, 902, 903], probs, BINARY, id_column="PassengerId")
    assert layout.kind == "labels"
    assert list(sub.columns) == ["PassengerId", "Survived"]
    assert sub["PassengerId"].tolist() == [903, 901, 902]
    assert sub["Survived"].tolist() == [1, 0, 1]


def test_a_binary_probability_metric_gets_the_positive_class_probability():
    # The SIIM-ISIC layout: id,target scored by AUC. Hard labels would throw most of it away.
    sample = pd.DataFrame({"id": ["b", "a"], "Survived": [0, 0]})
    probs = np.array([[0.7, 0.3], [0.1, 0.9]])
    for metric in ("roc_auc", "log_loss"):
        layout, sub = _write(sample, ["a", "b"], probs, BINARY, metric=metric)
        assert layout.kind == "positive_probability" and sub["Survived"].tolist() == [0.9, 0.3]
    # predict.output overrides the choice either way.
    assert _write(sample, ["a", "b"], probs, BINARY, metric="roc_auc", output="labels")[1]["Survived"].tolist() == [1, 0]
    assert _write(sample, ["a", "b"], probs, BINARY, output="probabilities")[0].kind == "positive_probability"


def test_string_labels_and_probability_samples():
    sample = pd.DataFrame({"id": ["b", "a"], "cat": [0.5, 0.5], "dog": [0.5, 0.5]})
    probs = np.array([[0.7, 0.3], [0.1, 0.9]])
    layout, sub = _write(sample, ["a", "b"], probs, ANIMALS)
    assert layout.kind == "class_probabilities"
    assert sub.to_dict("list") == {"id": ["b", "a"], "cat": [0.1, 0.7], "dog": [0.9, 0.3]}
    labels = _write(pd.DataFrame({"id": ["b", "a"], "label": ["x", "x"]}), ["a", "b"], probs, ANIMALS)[1]
    assert labels["label"].tolist() == ["dog", "cat"]
    one_hot = _write(sample, ["a", "b"], probs, ANIMALS, output="labels")[1]
    assert one_hot.to_dict("list") == {"id": ["b", "a"], "cat": [0, 1], "dog": [1, 0]}


def test_multi_label_layouts_separated_labels_and_class_columns():
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.3, 0.2], [0.4, 0.8, 0.1]])
    sample = pd.DataFrame({"id": [1, 2, 3], "tags": ["", "", ""]})
    layout, sub = _write(sample, [1, 2, 3], probs, TAGS, metric="f1_samples")
    assert layout.kind == "separated_labels"
    assert sub["tags"].tolist() == ["haze water", "", "road"]  # an empty label set is a valid row
    # Per-class thresholds decide each class on its own.
    tuned = _write(sample, [1, 2, 3], probs, TAGS, metric="f1_samples", thresholds=[0.95, 0.25, 0.5])[1]
    assert tuned["tags"].tolist() == ["water", "road", "road"]
    columns = pd.DataFrame({"id": [1, 2, 3], "healthy": 0, "rust": 0, "scab": 0})
    assert _write(columns, [1, 2, 3], probs, LEAVES, metric="mean_roc_auc")[1]["rust"].tolist() == [0.2, 0.3, 0.8]
    assert _write(columns, [1, 2, 3], probs, LEAVES, output="labels")[1]["healthy"].tolist() == [1, 0, 0]
    with pytest.raises(CompetitionError, match="not a probability per class"):
        _write(sample, [1, 2, 3], probs, TAGS, output="probabilities")


@pytest.mark.parametrize(("target", "sample", "metric"), [
    (BINARY, pd.DataFrame({"id": [1, 2, 3], "Survived": 0}), "accuracy"),
    (BINARY, pd.DataFrame({"id": [1, 2, 3], "Survived": 0}), "roc_auc"),
    (THREE, pd.DataFrame({"id": [1, 2, 3], "a": 0.0, "b": 0.0, "c": 0.0}), "log_loss"),
    (TAGS, pd.DataFrame({"id": [1, 2, 3], "tags": ""}), "f1_samples"),
    (LEAVES, pd.DataFrame({"id": [1, 2, 3], "healthy": 0, "rust": 0, "scab": 0}), "mean_roc_auc"),
])
def test_every_layout_reads_back_from_disk_as_it_was_rendered(tmp_path, target, sample, metric):
    probs = np.random.default_rng(0).dirichlet(np.ones(len(target.classes)), 3)
    layout, sub = _write(sample, [1, 2, 3], probs, target, metric=metric)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    back = read_back(layout, pd.read_csv(tmp_path / "sub.csv"), target)
    np.testing.assert_array_equal(back, render(layout, probs, target, None))


def test_unusable_sample_columns_are_named():
    sample = pd.DataFrame({"id": [1], "something": [0]})
    with pytest.raises(CompetitionError, match=r"expected 'id' plus 'label', or 'id' plus one column per class"):
        submission_layout(sample, "id", ANIMALS, "accuracy", "auto")
    with pytest.raises(CompetitionError, match="one probability column per class needed"):
        submission_layout(pd.DataFrame({"id": [1], "label": ["a"]}), "id", THREE, "accuracy", "probabilities")


def test_the_samples_own_target_column_name_is_written_and_read_back(tmp_path):
    sample = pd.DataFrame({"id": [2, 1], "prediction": ["x", "x"]})
    with pytest.raises(CompetitionError, match="set data.sample_target_column: prediction"):
        submission_layout(sample, "id", TAGS, "f1_samples", "auto")
    with pytest.raises(CompetitionError, match="data.sample_target_column: the sample submission has no column 'tags'"):
        submission_layout(sample, "id", TAGS, "f1_samples", "auto", "tags")
    layout = submission_layout(sample, "id", TAGS, "f1_samples", "auto", "prediction")
    probs = np.array([[0.9, 0.1, 0.8], [0.2, 0.7, 0.1]])
    sub = make_submission(sample, [1, 2], render(layout, probs, TAGS, [0.5] * 3), layout, TAGS)
    assert list(sub.columns) == ["id", "prediction"] and sub["prediction"].tolist() == ["road", "haze water"]
    sub.to_csv(tmp_path / "sub.csv", index=False)
    assert read_back(layout, pd.read_csv(tmp_path / "sub.csv"), TAGS).tolist() == [[0, 1, 0], [1, 0, 1]]


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
    assert METRICS["f1"](y, p) == 1.0
    assert METRICS["log_loss"](y, p) < METRICS["log_loss"](y, p[:, ::-1])
    assert METRICS["log_loss"].better(0.1, 0.2) and METRICS["accuracy"].better(0.9, 0.8)
    assert not METRICS["log_loss"].better(0.3, 0.2)
    multi = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    q = np.array([[0.9, 0.1], [0.2, 0.7], [0.8, 0.6], [0.1, 0.3]])
    for name in ("f1_samples", "f1_micro", "mean_roc_auc"):
        assert METRICS[name](multi, q) == 1.0, name
    assert METRICS["log_loss"](multi, q) < METRICS["log_loss"](multi, 1 - q)
