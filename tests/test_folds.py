"""Folds: stratified ratios, no overlap, groups kept whole, stable across runs, folds.csv reused."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import image_config, make_image_competition, refused, write_yaml

from competition import folds as folds_cli
from competition import train
from competition.config import load_config
from competition.core.errors import CompetitionError
from competition.data.splits import load_or_create_folds, make_folds
from competition.data.targets import Target

TARGET = Target("single", ["circle", "cross", "square"], "label")


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": [f"i{k}" for k in range(n)],
        "label": rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1]),
        "group": rng.integers(0, 40, size=n),
    })


def test_stratified_folds_keep_class_ratios_and_cover_each_row_once():
    df = _frame()
    f = make_folds(df, "id", df["label"], 5, "stratified", seed=1)
    assert list(f["id"]) == list(df["id"])  # one row per train row, same order
    assert sorted(f["fold"].unique()) == [0, 1, 2, 3, 4]
    overall = df["label"].value_counts(normalize=True)
    for k in range(5):
        part = df[f["fold"] == k]["label"].value_counts(normalize=True)
        for label, share in overall.items():
            assert abs(part.get(label, 0) - share) < 0.05


@pytest.mark.parametrize("strategy", ["group", "stratified_group"])
def test_a_group_never_spans_two_folds(strategy):
    df = _frame()
    f = make_folds(df, "id", df["label"], 4, strategy, seed=3, group_column="group")
    per_group = df.assign(fold=f["fold"]).groupby("group")["fold"].nunique()
    assert (per_group == 1).all()
    assert f["fold"].nunique() == 4


def test_folds_are_stable_across_runs_and_depend_on_seed():
    df = _frame()
    a = make_folds(df, "id", df["label"], 5, "kfold", seed=11)
    b = make_folds(df, "id", df["label"], 5, "kfold", seed=11)
    c = make_folds(df, "id", df["label"], 5, "kfold", seed=12)
    assert a.equals(b)
    assert not a["fold"].equals(c["fold"])


def test_too_many_folds_is_an_error():
    with pytest.raises(CompetitionError, match="folds.n_splits"):
        make_folds(_frame(n=4), "id", _frame(n=4)["label"], 5, "kfold", seed=0)


def test_folds_csv_written_once_then_reused_and_checked(image_comp):
    cfg_path, root = image_comp
    cfg = load_config(str(cfg_path))
    train = pd.read_csv(root / "train.csv")
    first = load_or_create_folds(cfg, train, TARGET)
    written = (root / "folds.csv").read_text()
    # A different seed must not silently reshuffle an existing split.
    again = load_or_create_folds(load_config(str(cfg_path), ["seed=999"]), train, TARGET)
    assert (root / "folds.csv").read_text() == written
    assert list(again["fold"]) == list(first["fold"])
    # train.csv changed under the folds: refuse and say how to regenerate.
    with pytest.raises(CompetitionError, match=r"folds\.csv does not match .*competition\.folds --force"):
        load_or_create_folds(cfg, train.iloc[:-1], TARGET)


def test_folds_cli_force_regenerates(image_comp, capsys):
    cfg_path, root = image_comp
    assert folds_cli.main(["--config", str(cfg_path)]) == 0
    assert "fold 0" in capsys.readouterr().out
    before = pd.read_csv(root / "folds.csv")
    assert folds_cli.main(["--config", str(cfg_path), "--set", "folds.n_splits=3", "--force"]) == 0
    after = pd.read_csv(root / "folds.csv")
    assert before["fold"].nunique() == 2 and after["fold"].nunique() == 3


def test_existing_folds_that_split_a_group_are_refused_until_regenerated(tmp_path, capsys):
    root = make_image_competition(tmp_path / "data" / "shapes", groups=True)  # 3 rows per patient
    cfg = write_yaml(tmp_path / "shapes.yaml", image_config(tmp_path, root))
    assert folds_cli.main(["--config", str(cfg)]) == 0  # stratified: patients land in both folds
    grouped = ["--set", "data.group_column=patient", "--set", "folds.strategy=group"]
    code = train.main(["--config", str(cfg), *grouped])
    refused(capsys, code, "folds.csv puts patient 'p", "in folds 0, 1", "more of its 12 groups",
            "python -m competition.folds --force")
    assert not (tmp_path / "outputs" / "shapes").exists()
    assert folds_cli.main(["--config", str(cfg), "--force", *grouped]) == 0
    df = load_or_create_folds(load_config(str(cfg), grouped[1::2]), pd.read_csv(root / "train.csv"), TARGET)
    assert (df.groupby("patient")["fold"].nunique() == 1).all()


def test_a_group_column_with_a_strategy_that_splits_rows_is_refused(image_comp, capsys):
    cfg, _ = image_comp
    code = folds_cli.main(["--config", str(cfg), "--set", "data.group_column=patient"])
    refused(capsys, code, "folds.strategy: stratified splits rows", "data.group_column (patient)",
            "use group or stratified_group")
