"""scikit-learn's classifiers for tables: the folds, checkpoints without pickle, predict's checked
refit, and blends with the MLP."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import refused

from competition import blend, package, predict, train
from competition.config import load_config
from competition.data.features import TabularPreprocessor, feature_columns
from competition.data.folder import load_competition
from competition.models.estimators import ESTIMATORS, make_estimator


@pytest.mark.slow
def test_each_scikit_learn_model_trains_predicts_and_blends_with_the_mlp(table_comp, tmp_path, capsys):
    cfg, root = table_comp
    outputs = tmp_path / "outputs"
    majority = pd.read_csv(root / "train.csv")["target"].value_counts(normalize=True).max()
    runs = ["table"]
    assert train.main(["--config", str(cfg)]) == 0 and predict.main(["--config", str(cfg)]) == 0
    small = {"random_forest": "n_estimators=20", "extra_trees": "n_estimators=20", "hist_gbm": "max_iter=20"}
    for name in ESTIMATORS:
        sets = ["--config", str(cfg), "--set", f"name={name}", "--set", f"model.name={name}"]
        sets += ["--set", f"model.params.{small[name]}"] if name in small else []
        assert train.main(sets) == 0, name
        for k in (0, 1):
            state = torch.load(outputs / name / f"fold{k}" / "best.pt", weights_only=True)  # no pickle needed
            assert set(state["model_state_dict"]) == {"check_probs"} and state["finished"]
            assert (outputs / name / f"fold{k}" / "oof.csv").is_file()
        assert predict.main([*sets, "--output", str(tmp_path / f"{name}.csv")]) == 0, name
        cv = json.loads((outputs / name / "cv.json").read_text())
        # The rule is learnable from x1 and color; the refit reproduced training's predictions (else refused).
        assert cv["as_submitted"]["cv"] > majority, name
        assert cv["cv"] == pytest.approx(cv["as_submitted"]["cv"]), name
        runs.append(name)
    capsys.readouterr()
    out = tmp_path / "blend.csv"
    assert blend.main(["--config", str(cfg), *runs, "--output", str(out)]) == 0
    record = json.loads((outputs / "blends" / "+".join(runs) / "blend.json").read_text())
    assert record["blend_cv"]["cv"] >= max(r["cv"] for r in record["runs_cv"].values())
    sub = pd.read_csv(out)
    assert list(sub["key"]) == list(pd.read_csv(root / "sample_submission.csv")["key"])


def test_a_refit_that_does_not_reproduce_training_is_refused(table_comp, tmp_path, capsys):
    cfg, root = table_comp
    sets = ["--config", str(cfg), "--set", "model.name=random_forest"]
    assert train.main(sets) == 0
    rows = pd.read_csv(root / "train.csv")
    rows["x2"] = rows["x2"] * 3 + 1  # train.csv edited since training: the forest refits to other trees
    rows.to_csv(root / "train.csv", index=False)
    capsys.readouterr()
    refused(capsys, predict.main(sets), "random_forest of fold 0", "does not reproduce its trained predictions",
            "retrain")
    assert not (tmp_path / "submissions").exists() or not list((tmp_path / "submissions").glob("*.csv"))


def test_model_params_reach_the_estimator_and_bad_ones_stop_before_anything_is_written(table_comp, tmp_path, capsys):
    cfg, _ = table_comp
    forest = load_config(str(cfg), ["model.name=random_forest", "model.params.n_estimators=7", "model.params.max_depth=2"])
    made = make_estimator(forest, fold=1).get_params()
    assert (made["n_estimators"], made["max_depth"]) == (7, 2)
    base = ["--config", str(cfg), "--set", "model.name=hist_gbm"]
    refused(capsys, train.main([*base, "--set", "model.params.max_iters=5"]), "model.params", "'max_iters'", "max_iter")
    refused(capsys, train.main([*base, "--set", "model.params.learning_rate=-1"]), "model.params", "learning_rate")
    refused(capsys, train.main(["--config", str(cfg), "--set", "model.params.max_depth=2"]), "model.params", "'mlp'")
    assert not (tmp_path / "outputs").exists()


def test_params_sized_to_the_table_are_checked_against_its_features(table_comp, tmp_path, capsys):
    # One monotonic constraint per feature the preprocessor makes: right for this table, so the
    # check (a fit on a few real rows) passes it; a list one short is refused before any write.
    cfg, _ = table_comp
    config = load_config(str(cfg), [])
    comp = load_competition(config)
    n = TabularPreprocessor.fit(comp.train, feature_columns(config, comp.train)).n_features
    base = ["--config", str(cfg), "--set", "model.name=random_forest", "--set", "model.params.n_estimators=5",
            "--fold", "0"]
    short = [0] * (n - 1)
    refused(capsys, train.main([*base, "--set", f"model.params.monotonic_cst={short}"]), "model.params",
            "monotonic_cst")
    assert not (tmp_path / "outputs").exists()
    assert train.main([*base, "--set", f"model.params.monotonic_cst={[1] + [0] * (n - 1)}"]) == 0


def test_pseudo_labels_are_refused_for_models_that_fit_one_label_per_row(table_comp, tmp_path, capsys):
    cfg, root = table_comp
    refused(capsys, train.main(["--config", str(cfg), "--set", "model.name=hist_gbm",
                                "--set", f"data.pseudo_labels={root / 'sample_submission.csv'}"]),
            "data.pseudo_labels", "hist_gbm", "mlp")
    assert not (tmp_path / "outputs").exists()


def test_package_refuses_a_run_that_predict_must_refit(table_comp, tmp_path, capsys):
    cfg, _ = table_comp
    sets = ["--config", str(cfg), "--set", "model.name=logreg"]
    assert train.main(sets) == 0
    capsys.readouterr()
    refused(capsys, package.main([*sets, "--output", str(tmp_path / "pkg")]), "logreg", "folds.csv", "mlp")
    # --run reads the run's own config (logreg); --config alone says mlp, which the checkpoints refuse.
    refused(capsys, package.main(["--run", "table", "--output", str(tmp_path / "pkg")]), "logreg", "folds.csv", "mlp")
    refused(capsys, package.main(["--config", str(cfg), "--output", str(tmp_path / "pkg")]),
            "model.name 'logreg' and the config says 'mlp'", "--run table")
    assert not (tmp_path / "pkg").exists()
