"""Ids and labels are text: `01000` stays `01000` and class `01` stays `01` from train.csv through
folds.csv, every oof.csv, test_probs.csv and the submissions predict and blend write (Kaggle scores
`01000`, not `1000`); ids that differ only in leading zeros are different ids; messages show the
text, never a numpy repr."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import refused, table_config, write_yaml

from competition import blend, folds, predict, train
from competition.config import config_from_dict
from competition.core.errors import CompetitionError
from competition.data.features import typed_as_read
from competition.data.folder import read_csv
from competition.data.targets import read_target
from competition.inference.submission import validate_submission
from competition.io.checkpoints import FoldState
from competition.io.runs import RunRecord, check_trained_with

CLASSES = ["01", "02", "10"]  # as numbers: 1, 2, 10


def _column(path: Path, name: str) -> list[str]:
    """A CSV column exactly as the file spells it."""
    with open(path, newline="") as fh:
        return [row[name] for row in csv.DictReader(fh)]


def _padded_competition(root: Path, n_train: int = 48, n_test: int = 12) -> Path:
    """A table whose ids and classes look like numbers: 7, 07 and 0007 (three rows), 01003…; classes
    01, 02 and 10, which follow from x1."""
    rng = np.random.default_rng(0)
    n = n_train + n_test
    x1 = rng.normal(size=n)
    ids = ["7", "07", "0007"] + [f"{1000 + i:05d}" for i in range(3, n)]
    df = pd.DataFrame({"key": ids, "x1": x1, "x2": rng.normal(size=n),
                       "target": np.array(CLASSES)[np.digitize(x1, [-0.4, 0.4])]})
    root.mkdir(parents=True)
    df.iloc[:n_train].to_csv(root / "train.csv", index=False)
    df.iloc[n_train:].drop(columns="target").to_csv(root / "test.csv", index=False)
    df.iloc[n_train:][["key"]].iloc[::-1].assign(target="01").to_csv(root / "sample_submission.csv", index=False)
    df.iloc[n_train:][["key", "target"]].to_csv(root / "solution.csv", index=False)
    return root


@pytest.fixture
def padded(tmp_path: Path) -> tuple[Path, Path]:
    root = _padded_competition(tmp_path / "data" / "pad")
    cfg = table_config(tmp_path, root, name="pad", data={"solution": "solution.csv"},
                       train={"metric": "accuracy", "epochs": 1})
    return write_yaml(tmp_path / "pad.yaml", cfg), root


@pytest.mark.slow
def test_ids_and_labels_keep_their_text_through_train_predict_and_blend(padded, tmp_path, capsys):
    cfg, root = padded
    train_ids, test_ids = _column(root / "train.csv", "key"), _column(root / "test.csv", "key")
    truth = dict(zip(train_ids, _column(root / "train.csv", "target"), strict=True))
    for name in ("pad", "pad2"):
        assert train.main(["--config", str(cfg), "--set", f"name={name}"]) == 0
        assert predict.main(["--config", str(cfg), "--set", f"name={name}", "--output", str(tmp_path / f"{name}.csv")]) == 0
    printed = capsys.readouterr().out

    assert sorted(_column(root / "folds.csv", "key")) == sorted(train_ids)  # 7, 07 and 0007: three rows
    run = tmp_path / "outputs" / "pad"
    for oof in (run / "fold0" / "oof.csv", run / "fold1" / "oof.csv", run / "oof.csv"):
        ids = _column(oof, "key")
        assert set(ids) <= set(train_ids) and [truth[i] for i in ids] == _column(oof, "target"), oof
    assert sorted(_column(run / "oof.csv", "key")) == sorted(train_ids)
    assert _column(run / "test_probs.csv", "key") == test_ids
    assert json.loads((run / "run.json").read_text())["classes"] == CLASSES
    with open(run / "test_probs.csv") as fh:
        assert fh.readline().startswith("key,prob_01,prob_02,prob_10,")

    assert blend.main(["--config", str(cfg), "pad", "pad2", "--output", str(tmp_path / "blend.csv")]) == 0
    sample_ids = _column(root / "sample_submission.csv", "key")
    for sub in ("pad.csv", "pad2.csv", "blend.csv"):
        assert _column(tmp_path / sub, "key") == sample_ids, sub
        assert set(_column(tmp_path / sub, "target")) <= set(CLASSES), sub
    # The leaderboard matched the file's labels to the answers as text ('01' is the class 01).
    answers = dict(zip(_column(root / "solution.csv", "key"), _column(root / "solution.csv", "target"), strict=True))
    written = zip(_column(tmp_path / "pad.csv", "key"), _column(tmp_path / "pad.csv", "target"), strict=True)
    accuracy = np.mean([answers[i] == label for i, label in written])
    board = [line for line in printed.splitlines() if line.startswith("local leaderboard")][0]
    assert float(board.split(":")[1].split()[0]) == pytest.approx(accuracy, abs=1e-5)


@pytest.mark.parametrize(("ids", "shown"), [(["07", "07"], "id '07'"), (["7", "7"], "id '7'")])
def test_a_repeated_id_is_named_as_its_text(padded, capsys, ids, shown):
    cfg, root = padded
    path = root / "train.csv"
    lines = path.read_text().splitlines()
    lines[1:3] = [f"{i},{line.split(',', 1)[1]}" for i, line in zip(ids, lines[1:3], strict=True)]
    path.write_text("\n".join(lines) + "\n")
    line = refused(capsys, train.main(["--config", str(cfg)]), str(path), shown, "lines 2, 3")
    assert "np." not in line


def test_a_folds_csv_that_lost_its_leading_zeros_is_refused_in_one_line(padded, capsys):
    cfg, root = padded
    assert folds.main(["--config", str(cfg)]) == 0
    pd.read_csv(root / "folds.csv").to_csv(root / "folds.csv", index=False)  # what a kit reading ids as numbers wrote
    assert _column(root / "folds.csv", "key")[:4] == ["7", "7", "7", "1003"]
    capsys.readouterr()
    refused(capsys, folds.main(["--config", str(cfg)]), "folds.csv", "train id '01003' is '1003' there", "older kit")


def test_submission_ids_compare_as_text(tmp_path):
    (tmp_path / "sample.csv").write_text("key,target\n01000,01\n01001,01\n")
    sample = read_csv(tmp_path / "sample.csv", "sample", ["key"])
    validate_submission(sample.assign(target=["02", "10"]), sample, "key")
    (tmp_path / "sub.csv").write_text("key,target\n1000,02\n1001,10\n")  # the ids written as numbers
    for sub in (read_csv(tmp_path / "sub.csv", "submission", ["key"]), pd.read_csv(tmp_path / "sub.csv")):
        with pytest.raises(CompetitionError, match="ids differ.*e.g. '01000'.*not in the sample, e.g. '1000'"):
            validate_submission(sub, sample, "key")


def test_text_columns_read_only_an_empty_cell_as_missing(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("key,label,x\nNA,None,NA\n0007,01,2.5\n,02,\n")
    df = read_csv(path, "t", ["key", "label"])
    assert df["key"].tolist()[:2] == ["NA", "0007"] and pd.isna(df["key"].iloc[2])  # Namibia, not missing
    assert df["label"].tolist() == ["None", "01", "02"]
    assert pd.api.types.is_float_dtype(df["x"]) and df["x"].isna().tolist() == [True, False, True]


def test_a_feature_hook_gets_numbers_as_pandas_reads_them(tmp_path):
    """A hook that averages a 0/1 target, or keeps an id as a feature, works as before ids were text."""
    path = tmp_path / "t.csv"
    path.write_text("key,target,group,x\n01000,1,p1,2.5\n01001,0,p2,\n")
    rows = read_csv(path, "t", ["key", "target", "group"])
    pd.testing.assert_frame_equal(typed_as_read(rows), pd.read_csv(path))
    assert rows["key"].tolist() == ["01000", "01001"]  # the kit's own frame keeps the text


def _target(tmp_path: Path, values: list, **data):
    cfg = config_from_dict(table_config(tmp_path, tmp_path, data=data))
    return read_target(cfg, pd.DataFrame({"target": values}), tmp_path / "train.csv")


@pytest.mark.parametrize(("values", "data", "classes"), [
    (["10", "01", "02"], {}, ["01", "02", "10"]),
    (["10", "2", "1"], {}, ["1", "2", "10"]),  # numbers in their order: 2 before 10
    (["1", "0"], {}, ["0", "1"]),  # a 0/1 target: [negative, positive], as Titanic's Survived
    (["1", "0"], {"positive_class": 0}, ["1", "0"]),  # a YAML number names the class that spells it
    (["1.0", "0.0"], {"positive_class": 1}, ["0.0", "1.0"]),
    (["True", "False"], {}, ["False", "True"]),
    (["yes", "no", "NA"], {}, ["NA", "no", "yes"]),
])
def test_classes_are_text_in_a_readers_order(tmp_path, values, data, classes):
    assert _target(tmp_path, values, **data).classes == classes


def test_target_refusals_show_plain_values(tmp_path):
    with pytest.raises(CompetitionError, match=r"holds '0\.5', not a class"):
        _target(tmp_path, ["0.5", "1"])
    with pytest.raises(CompetitionError, match=r"data.positive_class: 3 is not one of the classes \['0', '1'\]"):
        _target(tmp_path, ["0", "1"], positive_class=3)
    cfg = config_from_dict(table_config(tmp_path, tmp_path, data={"target_format": "multi_label",
                                                                    "target_columns": ["a", "b"]},
                                        train={"metric": "f1_samples"}, folds={"strategy": "kfold"}))
    with pytest.raises(CompetitionError, match=r"column 'b' holds 2; a class column holds 0 or 1") as exc:
        read_target(cfg, pd.DataFrame({"a": [0, 1], "b": [1, 2]}), tmp_path / "train.csv")
    assert "np." not in str(exc.value)


def test_classes_stored_as_numbers_by_an_older_kit_load_as_text(tmp_path):
    from conftest import fold_state

    config = table_config(tmp_path, tmp_path)
    state = FoldState.from_dict(fold_state(config, [0, 1]).to_dict(), tmp_path / "best.pt")
    assert state.classes == ["0", "1"]  # Titanic's old checkpoints still match its 0/1 target
    check_trained_with(config_from_dict(config), state, tmp_path / "best.pt", ["0", "1"])
    lost = FoldState.from_dict(fold_state(config, [1, 2, 10]).to_dict(), tmp_path / "best.pt")
    with pytest.raises(CompetitionError, match=r"classes \['1', '2'\] unknown.*read as numbers by an older kit"):
        check_trained_with(config_from_dict(config), lost, tmp_path / "best.pt", CLASSES)
    RunRecord("r", config, "c", "f", [0, 1], "now").write(tmp_path)
    assert RunRecord.read(tmp_path).classes == ["0", "1"]
