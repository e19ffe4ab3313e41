"""LightGBM, CatBoost and XGBoost for tables: folds stored as the library's own text (no pickle,
no refit), categorical columns as categories, missing values left to the library, early stopping,
and the same predict, blend and package as every other model."""
from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_table_competition, refused, table_config, write_yaml

from competition import blend, board, package, predict, train
from competition.config import load_config
from competition.data.features import TabularPreprocessor
from competition.models.gbdt import gbdt_params, stopping_rounds
from competition.models.gbdt_libraries import LIBRARIES

# Few rounds and small leaves: the table has 60 training rows per fold.
SMALL = {
    "lightgbm": ["model.params.num_iterations=60", "model.params.min_data_in_leaf=5", "model.params.min_data_per_group=5"],
    "catboost": ["model.params.iterations=60", "model.params.depth=4"],
    "xgboost": ["model.params.num_boost_round=60"],
}
# How each library's own text says that `color` (feature 2: x1, x2, then color) is a category.
CATEGORICAL = {
    "lightgbm": lambda text: "categorical_feature=2" in text or "[categorical_feature: 2]" in text,
    "catboost": lambda text: [f["flat_feature_index"] for f in json.loads(text)["features_info"]["categorical_features"]] == [2],
    "xgboost": lambda text: json.loads(text)["learner"]["feature_types"] == ["q", "q", "c"],
}


def _with_missing_colors(root) -> None:
    """Some rows of the categorical column left empty, in train.csv and test.csv."""
    for name in ("train.csv", "test.csv"):
        rows = pd.read_csv(root / name)
        rows.loc[rows.index % 9 == 4, "color"] = np.nan
        rows.to_csv(root / name, index=False)


def _sets(cfg, name: str) -> list[str]:
    sets = ["--config", str(cfg), "--set", f"name={name}", "--set", f"model.name={name}", "--set", "train.patience=10"]
    for s in SMALL[name]:
        sets += ["--set", s]
    return sets


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The tiny table (missing numbers and categories) trained and predicted by each library."""
    tmp = tmp_path_factory.mktemp("gbdt")
    root = make_table_competition(tmp / "data" / "table")
    _with_missing_colors(root)
    cfg = write_yaml(tmp / "table.yaml", table_config(tmp, root))
    for name in LIBRARIES:
        assert train.main(_sets(cfg, name)) == 0, name
        assert predict.main([*_sets(cfg, name), "--output", str(tmp / f"{name}.csv")]) == 0, name
    return {"tmp": tmp, "root": root, "config": cfg, "outputs": tmp / "outputs"}


@pytest.mark.parametrize("name", list(LIBRARIES))
def test_each_fold_stores_the_library_s_own_text_with_its_categories(runs, name):
    for k in (0, 1):
        state = torch.load(runs["outputs"] / name / f"fold{k}" / "best.pt", weights_only=True)  # no pickle needed
        stored = state["model_state_dict"]["_extra_state"]
        assert stored["library"] == name and isinstance(stored["text"], str)
        assert CATEGORICAL[name](stored["text"]), "color reached the library as a category, not one-hot"
        assert 1 <= stored["best_iteration"] <= 60  # early stopping's best round, kept
        assert state["preprocessor"]["native"] and state["in_features"] == 3


def test_predict_uses_the_stored_models_and_they_blend(runs, capsys):
    majority = pd.read_csv(runs["root"] / "train.csv")["target"].value_counts(normalize=True).max()
    for name in LIBRARIES:
        cv = json.loads((runs["outputs"] / name / "cv.json").read_text())
        # The rule is learnable from x1 and color; the stored models give training's out-of-fold predictions.
        assert cv["as_submitted"]["cv"] > majority, name
        assert cv["cv"] == pytest.approx(cv["as_submitted"]["cv"]), name
    capsys.readouterr()
    out = runs["tmp"] / "blend.csv"
    assert blend.main(["--config", str(runs["config"]), *LIBRARIES, "--output", str(out)]) == 0
    record = json.loads((runs["outputs"] / "blends" / "+".join(LIBRARIES) / "blend.json").read_text())
    assert record["blend_cv"]["cv"] >= max(r["cv"] for r in record["runs_cv"].values())
    assert list(pd.read_csv(out)["key"]) == list(pd.read_csv(runs["root"] / "sample_submission.csv")["key"])
    capsys.readouterr()
    assert board.main(["--config", str(runs["config"]), "--format", "csv"]) == 0
    rows = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("name")
    assert (rows.loc[list(LIBRARIES), "epochs"] == "-").all()  # one fit per fold: no epochs to show


def test_each_library_s_package_predicts_alone(runs, tmp_path):
    """From the package's own folder, with the run's outputs and folds.csv out of reach: the stored
    models, no refit; the submission is the one predict wrote."""
    data = tmp_path / "data"
    shutil.copytree(runs["root"], data)
    (data / "folds.csv").unlink()
    for name in LIBRARIES:
        pkg = tmp_path / f"pkg-{name}"
        assert package.main([*_sets(runs["config"], name), "--output", str(pkg)]) == 0, name
        os.chdir(pkg)
        out = tmp_path / f"{name}.csv"
        assert predict.main(["--config", "config.yaml", "--set", f"data.root={data}", "--no-cv", "--output", str(out)]) == 0
        assert pd.read_csv(out).equals(pd.read_csv(runs["tmp"] / f"{name}.csv")), name


def _rewrite_text(path, change) -> None:
    state = torch.load(path, weights_only=True)
    stored = state["model_state_dict"]["_extra_state"]
    stored["text"] = change(stored["text"])
    torch.save(state, path)


def test_an_altered_or_damaged_model_text_is_refused(runs, tmp_path, capsys):
    outputs = tmp_path / "outputs"
    shutil.copytree(runs["outputs"] / "lightgbm", outputs / "lightgbm")
    sets = [*_sets(runs["config"], "lightgbm"), "--set", f"output_dir={outputs}", "--set", f"submission_dir={tmp_path}"]
    best = outputs / "lightgbm" / "fold1" / "best.pt"
    saved = best.read_bytes()
    # One leaf value edited: the text still parses, and would predict something else.
    _rewrite_text(best, lambda text: text.replace("leaf_value=", "leaf_value=1", 1))
    capsys.readouterr()
    refused(capsys, predict.main(sets), str(best), "lightgbm model text was altered or damaged", "retrain")
    # Cut short: LightGBM's own parser would abort the process on it; the check comes first.
    best.write_bytes(saved)
    _rewrite_text(best, lambda text: text[: len(text) // 2])
    refused(capsys, predict.main(sets), str(best), "altered or damaged")
    assert not list(tmp_path.glob("*.csv"))


@pytest.mark.parametrize("name, unknown, bad", [("lightgbm", "num_leafs", "num_leaves=-1"),
                                                ("catboost", "depht", "depth=-3"),
                                                ("xgboost", "max_dept", "max_depth=-1")])
def test_params_are_checked_before_anything_is_written(name, unknown, bad, table_comp, tmp_path, capsys):
    cfg, _ = table_comp
    base = ["--config", str(cfg), "--set", f"model.name={name}"]
    refused(capsys, train.main([*base, "--set", f"model.params.{unknown}=5"]), "model.params", repr(unknown), name)
    refused(capsys, train.main([*base, "--set", f"model.params.{bad}"]), "model.params", name, bad.split("=")[0])
    key = "loss_function" if name == "catboost" else "objective"
    refused(capsys, train.main([*base, "--set", f"model.params.{key}=x"]), "model.params", repr(key), "set by the kit")
    assert not (tmp_path / "outputs").exists()


def test_threads_come_from_num_workers_unless_params_name_them(table_comp):
    cfg, _ = table_comp
    cores = len(os.sched_getaffinity(0))
    one = load_config(str(cfg), ["model.name=lightgbm", "train.num_workers=0"])
    assert gbdt_params(one, 0)["num_threads"] == 1
    many = load_config(str(cfg), ["model.name=lightgbm", "train.num_workers=64"])
    assert gbdt_params(many, 0)["num_threads"] == cores
    own = load_config(str(cfg), ["model.name=xgboost", "model.params.n_jobs=3", "model.params.learning_rate=0.1"])
    params = gbdt_params(own, 0)
    assert params["n_jobs"] == 3 and "nthread" not in params  # the user's alias replaces the kit's key
    assert params["learning_rate"] == 0.1 and "eta" not in params
    assert gbdt_params(own, 0)["seed"] != gbdt_params(own, 1)["seed"]


def test_early_stopping_waits_a_hundred_rounds_unless_patience_is_set(table_comp):
    cfg, _ = table_comp
    # The epochs' default of 3 would stop a fit at learning rate 0.05 before it learns anything.
    assert stopping_rounds(load_config(str(cfg), ["model.name=lightgbm", "train.patience=null"])) == 100
    assert stopping_rounds(load_config(str(cfg), ["model.name=catboost", "train.patience=7"])) == 7
    assert stopping_rounds(load_config(str(cfg), ["model.name=xgboost", "train.patience=0"])) == 0


def test_native_features_keep_missing_values_and_code_categories():
    train_rows = pd.DataFrame({"n": [1.0, None, 3.0, 4.0], "c": ["b", "a", None, "b"], "flag": [True, False, True, True]})
    pre = TabularPreprocessor.fit(train_rows, ["n", "c", "flag"], native=True)
    assert pre.state["native"] and pre.categorical_indices == [2]
    x = pre.transform(pd.DataFrame({"n": [None, 2.5], "c": ["a", "unseen"], "flag": [False, True]}))
    np.testing.assert_array_equal(x[:, :2], [[np.nan, 0.0], [2.5, 1.0]])  # numbers as they are, missing kept
    np.testing.assert_array_equal(x[:, 2], [0.0, np.nan])  # a's code; an unseen category is missing
    # The same columns one-hot for the MLP: imputed, scaled, one column per category.
    assert TabularPreprocessor.fit(train_rows, ["n", "c", "flag"]).n_features > 3


def test_a_config_with_the_library_missing_says_how_to_install_it(table_comp, monkeypatch, capsys):
    cfg, _ = table_comp
    monkeypatch.setitem(__import__("sys").modules, "catboost", None)  # as if the tables extra were not installed
    refused(capsys, train.main(["--config", str(cfg), "--set", "model.name=catboost"]), "catboost", ".[tables]")


def test_multi_label_targets_are_refused(table_comp, tmp_path, capsys):
    cfg, _ = table_comp
    code = train.main(["--config", str(cfg), "--set", "model.name=xgboost", "--set", "data.target_format=multi_label",
                       "--set", "folds.strategy=kfold", "--set", "train.metric=f1_micro"])
    refused(capsys, code, "xgboost", "one label per row", "mlp")
    assert not (tmp_path / "outputs").exists()
