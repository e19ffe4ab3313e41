"""Two folds of a tiny image competition and of a tiny table, through the CLIs' main()."""
from __future__ import annotations

import json

import pandas as pd
import torch

from competition import predict, train
from competition.io.checkpoints import FORMAT, FoldState


def test_image_competition_end_to_end(image_comp, tmp_path, capsys):
    cfg, root = image_comp
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    out = capsys.readouterr().out
    assert "CV accuracy" in out
    for k in (0, 1):
        fold = tmp_path / "outputs" / "shapes" / f"fold{k}"
        state = torch.load(fold / "best.pt", weights_only=True)
        assert state["format"] == FORMAT and set(FoldState.__dataclass_fields__) <= set(state)
        assert state["classes"] == ["circle", "cross", "square"]
        assert state["config"]["model"]["name"] == "test_resnet"
        assert (fold / "last.pt").is_file() and (fold / "oof.csv").is_file()
        summary = pd.read_csv(fold / "summary.csv")
        assert list(summary["stage"]) == [1, 2]  # one frozen epoch, then one unfrozen
        assert any((fold / "tb").iterdir())
    oof = pd.concat(pd.read_csv(tmp_path / "outputs" / "shapes" / f"fold{k}" / "oof.csv") for k in (0, 1))
    assert sorted(oof["id"]) == sorted(pd.read_csv(root / "train.csv")["id"])
    assert (tmp_path / "outputs" / "shapes" / "config.yaml").is_file()

    assert predict.main(["--config", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "local leaderboard accuracy" in printed
    subs = list((tmp_path / "submissions").glob("shapes-*-cv*.csv"))
    assert len(subs) == 1
    sub, sample = pd.read_csv(subs[0]), pd.read_csv(root / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns)
    assert list(sub["id"]) == list(sample["id"])
    assert set(sub["label"]) <= {"circle", "cross", "square"}
    cv = json.loads((tmp_path / "outputs" / "shapes" / "cv.json").read_text())
    assert set(cv["folds"]) == {"0", "1"} and cv["metric"] == "accuracy" and 0 <= cv["cv"] <= 1


def test_table_competition_end_to_end(table_comp, tmp_path, capsys):
    cfg, root = table_comp
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    out = tmp_path / "sub.csv"
    assert predict.main(["--config", str(cfg), "--output", str(out)]) == 0
    sub, sample = pd.read_csv(out), pd.read_csv(root / "sample_submission.csv")
    assert list(sub.columns) == ["key", "target"]
    assert list(sub["key"]) == list(sample["key"])
    assert set(sub["target"]) <= {0, 1}
    cv = json.loads((tmp_path / "outputs" / "table" / "cv.json").read_text())
    # The rule is learnable from x1 and color: a working loop beats the majority class.
    majority = pd.read_csv(root / "train.csv")["target"].value_counts(normalize=True).max()
    assert cv["cv"] > majority
