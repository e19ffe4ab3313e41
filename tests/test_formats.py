"""Every competition format through the CLIs: the file the metric needs, thresholds fit on the
out-of-fold rows, CV as submitted, the leaderboard scored on the file as written, and refusals
of targets that are not classification."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import draw, image_config, make_table_competition, table_config, write_yaml
from PIL import Image

from competition import predict, train
from competition.config import load_config
from competition.core.metrics import METRICS
from competition.data.pseudo import read_pseudo_labels
from competition.tasks import open_competition


def _run(capsys, cfg: Path, *extra: str) -> str:
    assert train.main(["--config", str(cfg), "--fold", "all", *extra]) == 0
    capsys.readouterr()
    return _predict(capsys, cfg, *extra)


def _predict(capsys, cfg: Path, *extra: str) -> str:
    assert predict.main(["--config", str(cfg), *extra]) == 0
    return capsys.readouterr().out


def _submission(tmp_path: Path) -> pd.DataFrame:
    """The newest submission (two predicts in one second share the time in their names)."""
    return pd.read_csv(max((tmp_path / "submissions").glob("*.csv"), key=lambda p: p.stat().st_mtime_ns))


def _cv(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "outputs" / name / "cv.json").read_text())


def _leaderboard(out: str) -> float:
    line = next(x for x in out.splitlines() if x.startswith("local leaderboard"))
    return float(line.split(":")[1].split()[0])


# --- binary: the positive class's probability, or labels at a threshold fit on OOF ----------


def _binary_images(root: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        kind = "circle" if i % 2 else "square"
        Image.fromarray(draw(kind, rng)).save(root / "images" / f"{i}.png")
        rows.append({"id": f"p{i}", "image": f"images/{i}.png", "target": int(kind == "circle")})
    df = pd.DataFrame(rows)
    df.iloc[:30].to_csv(root / "train.csv", index=False)
    df.iloc[30:][["id", "image"]].to_csv(root / "test.csv", index=False)
    df.iloc[30:][["id"]].assign(target=0).to_csv(root / "sample_submission.csv", index=False)
    df.iloc[30:][["id", "target"]].to_csv(root / "solution.csv", index=False)
    return root


@pytest.mark.slow
def test_a_binary_auc_competition_submits_probabilities_and_scores_the_file(tmp_path, capsys):
    root = _binary_images(tmp_path / "data" / "melanoma")
    cfg = write_yaml(tmp_path / "m.yaml", image_config(tmp_path, root, name="melanoma",
                                                      data={"root": str(root), "target_column": "target"},
                                                      train={"metric": "roc_auc"}))
    out = _run(capsys, cfg)
    sub, solution = _submission(tmp_path), pd.read_csv(root / "solution.csv")
    assert _cv(tmp_path, "melanoma")["layout"] == "positive_probability"
    assert sub["target"].between(0, 1).all() and not sub["target"].isin([0, 1]).all()  # not hard labels
    # The leaderboard line is the AUC of the file as written against the answers.
    truth = solution.set_index("id").loc[sub["id"], "target"].to_numpy()
    auc = METRICS["roc_auc"](truth, np.stack([1 - sub["target"], sub["target"]], 1))
    assert _leaderboard(out) == pytest.approx(auc, abs=1e-5)
    # The same models written as labels: the leaderboard scores those hard labels, as Kaggle would.
    out = _predict(capsys, cfg, "--set", "predict.output=labels")
    labels = _submission(tmp_path)
    assert set(labels["target"]) <= {0, 1}
    hard = METRICS["roc_auc"](truth, np.eye(2)[labels.set_index("id").loc[sub["id"], "target"]])
    assert _leaderboard(out) == pytest.approx(hard, abs=1e-5)


def test_f1_labels_use_the_threshold_fit_on_out_of_fold_rows(tmp_path, capsys):
    root = make_table_competition(tmp_path / "data" / "table", n_train=160, n_test=40)
    cfg = write_yaml(tmp_path / "t.yaml", table_config(tmp_path, root, train={"metric": "f1", "epochs": 3}))
    _run(capsys, cfg)
    report = _cv(tmp_path, "table")
    (threshold,) = report["as_submitted"]["thresholds"]
    assert report["as_submitted"]["thresholds_fit_on"] == "the other folds' rows"
    labels = _submission(tmp_path)
    # --no-cv (what a packaged notebook runs) decides at the thresholds stored in cv.json.
    stored = (tmp_path / "outputs" / "table" / "cv.json").read_text()
    assert predict.main(["--config", str(cfg), "--no-cv", "--output", str(tmp_path / "no_cv.csv")]) == 0
    assert pd.read_csv(tmp_path / "no_cv.csv").equals(labels)
    assert (tmp_path / "outputs" / "table" / "cv.json").read_text() == stored
    _predict(capsys, cfg, "--set", "predict.output=probabilities")  # the same folds' probabilities
    probs = _submission(tmp_path)
    assert (labels["target"] == (probs["target"] >= threshold).astype(int)).all()
    (tmp_path / "outputs" / "table" / "cv.json").unlink()
    capsys.readouterr()
    _refused(capsys, predict.main(["--config", str(cfg), "--no-cv"]), "--no-cv", "thresholds", "cv.json")


def test_the_f1_threshold_is_the_best_on_the_rows_it_is_fit_on():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(0.3 * y + rng.normal(0.35, 0.2, 300), 0, 1)
    probs = np.stack([1 - p1, p1], 1)
    f1 = METRICS["f1"]
    (t,) = f1.fit_thresholds(y, probs)
    best_anywhere = max(f1(y, probs, [c]) for c in np.unique(p1))
    assert f1(y, probs, [t]) == pytest.approx(best_anywhere)
    assert f1(y, probs, [t]) > f1(y, probs, [0.5])


def test_cv_as_submitted_matches_the_best_epochs_without_tta_or_thresholds(table_comp, tmp_path, capsys):
    cfg, _ = table_comp
    out = _run(capsys, cfg)
    report = _cv(tmp_path, "table")
    assert report["as_submitted"]["cv"] == pytest.approx(report["cv"])
    assert report["as_submitted"]["folds"] == pytest.approx(report["folds"])
    assert "as submitted" in out


# --- multi-label ----------------------------------------------------------------------------

SHAPES = ["circle", "cross", "square"]


def _multi_label_images(root: Path, n: int = 48, columns: bool = False) -> Path:
    """48x24 pictures: a shape or nothing in each half; the labels are the shapes present."""
    rng = np.random.default_rng(2)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        halves, labels = [], set()
        for side in (i % 4, (i // 4) % 4):
            if side == 3:
                halves.append(rng.integers(0, 60, (24, 24, 3)).astype(np.uint8))
            else:
                halves.append(draw(SHAPES[side], rng))
                labels.add(SHAPES[side])
        Image.fromarray(np.concatenate(halves, 1)).save(root / "images" / f"{i}.png")
        row = {"id": i, "image": f"images/{i}.png"}
        row.update({s: int(s in labels) for s in SHAPES} if columns else {"tags": " ".join(sorted(labels))})
        rows.append(row)
    df = pd.DataFrame(rows)
    answers = SHAPES if columns else ["tags"]
    df.iloc[:36].to_csv(root / "train.csv", index=False)
    df.iloc[36:][["id", "image"]].to_csv(root / "test.csv", index=False)
    df.iloc[36:][["id"]].assign(**({s: 0 for s in SHAPES} if columns else {"tags": ""})).to_csv(
        root / "sample_submission.csv", index=False)
    df.iloc[36:][["id", *answers]].to_csv(root / "solution.csv", index=False)
    return root


@pytest.mark.slow
def test_separated_multi_labels_end_to_end(tmp_path, capsys):
    root = _multi_label_images(tmp_path / "data" / "planet")
    assert (pd.read_csv(root / "train.csv")["tags"].isna()).any()  # some rows have no label at all
    cfg = write_yaml(tmp_path / "p.yaml", image_config(
        tmp_path, root, name="planet", data={"root": str(root), "target_column": "tags", "target_format": "multi_label"},
        folds={"n_splits": 2, "strategy": "multilabel_stratified"}, train={"metric": "f1_samples", "epochs": 2}))
    out = _run(capsys, cfg)
    sub, report = _submission(tmp_path), _cv(tmp_path, "planet")
    assert report["layout"] == "separated_labels" and len(report["as_submitted"]["thresholds"]) == 3
    tokens = {t for cell in sub["tags"].fillna("") for t in cell.split()}
    assert tokens <= set(SHAPES)
    solution = pd.read_csv(root / "solution.csv").set_index("id").loc[sub["id"]]
    truth = np.array([[s in str(c).split() for s in SHAPES] for c in solution["tags"].fillna("")], dtype=int)
    held = np.array([[s in str(c).split() for s in SHAPES] for c in sub["tags"].fillna("")], dtype=int)
    assert _leaderboard(out) == pytest.approx(METRICS["f1_samples"](truth, held), abs=1e-5)
    oof = pd.read_csv(tmp_path / "outputs" / "planet" / "fold0" / "oof.csv")
    assert {"tags", "prob_circle", "prob_cross", "prob_square"} <= set(oof.columns)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "outputs" / "planet" / "fold0" / "tb")).Reload()
    assert "val/per_class_f1" in events.Tags()["images"]
    page = (tmp_path / "outputs" / "planet" / "report.html").read_text()  # the report's multi-label form
    assert "Per-class F1 (support)" in page and page.count("data:image/png") >= 5


@pytest.mark.slow
def test_multi_label_class_columns_get_a_probability_per_class(tmp_path, capsys):
    root = _multi_label_images(tmp_path / "data" / "leaves", columns=True)
    cfg = write_yaml(tmp_path / "l.yaml", image_config(
        tmp_path, root, name="leaves", data={"root": str(root), "target_format": "multi_label", "target_columns": SHAPES},
        folds={"n_splits": 2, "strategy": "kfold"}, train={"metric": "mean_roc_auc"}))
    out = _run(capsys, cfg)
    sub = _submission(tmp_path)
    assert list(sub.columns) == ["id", *SHAPES] and sub[SHAPES].stack().between(0, 1).all()
    assert _cv(tmp_path, "leaves")["layout"] == "class_probabilities" and "local leaderboard mean_roc_auc" in out


# --- the sample's layout, checked before the first fold trains ---------------------------------


def test_a_sample_whose_target_column_has_another_name_is_refused_until_named(tmp_path, capsys):
    root = make_table_competition(tmp_path / "data" / "table")
    sample = pd.read_csv(root / "sample_submission.csv").rename(columns={"target": "Survived"})
    sample.to_csv(root / "sample_submission.csv", index=False)
    test = pd.read_csv(root / "test.csv")  # the answers follow from x1 and color (conftest)
    answers = test[["key"]].assign(target=((test["x1"] + (test["color"] == "red") * 1.5) > 0.5).astype(int))
    answers.to_csv(root / "solution.csv", index=False)
    cfg = write_yaml(tmp_path / "t.yaml", table_config(tmp_path, root, data={"solution": "solution.csv"}))
    _refused(capsys, train.main(["--config", str(cfg)]), "sample submission columns ['key', 'Survived']",
             "set data.sample_target_column: Survived")
    assert not (tmp_path / "outputs").exists()  # before the first fold, not after the last
    out = _run(capsys, cfg, "--set", "data.sample_target_column=Survived", "--set", "train.epochs=1")
    sub = _submission(tmp_path)
    assert list(sub.columns) == ["key", "Survived"] and set(sub["Survived"]) <= {0, 1}
    truth = answers.set_index("key").loc[sub["key"], "target"].to_numpy()
    assert _leaderboard(out) == pytest.approx((sub["Survived"].to_numpy() == truth).mean(), abs=1e-5)  # read back by name


def test_pseudo_labels_read_a_submission_under_the_samples_column_name(table_comp, tmp_path):
    cfg_path, root = table_comp
    sample = pd.read_csv(root / "sample_submission.csv").rename(columns={"target": "Survived"})
    sample.to_csv(root / "sample_submission.csv", index=False)
    sample.assign(Survived=0.8).to_csv(tmp_path / "pseudo.csv", index=False)  # what predict wrote
    cfg = load_config(str(cfg_path), ["data.sample_target_column=Survived", f"data.pseudo_labels={tmp_path / 'pseudo.csv'}"])
    _, comp = open_competition(cfg)
    assert np.allclose(read_pseudo_labels(cfg, comp).targets[:, 1], 0.8)


def test_a_sample_missing_a_class_column_is_refused_before_the_first_fold(tmp_path, capsys):
    root = _multi_label_images(tmp_path / "data" / "leaves", columns=True)
    pd.read_csv(root / "sample_submission.csv").drop(columns="square").to_csv(root / "sample_submission.csv", index=False)
    cfg = write_yaml(tmp_path / "l.yaml", image_config(
        tmp_path, root, name="leaves", data={"root": str(root), "target_format": "multi_label", "target_columns": SHAPES},
        folds={"n_splits": 2, "strategy": "kfold"}, train={"metric": "mean_roc_auc"}))
    _refused(capsys, train.main(["--config", str(cfg)]), "sample submission columns ['id', 'circle', 'cross']",
             "no column for class 'square'")
    assert not (tmp_path / "outputs" / "leaves").exists()


# --- what is not classification -------------------------------------------------------------


def _refused(capsys, code: int, *culprits: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    for culprit in culprits:
        assert culprit in err, err


def _table_with(tmp_path: Path, values, **cfg_data) -> Path:
    root = make_table_competition(tmp_path / "data" / "table")
    train_df = pd.read_csv(root / "train.csv")
    train_df["target"] = (list(values) * len(train_df))[: len(train_df)]
    train_df.to_csv(root / "train.csv", index=False)
    cfg = table_config(tmp_path, root)
    cfg["data"].update(cfg_data)
    return write_yaml(tmp_path / "t.yaml", cfg)


@pytest.mark.parametrize(("values", "data", "culprits"), [
    ([0.25, 1.5, 3.0], {}, ["train.csv line", "'target'", "0.25", "regression"]),
    (range(200), {"max_classes": 50}, ["'target' has 120 distinct values", "data.max_classes (50)"]),
    (["cat", "dog", "cat dog"], {}, ["'cat dog'", "several labels", "data.target_format: multi_label"]),
    ([0, 1], {"positive_class": 2}, ["data.positive_class", "2 is not one of the classes"]),
])
def test_targets_that_are_not_classification_are_refused(tmp_path, capsys, values, data, culprits):
    cfg = _table_with(tmp_path, values, **data)
    _refused(capsys, train.main(["--config", str(cfg)]), *culprits)
    assert not (tmp_path / "outputs").exists()


def test_a_class_name_with_a_space_is_still_one_class(tmp_path, capsys):
    cfg = _table_with(tmp_path, ["golden retriever", "poodle"])
    assert train.main(["--config", str(cfg), "--fold", "0"]) == 0


@pytest.mark.parametrize(("sets", "culprits"), [
    (["train.metric=f1_samples"], ["train.metric", "f1_samples does not score a single target", "accuracy"]),
    (["train.metric=f1", "data.target_column=color"], ["f1 scores a binary target", "3 classes"]),
    (["data.target_format=multi_label", "train.metric=log_loss"], ["folds.strategy", "multilabel_stratified"]),
])
def test_a_metric_or_split_that_does_not_fit_the_target_is_refused(table_comp, tmp_path, capsys, sets, culprits):
    cfg, _ = table_comp
    args = ["--config", str(cfg)] + [a for s in sets for a in ("--set", s)]
    _refused(capsys, train.main(args), *culprits)
