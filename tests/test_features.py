"""Tables: features fit on a fold's training rows only, the Titanic recipe, and a user's own hook."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import fold_state, refused

from competition import predict, train
from competition.config import load_config, shipped_dir
from competition.core.errors import CompetitionError
from competition.core.schema import config_to_dict
from competition.data.features import FeatureHook, TabularPreprocessor
from competition.io.runs import check_same_run, check_trained_with


def titanic() -> FeatureHook:
    """The recipe the shipped titanic config names."""
    return FeatureHook("titanic_features.py:TitanicFeatures", shipped_dir())


def _titanic_like(n=60, seed=0):
    rng = np.random.default_rng(seed)
    titles = rng.choice(["Mr.", "Mrs.", "Miss.", "Master.", "Dr."], size=n)
    return pd.DataFrame({
        "PassengerId": np.arange(n),
        "Survived": rng.integers(0, 2, n),
        "Pclass": rng.integers(1, 4, n),
        "Name": [f"Doe, {t} John" for t in titles],
        "Sex": rng.choice(["male", "female"], n),
        "Age": np.where(rng.random(n) < 0.2, np.nan, rng.uniform(1, 70, n)),
        "SibSp": rng.integers(0, 3, n),
        "Parch": rng.integers(0, 3, n),
        "Ticket": rng.choice(["A1", "B2", "C3", "D4", "E5", "F6"], n),
        "Fare": rng.uniform(5, 100, n),
        "Cabin": rng.choice(["C85", None, "E46", None], n),
        "Embarked": rng.choice(["S", "C", "Q", None], n),
    })


def test_tabular_preprocessor_fits_on_training_rows_only():
    df = _titanic_like()
    columns = [c for c in df.columns if c not in ("PassengerId", "Survived")]
    fit_rows, other = df.iloc[:40], df.iloc[40:].copy()
    pre = TabularPreprocessor.fit(fit_rows, columns, titanic())
    before = pre.transform(fit_rows)
    # Changing held-out rows changes nothing that was fit: the same training rows map identically.
    other["Fare"] = other["Fare"] * 1000
    pre_again = TabularPreprocessor.fit(fit_rows, columns, titanic())
    assert np.array_equal(pre_again.transform(fit_rows), before)
    # Standardised numeric columns are centred on the fit rows.
    assert abs(before[:, pre.feature_names.index("LogFare")].mean()) < 1e-5
    # Engineered features are there, and the state is plain data (it lives in weights_only checkpoints).
    assert {"FamilySize", "TicketGroupSize", "Title=Mr", "Deck=C"} <= set(pre.feature_names)
    assert not any(name.startswith("Name") for name in pre.feature_names)
    torch.save(pre.state, "state.pt")
    restored = TabularPreprocessor(torch.load("state.pt", weights_only=True), titanic())
    assert np.array_equal(restored.transform(other), pre.transform(other))


def test_ticket_group_size_counts_a_new_row_as_joining_its_group():
    df = _titanic_like()
    columns = [c for c in df.columns if c not in ("PassengerId", "Survived")]
    pre = TabularPreprocessor.fit(df.iloc[:40], columns, titanic())
    ticket = df["Ticket"].iloc[45]
    in_fit = int((df["Ticket"].iloc[:40] == ticket).sum())
    pre.state["numeric"] = [s | {"mean": 0.0, "std": 1.0} for s in pre.state["numeric"]]  # read raw values
    col = pre.feature_names.index("TicketGroupSize")
    assert pre.transform(df.iloc[[45]])[0, col] == in_fit + 1


def test_group_survival_is_leave_one_out_and_never_reads_held_out_labels():
    df = _titanic_like(n=80, seed=1)
    columns = [c for c in df.columns if c not in ("PassengerId", "Survived")]
    fit_rows, held_out = df.iloc[:60], df.iloc[60:].copy()
    hook = titanic()
    pre = TabularPreprocessor.fit(fit_rows, columns, hook)
    raw = hook.transform(fit_rows, pre.state["hook"]["state"])
    # A fitted row's ticket survival is the mean over the *other* fitted rows of its ticket.
    row = fit_rows.iloc[0]
    others = fit_rows[(fit_rows["Ticket"] == row["Ticket"]) & (fit_rows["PassengerId"] != row["PassengerId"])]
    assert raw["TicketSurvival"].iloc[0] == pytest.approx(others["Survived"].mean())
    # Held-out labels are never read: flipping them changes nothing the model sees.
    before = pre.transform(held_out)
    held_out["Survived"] = 1 - held_out["Survived"]
    assert np.array_equal(pre.transform(held_out), before)
    # Without labels at all (test.csv) the held-out rows transform the same way.
    assert np.array_equal(pre.transform(held_out.drop(columns="Survived")), before)


# --- a user's own feature hook -------------------------------------------------------------

HOOK = '''
import pathlib
import numpy as np
import pandas as pd


class Centred:
    """x1 centred on the fit rows' mean, a red flag, and which rows the fit saw."""

    def fit(self, rows):
        return {"mean": float(rows["x1"].mean()), "ids": sorted(int(i) for i in rows["key"])}

    def transform(self, rows, state):
        pathlib.Path("hook-ran").touch()
        return pd.DataFrame({"x1c": rows["x1"] - state["mean"], "red": (rows["color"] == "red").astype(float)})
'''


def _hook_config(tmp_path, table_comp, body: str = HOOK, spec: str = "my_features.py:Centred") -> str:
    """The table config moved into its own folder with a hook file beside it."""
    import yaml

    cfg_path, _ = table_comp
    folder = tmp_path / "experiment"
    folder.mkdir(exist_ok=True)
    (folder / "my_features.py").write_text(body)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["data"]["features"] = spec
    (folder / "table.yaml").write_text(yaml.safe_dump(cfg))
    return str(folder / "table.yaml")


def test_a_users_feature_hook_is_fit_on_each_folds_training_rows(table_comp, tmp_path):
    cfg = _hook_config(tmp_path, table_comp)  # the hook path resolves against the config's folder
    assert train.main(["--config", cfg, "--fold", "all"]) == 0
    folds = pd.read_csv(table_comp[1] / "folds.csv")
    train_rows = pd.read_csv(table_comp[1] / "train.csv")
    for k in (0, 1):
        state = torch.load(tmp_path / "outputs" / "table" / f"fold{k}" / "best.pt", weights_only=True)
        hook = state["preprocessor"]["hook"]
        fit_ids = sorted(folds.loc[folds["fold"] != k, "key"])
        assert hook["spec"] == "my_features.py:Centred" and hook["state"]["ids"] == fit_ids
        assert hook["state"]["mean"] == pytest.approx(train_rows.set_index("key").loc[fit_ids, "x1"].mean())
        assert state["in_features"] == 2  # exactly the hook's two columns reach the model
    out = tmp_path / "sub.csv"
    assert predict.main(["--config", cfg, "--output", str(out)]) == 0
    assert len(pd.read_csv(out)) == len(pd.read_csv(table_comp[1] / "test.csv"))


def test_predict_never_runs_a_hook_only_a_checkpoint_names(table_comp, tmp_path, capsys):
    cfg = _hook_config(tmp_path, table_comp)
    assert train.main(["--config", cfg, "--fold", "all"]) == 0
    (tmp_path / "hook-ran").unlink()
    capsys.readouterr()
    # The local config without the hook: the checkpoints name one, so predict refuses.
    code = predict.main(["--config", cfg, "--set", "data.features=null"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "my_features.py:Centred" in err and "data.features" in err
    assert not (tmp_path / "hook-ran").exists() and not (tmp_path / "submissions").exists()
    # Nor because a run's stored config.yaml names one: --run asks for the config it was trained with.
    code = predict.main(["--run", "table"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --run table: the run was trained with feature hook") and "\n" not in err
    assert "my_features.py:Centred" in err and "--config" in err
    assert not (tmp_path / "hook-ran").exists() and not (tmp_path / "submissions").exists()


def test_an_edited_hook_file_is_another_run(table_comp, tmp_path, capsys):
    """The hook's transform makes every fold's features and, at predict, the test rows': its file's
    bytes are part of the run, like its config."""
    cfg = _hook_config(tmp_path, table_comp)
    one_epoch = ["--config", cfg, "--set", "train.epochs=1"]
    run, hook = tmp_path / "outputs" / "table", tmp_path / "experiment" / "my_features.py"
    assert train.main([*one_epoch, "--fold", "0"]) == 0
    sha = hashlib.sha256(hook.read_bytes()).hexdigest()
    assert json.loads((run / "run.json").read_text())["hook_sha256"] == sha
    assert torch.load(run / "fold0" / "best.pt", weights_only=True)["preprocessor"]["hook"]["sha256"] == sha
    assert train.main([*one_epoch, "--fold", "0", "--resume"]) == 0  # the same file: the run goes on
    best = (run / "fold0" / "best.pt").read_bytes()

    # The defect: the same config with an edited transform, and folds of both versions in one run.
    hook.write_text(HOOK.replace('rows["x1"] - state["mean"]', '2 * (rows["x1"] - state["mean"])'))
    capsys.readouterr()
    said = f"was trained with feature hook my_features.py:Centred file sha256 {sha[:12]} and {hook} says sha256 "
    refused(capsys, train.main([*one_epoch, "--fold", "1"]), f"run.json {said}", "--set name=table-2",
            "--overwrite")
    refused(capsys, train.main([*one_epoch, "--fold", "0", "--resume"]), f"--resume: {run / 'fold0' / 'last.pt'} "
            f"{said}", "--overwrite")
    refused(capsys, predict.main(one_epoch), f"best.pt {said}", "put back the file", "retrain the run")
    assert (run / "fold0" / "best.pt").read_bytes() == best and not list(run.glob("fold1/*.pt"))
    assert not (tmp_path / "submissions").exists()
    assert train.main([*one_epoch, "--fold", "0", "--overwrite"]) == 0
    edited = hashlib.sha256(hook.read_bytes()).hexdigest()
    assert json.loads((run / "run.json").read_text())["hook_sha256"] == edited != sha


def test_a_checkpoint_that_does_not_record_its_hooks_content_is_not_predicted_on_trust(table_comp, tmp_path):
    """A kit before the hook's content was recorded: which version trained it is unknown."""
    cfg = load_config(_hook_config(tmp_path, table_comp))
    state = fold_state(config_to_dict(cfg), ["0", "1"])
    state.preprocessor = {"hook": {"spec": "my_features.py:Centred", "state": {}}}
    with pytest.raises(CompetitionError, match=r"file of unrecorded content \(an older kit trained it\) and .*"
                                               r"my_features.py says sha256 [0-9a-f]{12}; .*retrain the run"):
        check_trained_with(cfg, state, tmp_path / "best.pt", ["0", "1"])
    state.preprocessor["hook"]["sha256"] = hashlib.sha256(HOOK.encode()).hexdigest()
    check_trained_with(cfg, state, tmp_path / "best.pt", ["0", "1"])  # recorded and the same: predicted
    # Folds fit with two versions of the hook are not one run, whatever the config says.
    other = fold_state(config_to_dict(cfg), ["0", "1"])
    other.preprocessor = {"hook": {"spec": "my_features.py:Centred", "sha256": "f" * 64, "state": {}}}
    with pytest.raises(CompetitionError, match=r"fold1.pt was trained with feature hook my_features.py:Centred file "
                                               r"sha256 ffffffffffff and .*fold0.pt says sha256 [0-9a-f]{12}; "):
        check_same_run([(tmp_path / "fold0.pt", state), (tmp_path / "fold1.pt", other)])


BROKEN_HOOKS = {
    "fit raises": (HOOK.replace('"mean": float(rows["x1"].mean())', '"mean": rows["nope"]'), "Centred",
                   ["fit failed", "my_features.py:", "KeyError"]),
    "state not plain": (HOOK.replace('float(rows["x1"].mean())', 'np.float32(1.0)'), "Centred",
                        ["plain data", "state['mean']", "numpy.float32"]),
    "no such class": (HOOK, "Missing", ["my_features.py defines no Missing"]),
    "wrong result": (HOOK.replace("return pd.DataFrame(", "return np.zeros(3) if True else pd.DataFrame("), "Centred",
                     ["transform must return a DataFrame", "got a ndarray"]),
    "needs the target": (HOOK.replace('rows["x1"] - state["mean"]', 'rows["x1"] - rows["target"]'), "Centred",
                         ["transform failed", "KeyError: 'target'"]),
}


@pytest.mark.parametrize("case", BROKEN_HOOKS)
def test_a_broken_hook_is_one_line_and_nothing_is_written(table_comp, tmp_path, capsys, case):
    body, name, culprits = BROKEN_HOOKS[case]
    cfg = _hook_config(tmp_path, table_comp, body, f"my_features.py:{name}")
    code = train.main(["--config", cfg, "--fold", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: feature hook"), err
    for culprit in culprits:
        assert culprit in err, err
    assert not (tmp_path / "outputs").exists() and not (table_comp[1] / "folds.csv").exists()


def test_a_malformed_hook_spec_names_the_key(table_comp, tmp_path, capsys):
    cfg = _hook_config(tmp_path, table_comp, spec="my_features.Centred")
    assert train.main(["--config", cfg]) == 2
    assert "data.features: expected path/to/file.py:ClassName" in capsys.readouterr().err
