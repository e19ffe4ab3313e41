"""Tables the way table competitions are won: the kit's LightGBM, CatBoost, XGBoost and MLP runs and
their blend, against scikit-learn's baselines, CatBoost's defaults on the raw columns and AutoGluon's
`best_quality` preset, on the same held-out splits: Titanic (benchmarks/baselines.py's splits) and
scikit-learn's breast_cancer and wine. Results go to benchmarks/RESULTS.md.

    python benchmarks/tables.py [--splits 10] [--datasets titanic,breast_cancer,wine]
                                [--autogluon /work/venv-ag/bin/python --autogluon-seconds 120]

AutoGluon runs in its own virtualenv (a peer, never a dependency of the kit): `python3 -m venv
VENV && VENV/bin/pip install 'autogluon.tabular[all]'`, then `--autogluon VENV/bin/python`.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.model_selection import train_test_split

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baselines import TITANIC_BASELINES, table, titanic_baselines, titanic_split, write_titanic  # noqa: E402
from results import machine_name, write_section  # noqa: E402

from competition import blend, predict, train  # noqa: E402

KIT_RUNS = ("lightgbm", "catboost", "xgboost", "mlp")
GBDT_PATIENCE = 50  # early-stopping rounds for the GBDT runs (train.patience)
# The MLP the shipped titanic config trains, for the tables without a feature hook.
MLP = {"name": "mlp", "hidden_sizes": [64, 32], "drop_rate": 0.3}
TRAIN = {"epochs": 40, "freeze_epochs": 0, "batch_size": 32, "lr": 3.0e-3, "weight_decay": 1.0e-2, "warmup_epochs": 1,
         "patience": 10, "metric": "accuracy", "num_workers": 0}
TITANIC_RAW = ["Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"]

AUTOGLUON = '''
import sys, pandas as pd
from autogluon.tabular import TabularPredictor
root, label, idc, seconds, out, work = sys.argv[1:7]
train = pd.read_csv(f"{root}/train.csv").drop(columns=[idc])
test = pd.read_csv(f"{root}/test.csv")
predictor = TabularPredictor(label=label, eval_metric="accuracy", path=work, verbosity=0).fit(
    train, presets="best_quality", time_limit=float(seconds), num_cpus=2, dynamic_stacking=False)
pd.DataFrame({idc: test[idc], label: predictor.predict(test.drop(columns=[idc]))}).to_csv(out, index=False)
'''


def held_out(sub: Path, solution: Path) -> float:
    s, truth = pd.read_csv(sub, dtype=str), pd.read_csv(solution, dtype=str)
    merged = s.merge(truth, on=s.columns[0], suffixes=("", "_true"))
    return float((merged[s.columns[1]] == merged[f"{s.columns[1]}_true"]).mean())


def kit_config(name: str, root: Path, work: Path) -> list[str]:
    """The --config and --sets of one dataset: the shipped titanic config, or its MLP settings on a
    table without a feature hook."""
    common = ["--set", f"data.root={root}", "--set", f"output_dir={work / 'outputs'}", "--set", f"submission_dir={work}"]
    if name == "titanic":
        return ["--config", "titanic", *common]
    cfg = {"name": name, "task": "tabular", "seed": 42, "data": {"root": str(root), "id_column": "id",
           "target_column": "target", "image_column": None}, "folds": {"n_splits": 5, "strategy": "stratified"},
           "model": MLP, "train": TRAIN, "predict": {"tta": []}}
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return ["--config", str(path), *common]


def run_kit(name: str, root: Path, work: Path, runs: list[str]) -> dict:
    """Each kit run (train every fold, predict) and the blend of them all: held-out accuracy, the
    CV as submitted, seconds."""
    base, row = kit_config(name, root, work), {}
    if not runs:  # a part of the run that only fits the peers
        return row
    for run in runs:
        sets = [*base, "--set", f"name={run}"]
        if run != "mlp":
            sets += ["--set", f"model.name={run}", "--set", f"train.patience={GBDT_PATIENCE}"]
        start, out = time.time(), work / f"{run}.csv"
        with contextlib.redirect_stdout(io.StringIO()):
            assert train.main([*sets, "--fold", "all"]) == 0, run
            assert predict.main([*sets, "--output", str(out)]) == 0, run
        row[f"kit {run}"] = held_out(out, root / "solution.csv")
        row[f"kit {run} CV"] = json.loads((work / "outputs" / run / "cv.json").read_text())["as_submitted"]["cv"]
        row[f"kit {run} seconds"] = time.time() - start
    if len(runs) < 2:  # a blend needs two runs or more
        return row
    out = work / "blend.csv"
    with contextlib.redirect_stdout(io.StringIO()):
        assert blend.main([*base, *runs, "--output", str(out)]) == 0
    record = json.loads((work / "outputs" / "blends" / "+".join(runs) / "blend.json").read_text())
    label = "kit blend" if runs == list(KIT_RUNS) else f"kit blend of {'+'.join(runs)}"
    row[label] = held_out(out, root / "solution.csv")
    row[f"{label} CV (cross-fit)"] = record["cross_fit"]["cv"]
    row[f"{label} weights"] = " ".join(f"{run} {w:.2f}" for run, w in record["weights"].items() if w)
    return row


def catboost_raw(tr: pd.DataFrame, te: pd.DataFrame, columns: list[str], label: str, seed: int) -> float:
    """CatBoost's defaults on the raw columns: what a competitor's first CatBoost notebook scores."""
    from catboost import CatBoostClassifier

    cats = [c for c in columns if tr[c].dtype == object or str(tr[c].dtype).startswith(("str", "string"))]
    x_tr, x_te = tr[columns].copy(), te[columns].copy()
    for c in cats:
        x_tr[c], x_te[c] = x_tr[c].fillna("NA").astype(str), x_te[c].fillna("NA").astype(str)
    model = CatBoostClassifier(random_seed=seed, verbose=False, allow_writing_files=False, thread_count=1)
    model.fit(x_tr, tr[label], cat_features=cats)
    return float((model.predict(x_te).ravel().astype(str) == te[label].astype(str).to_numpy()).mean())


def autogluon(python: str | None, seconds: float, root: Path, label: str, idc: str, work: Path) -> float | None:
    if not python:
        return None
    out = work / "autogluon.csv"
    proc = subprocess.run([python, "-c", AUTOGLUON, str(root), label, idc, str(seconds), str(out), str(work / "ag")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"AutoGluon failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return held_out(out, root / "solution.csv")


def sklearn_split(loader, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    data = loader(as_frame=True)
    frame = data.frame.copy()
    frame.insert(0, "id", np.arange(len(frame)))
    return train_test_split(frame, test_size=0.2, random_state=seed, stratify=frame["target"])


def split_of(name: str, seed: int, titanic_csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seed's (train, held-out) split of a benchmark table: Titanic's from its CSV, the others from
    scikit-learn's loaders."""
    if name == "titanic":
        return titanic_split(pd.read_csv(titanic_csv), seed)
    return sklearn_split({"breast_cancer": load_breast_cancer, "wine": load_wine}[name], seed)


def write_split(root: Path, tr: pd.DataFrame, te: pd.DataFrame, idc: str, label: str) -> None:
    root.mkdir()
    tr.to_csv(root / "train.csv", index=False)
    te.drop(columns=label).to_csv(root / "test.csv", index=False)
    te[[idc]].assign(**{label: tr[label].iloc[0]}).to_csv(root / "sample_submission.csv", index=False)
    te[[idc, label]].to_csv(root / "solution.csv", index=False)


def one_split(name: str, seed: int, shared: Path, runs: list[str], ag: str | None, ag_seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work, root = Path(tmp), Path(tmp) / name
        tr, te = split_of(name, seed, shared / "data" / "titanic" / "train.csv")
        if name == "titanic":
            write_titanic(root, tr, te)
            idc, label, raw = "PassengerId", "Survived", TITANIC_RAW
            baselines = titanic_baselines(tr, te)
        else:
            write_split(root, tr, te, "id", "target")
            idc, label, raw = "id", "target", [c for c in tr.columns if c not in ("id", "target")]
            baselines = {f"{n} (raw columns)": float((m().fit(tr[raw], tr[label]).predict(te[raw]) == te[label]).mean())
                         for n, m in TITANIC_BASELINES.items()}
        row = {"split seed": seed, **run_kit(name, root, work, runs), **baselines,
               "CatBoost defaults (raw columns)": catboost_raw(tr, te, raw, label, seed)}
        start = time.time()
        row["AutoGluon best_quality"] = autogluon(ag, ag_seconds, root, label, idc, work)
        row["AutoGluon seconds"] = time.time() - start if ag else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--seeds", default=None, help="split seeds like 1,2,3 (default 1 … --splits)")
    parser.add_argument("--from-json", type=Path, nargs="*", default=None,
                        help="render RESULTS.md from rows written by earlier --json runs (parallel parts of one run)")
    parser.add_argument("--datasets", default="titanic,breast_cancer,wine")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--runs", default=",".join(KIT_RUNS), help="the kit's runs, blended together")
    parser.add_argument("--autogluon", default=None, help="the python of a virtualenv with autogluon.tabular")
    parser.add_argument("--autogluon-seconds", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.from_json:
        parts: dict[str, dict] = {}  # dataset → seed → the row's columns from every part
        for path in args.from_json:
            for row in json.loads(path.read_text()):
                parts.setdefault(path.suffixes[-2].lstrip("."), {}).setdefault(row["split seed"], {}).update(
                    {k: v for k, v in row.items() if v is not None})
        sections = [(name, [parts[name][seed] for seed in sorted(parts[name])]) for name in args.datasets.split(",")
                    if name in parts]
        body = render(sections, args)
        print(body)
        if not args.no_write:
            write_section("Tables: gradient boosting, the MLP and their blend against the field", body)
        return
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(1, args.splits + 1))
    sections = []
    for name in args.datasets.split(","):
        rows = []
        for seed in seeds:
            runs = [r for r in args.runs.split(",") if r]
            rows.append(one_split(name, seed, args.shared, runs, args.autogluon, args.autogluon_seconds))
            print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
            if args.json:  # after every split: a part stopped early keeps its rows
                args.json.with_suffix(f".{name}.json").write_text(json.dumps(rows))
        sections.append((name, rows))
    body = render(sections, args)
    print(body)
    if not args.no_write:
        write_section("Tables: gradient boosting, the MLP and their blend against the field", body)


def render(sections: list[tuple[str, list[dict]]], args) -> str:
    splits = ", ".join(f"{name} {len(rows)}" for name, rows in sections)
    lines = [f"Machine: {machine_name()}, shared with other jobs while it ran (the parts of the run in parallel "
             f"processes too): compare the rows within this run only. Splits: {splits}. "
             f"Command: `python benchmarks/tables.py --datasets {args.datasets} --runs {args.runs}"
             + (f" --autogluon VENV/bin/python --autogluon-seconds {args.autogluon_seconds:g}" if args.autogluon else "")
             + " [--seeds …] --json ROWS` per part, then `--from-json ROWS.*.json`. AutoGluon: `TabularPredictor(presets="
             "'best_quality', time_limit, num_cpus=2, dynamic_stacking=False)` in its own virtualenv "
             "(dynamic stacking's held-out sub-fit does not finish inside short limits on this machine). Held-out accuracy on a fresh stratified 20% of each source per split seed (Titanic: "
             "benchmarks/baselines.py's splits), never seen by the kit's folds; the kit's runs use 5 folds, one "
             f"thread each, GBDTs with the kit's defaults and train.patience={GBDT_PATIENCE}; 'CV' is the CV as "
             "submitted on the train part; the blend is `competition.blend` of the kit's runs (its CV cross-fit)."]
    for name, rows in sections:
        df = pd.DataFrame(rows)
        held = [c for c in df.columns if c != "split seed" and "CV" not in c and "seconds" not in c and "weights" not in c]
        means = df[held].mean(numeric_only=True).sort_values(ascending=False)
        lines += ["", f"**{name}** (mean held-out accuracy over the splits each row ran, best first):", "",
                  "| model | splits | held-out accuracy | CV (train part) | seconds per split |", "|---|---|---|---|---|"]
        for col, mean in means.items():
            cv = f"{df[col + ' CV'].mean():.4f}" if col + " CV" in df else (
                f"{df[col + ' CV (cross-fit)'].mean():.4f} (cross-fit)" if col + " CV (cross-fit)" in df else "")
            secs = df[col + " seconds"].mean() if col + " seconds" in df else (
                df["AutoGluon seconds"].mean() if col.startswith("AutoGluon") else None)
            lines.append(f"| {col} | {int(df[col].notna().sum())} | {mean:.4f} | {cv} | {'' if secs is None or pd.isna(secs) else f'{secs:.0f}'} |")
        lines += ["", "<details><summary>per split</summary>", "", table(df[["split seed", *held]].to_dict("records")),
                  "", "</details>"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
