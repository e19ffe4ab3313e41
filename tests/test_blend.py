"""Blends of runs on their out-of-fold predictions, and the local board that lists runs and blends."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from conftest import refused

from competition import blend, board, folds, predict, train
from competition.core.metrics import METRICS
from competition.experiments.blending import (
    blend_of_best,
    choose,
    column_ranks,
    combine,
    cross_fit,
    greedy_weights,
)


def trained_and_predicted(cfg, name: str, *sets: str) -> None:
    args = ["--config", str(cfg), "--set", f"name={name}", *[a for s in sets for a in ("--set", s)]]
    assert train.main([*args, "--fold", "all"]) == 0
    assert predict.main(args) == 0


def board_frame(cfg, capsys) -> pd.DataFrame:
    capsys.readouterr()
    assert board.main(["--config", str(cfg), "--format", "csv"]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out))


def test_a_blend_scores_at_least_its_best_run_and_writes_a_checked_submission(table_comp, tmp_path, capsys):
    cfg, root = table_comp
    trained_and_predicted(cfg, "mlp")
    trained_and_predicted(cfg, "mlp-short", "train.epochs=1", "train.lr=0.003")
    kept = pd.read_csv(tmp_path / "outputs" / "mlp" / "oof.csv")
    assert len(kept) == len(pd.read_csv(root / "train.csv")) and set(kept["fold"]) == {0, 1}
    assert len(pd.read_csv(tmp_path / "outputs" / "mlp" / "test_probs.csv")) == len(pd.read_csv(root / "test.csv"))
    capsys.readouterr()

    out = tmp_path / "blend.csv"
    assert blend.main(["--config", str(cfg), "mlp", "mlp-short", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "run mlp: accuracy" in printed and "estimate: accuracy" in printed
    record = json.loads((tmp_path / "outputs" / "blends" / "mlp+mlp-short" / "blend.json").read_text())
    weights = np.array(list(record["weights"].values()))
    assert (weights >= 0).all() and abs(weights.sum() - 1) < 1e-9
    best_run = max(r["cv"] for r in record["runs_cv"].values())
    assert record["blend_cv"]["cv"] >= best_run  # fit on these rows, it never scores below its best run
    assert set(record["cross_fit"]["weights"]) == {"0", "1"} and 0 <= record["cross_fit"]["cv"] <= 1
    sub, sample = pd.read_csv(out), pd.read_csv(root / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and list(sub["key"]) == list(sample["key"])
    assert set(sub["target"]) <= {0, 1}

    rows = board_frame(cfg, capsys)
    assert set(rows["name"]) == {"mlp", "mlp-short", "blends/mlp+mlp-short"}
    assert list(rows["cv"]) == sorted(rows["cv"], reverse=True)  # accuracy: best first
    assert set(rows["cv_from"]) == {"as submitted", "blend, cross-fit"}
    assert not rows["other_folds"].any()
    assert rows.set_index("name").loc["blends/mlp+mlp-short", "submission"] == str(out)


def test_blend_refuses_runs_on_other_folds_and_the_board_marks_them(table_comp, tmp_path, capsys):
    cfg, _ = table_comp
    trained_and_predicted(cfg, "old-split")
    assert folds.main(["--config", str(cfg), "--force", "--set", "seed=99"]) == 0
    trained_and_predicted(cfg, "new-split", "model.name=logreg")
    capsys.readouterr()
    refused(capsys, blend.main(["--config", str(cfg), "old-split", "new-split"]), "old-split", "new-split", "folds")
    assert not (tmp_path / "outputs" / "blends").exists()
    assert not [p for p in (tmp_path / "submissions").glob("*.csv") if "+" in p.name]

    rows = board_frame(cfg, capsys).set_index("name")
    assert rows.loc["old-split", "other_folds"] and not rows.loc["new-split", "other_folds"]
    capsys.readouterr()
    assert board.main(["--config", str(cfg)]) == 0
    assert "other folds" in capsys.readouterr().out

    # A run never predicted has nothing to blend: say what to run.
    assert train.main(["--config", str(cfg), "--set", "name=unpredicted", "--fold", "all"]) == 0
    capsys.readouterr()
    refused(capsys, blend.main(["--config", str(cfg), "new-split", "unpredicted"]), "unpredicted/oof.csv not found",
            "competition.predict")


def test_greedy_weights_mix_runs_whose_mistakes_differ_and_never_score_below_the_best():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    truth = np.stack([1 - y, y], 1).astype(float)

    def run(wrong: slice, sure: float) -> np.ndarray:
        """Sure where right, barely wrong on `wrong` rows: the runs blending is for."""
        p_true = np.full(len(y), sure)
        p_true[wrong] = 0.45
        return truth * p_true[:, None] + (1 - truth) * (1 - p_true[:, None])

    a, b, weak = run(slice(0, 130), 0.9), run(slice(130, 260), 0.8), run(slice(0, 260), 0.6)
    accuracy = METRICS["accuracy"]
    w = greedy_weights(accuracy, y, [a, b, weak])
    assert w[0] > 0 and w[1] > 0 and abs(w.sum() - 1) < 1e-12 and (w >= 0).all()
    assert accuracy(y, combine([a, b, weak], w, "weights")) == 1.0 > max(accuracy(y, a), accuracy(y, b))
    # Weights fit on one half, scored on the other (and back): what the blend earns on unseen rows.
    held, fold_weights = cross_fit("weights", accuracy, y, np.arange(400) % 2, [a, b, weak])
    assert set(fold_weights) == {"0", "1"} and accuracy(y, held) == 1.0


def test_auto_blends_runs_whose_mistakes_differ_and_keeps_the_best_alone_when_blending_fits_noise():
    """The choice between the best run alone and a blend of the best is made on rows neither was
    chosen on: runs that are right on different rows blend; a good run among runs of noise, which
    greedy selection can always fit to a few hundred rows, stands alone."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    truth = np.stack([1 - y, y], 1).astype(float)
    fold = np.arange(400) % 5
    accuracy = METRICS["accuracy"]

    def sure(p_true: np.ndarray) -> np.ndarray:
        return truth * p_true[:, None] + (1 - truth) * (1 - p_true[:, None])

    a, b = np.full(400, 0.9), np.full(400, 0.8)
    a[:130], b[130:260] = 0.45, 0.45
    complementary = choose(accuracy, y, fold, [sure(b), sure(a)], top=20)
    assert complementary.way == "blend" and complementary.order == [1, 0]
    assert complementary.scores["blend"] == 1.0 > complementary.scores["best"] == complementary.best_cv == 0.675

    # A run right on ~84% of the rows, among thirty runs of guesses (probabilities of 0.3 to 0.7
    # that know nothing of the truth): some blend of guesses always fits the rows it is chosen on.
    good = np.clip(rng.normal(0.7, 0.2, 400), 0.01, 0.99)
    runs = [np.stack([1 - q, q], 1) for q in rng.uniform(0.3, 0.7, (30, 400))] + [sure(good)]
    alone = choose(accuracy, y, fold, runs, top=20)
    fitted = accuracy(y, combine(runs, blend_of_best(accuracy, y, runs, 20), "weights"))
    assert alone.way == "best" and alone.order[0] == 30 and alone.scores["best"] == alone.best_cv
    assert alone.scores["blend"] < alone.scores["best"] < fitted, (alone.scores, fitted)  # it looked better


def test_rank_blend_keeps_each_runs_order_and_is_refused_where_probabilities_are_scored(table_comp, capsys):
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    assert np.allclose(column_ranks(p)[:, 1], [0.0, 0.5, 1.0])
    cfg, _ = table_comp
    trained_and_predicted(cfg, "one")
    trained_and_predicted(cfg, "two", "train.lr=0.003")
    capsys.readouterr()
    refused(capsys, blend.main(["--config", str(cfg), "one", "two", "--method", "rank"]), "--method rank",
            "accuracy", "roc_auc")


def test_the_budget_set_aside_for_autos_final_choice_counts_the_scorings_it_makes(monkeypatch):
    """auto reserves one timed scoring times `scorings(...)` for its final choice and blend: the count
    must be the work they do, or a slow metric (scikit-learn's, milliseconds a call) overruns the budget."""
    import competition.experiments.blending as blending

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150)
    runs = [np.stack([1 - q, q], 1) for q in rng.random((25, 150))]
    fold = np.arange(150) % 5
    calls = []
    real = blending._key
    monkeypatch.setattr(blending, "_key", lambda *a: calls.append(1) or real(*a))
    metric = METRICS["accuracy"]  # the count is the metric's own; accuracy keeps the test quick
    choice = choose(metric, y, fold, runs, top=20, portfolio=[3, 7, 11])
    assert set(choice.scores) == {"best", "blend", "portfolio"}
    top = [runs[i] for i in choice.order[:20]]
    blending.fit_weights("weights", metric, y, top)  # what `blend` then does with the best 20 (the larger)
    cross_fit("weights", metric, y, fold, top)
    assert blending.scorings(25, 5, 20, 3) == len(calls)
    calls.clear()
    choose(metric, y, fold, runs[:1], top=20)
    assert blending.scorings(1, 5, 20) == len(calls)  # one run: ranked only


def test_the_choice_scores_a_thresholded_metric_as_predicts_cv_as_submitted():
    """F1 decides each fold's rows at a threshold fit on the other folds' rows, as predict's CV as
    submitted does: never at one fit on the rows it scores, which flatters."""
    from competition.experiments.blending import held_out_score

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    q = np.clip(0.5 * y + rng.normal(0.25, 0.25, 200), 0, 1)
    p, fold = np.stack([1 - q, q], 1), np.arange(200) % 4
    f1 = METRICS["f1"]
    decided = np.zeros(200, dtype=np.int64)
    for k in range(4):
        held = fold == k
        th = f1.fit_thresholds(y[~held], p[~held])
        decided[held] = p[held, 1] >= th[0]
    expected = f1(y, np.eye(2)[decided])
    assert held_out_score(f1, y, fold, p) == pytest.approx(expected, abs=1e-12) and expected < f1.best(y, p)
    assert held_out_score(METRICS["accuracy"], y, fold, p) == METRICS["accuracy"](y, p)
    assert choose(f1, y, fold, [p], top=20).best_cv == pytest.approx(expected, abs=1e-12)
