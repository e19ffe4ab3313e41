"""The kit's fold ensemble against what a competitor would fit instead (scikit-learn), on fresh
hold-out splits: an SVC on the digits; logistic regression, random forest and gradient boosting on
Titanic. Each split: the kit trains every fold on the train part through its CLIs and predicts the
held-out part; the baselines fit the same train part. Results go to benchmarks/RESULTS.md.

    python benchmarks/baselines.py [--digits-splits 3] [--titanic-splits 5] [--shared ../shared]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import machine_name, write_section  # noqa: E402

from competition import predict, train  # noqa: E402
from competition.config import shipped_dir  # noqa: E402
from competition.data.demos import build_digits  # noqa: E402
from competition.data.features import FeatureHook, TabularPreprocessor  # noqa: E402


def run_kit(config: str, root: Path, work: Path, overrides: list[str]) -> tuple[float, float, float]:
    """Train every fold and predict through the CLIs; returns (cv, held-out accuracy, seconds)."""
    common = ["--config", config, "--set", f"data.root={root}", "--set", "data.demo=null",
              "--set", f"output_dir={work / 'outputs'}", "--set", f"submission_dir={work / 'subs'}"]
    for o in overrides:
        common += ["--set", o]
    start = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        assert train.main([*common, "--fold", "all"]) == 0
        assert predict.main([*common, "--output", str(work / "sub.csv")]) == 0
    seconds = time.time() - start
    cv = json.loads((work / "outputs" / config / "cv.json").read_text())["cv"]
    sub = pd.read_csv(work / "sub.csv")
    solution = pd.read_csv(root / "solution.csv")
    merged = sub.merge(solution, on=sub.columns[0], suffixes=("", "_true"))
    target = sub.columns[1]
    return cv, float((merged[target] == merged[f"{target}_true"]).mean()), seconds


def digits(splits: int, overrides: list[str]) -> list[dict]:
    data = load_digits()
    rows = []
    for seed in range(1, splits + 1):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "digits"
            build_digits(root, seed=seed)
            train_ids = pd.read_csv(root / "train.csv")["id"].to_numpy()
            test_ids = pd.read_csv(root / "test.csv")["id"].to_numpy()
            X, y = data.data, data.target
            svc = SVC().fit(X[train_ids], y[train_ids])
            tuned = GridSearchCV(SVC(), {"C": [1, 3, 10, 30], "gamma": ["scale", 0.001, 0.0005]}, cv=5, n_jobs=1)
            tuned.fit(X[train_ids], y[train_ids])
            cv, acc, secs = run_kit("digits", root, Path(tmp), overrides)
            rows.append({
                "split seed": seed,
                "kit CV": cv,
                "kit held-out": acc,
                "SVC()": float((svc.predict(X[test_ids]) == y[test_ids]).mean()),
                "SVC tuned (5-fold grid)": float((tuned.predict(X[test_ids]) == y[test_ids]).mean()),
                "kit seconds": secs,
            })
            print(rows[-1], flush=True)
    return rows


def _basic_features(df: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    """What a first Titanic notebook feeds a model: the raw columns, imputed and one-hot."""
    out = pd.DataFrame({
        "Pclass": df["Pclass"],
        "Sex": (df["Sex"] == "female").astype(float),
        "Age": df["Age"].fillna(reference["Age"].median()),
        "SibSp": df["SibSp"],
        "Parch": df["Parch"],
        "Fare": df["Fare"].fillna(reference["Fare"].median()),
    })
    for port in ("C", "Q", "S"):
        out[f"Embarked_{port}"] = (df["Embarked"].fillna("S") == port).astype(float)
    return out.to_numpy(dtype=float)


# What a competitor fits instead of the kit, on the raw columns and on the kit's features.
TITANIC_BASELINES = {
    "LogReg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    "RandomForest": lambda: RandomForestClassifier(n_estimators=500, min_samples_leaf=2, random_state=0, n_jobs=1),
    "GradBoost": lambda: GradientBoostingClassifier(random_state=0),
}


def titanic_split(full: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A held-out 20% of Kaggle's train.csv, stratified, fresh per seed."""
    return train_test_split(full, test_size=0.2, random_state=seed, stratify=full["Survived"])


def write_titanic(root: Path, tr: pd.DataFrame, te: pd.DataFrame) -> None:
    """The split in Kaggle's layout, the held-out answers in solution.csv."""
    root.mkdir()
    tr.to_csv(root / "train.csv", index=False)
    te.drop(columns="Survived").to_csv(root / "test.csv", index=False)
    te[["PassengerId"]].assign(Survived=0).to_csv(root / "sample_submission.csv", index=False)
    te[["PassengerId", "Survived"]].to_csv(root / "solution.csv", index=False)


def titanic_baselines(tr: pd.DataFrame, te: pd.DataFrame) -> dict:
    """Held-out accuracy of each baseline, on the raw columns and on the kit's features."""
    features = [c for c in tr.columns if c not in ("PassengerId", "Survived")]
    pre = TabularPreprocessor.fit(tr, features, FeatureHook("titanic_features.py:TitanicFeatures", shipped_dir()))
    row = {}
    for name, make in TITANIC_BASELINES.items():
        basic = make().fit(_basic_features(tr, tr), tr["Survived"])
        row[f"{name} (raw columns)"] = float((basic.predict(_basic_features(te, tr)) == te["Survived"]).mean())
        eng = make().fit(pre.transform(tr), tr["Survived"])
        row[f"{name} (kit features)"] = float((eng.predict(pre.transform(te)) == te["Survived"]).mean())
    return row


def titanic(splits: int, shared: Path, overrides: list[str]) -> list[dict]:
    full = pd.read_csv(shared / "data" / "titanic" / "train.csv")
    rows = []
    for seed in range(1, splits + 1):
        tr, te = titanic_split(full, seed)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "titanic"
            write_titanic(root, tr, te)
            cv, acc, secs = run_kit("titanic", root, Path(tmp), overrides)
        row = {"split seed": seed, "kit CV": cv, "kit held-out": acc, **titanic_baselines(tr, te)}
        row["kit seconds"] = secs
        rows.append(row)
        print(row, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    df = pd.DataFrame(rows)
    mean = df.drop(columns=["split seed"]).mean().to_dict()
    df = pd.concat([df, pd.DataFrame([{"split seed": "mean", **mean}])], ignore_index=True)
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) and c != "kit seconds" else
                                      (f"{v:.0f}" if c == "kit seconds" and isinstance(v, float) else str(v))
                                      for c, v in r.items()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits-splits", type=int, default=3)
    parser.add_argument("--titanic-splits", type=int, default=5)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for the kit")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    body = [f"Machine: {machine_name()}. Command: `python benchmarks/baselines.py --digits-splits "
            f"{args.digits_splits} --titanic-splits {args.titanic_splits}`. Accuracy on a held-out 20% of each "
            "source (a fresh stratified split per seed, never seen by the kit's folds); 'kit CV' is the kit's own "
            "out-of-fold estimate on the train part; the kit runs the shipped configs unchanged."]
    if args.titanic_splits:
        body += ["", "**Titanic** (Kaggle train.csv, 891 rows; kit = `--config titanic`, MLP per fold, 5-fold ensemble):",
                 "", table(titanic(args.titanic_splits, args.shared, args.overrides))]
    if args.digits_splits:
        body += ["", "**Digits** (scikit-learn's 1,797 8x8 digits; kit = `--config digits`, resnet18 at 32 px, "
                 "5-fold ensemble):", "", table(digits(args.digits_splits, args.overrides))]
    if args.overrides:
        body.insert(1, f"Kit overrides: {' '.join('--set ' + o for o in args.overrides)}")
    if args.no_write:
        print("\n".join(body))
    else:
        write_section("Fold ensemble against scikit-learn baselines", "\n".join(body))


if __name__ == "__main__":
    main()
