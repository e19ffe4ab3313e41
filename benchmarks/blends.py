"""Runs and their blend, one run each on the same folds, through the CLIs a competitor uses (train →
predict → blend): on the digits demo, resnet18, a second backbone and their blend (out-of-fold and
on the demo's held-out answers); on Titanic, the MLP, hist_gbm, random_forest and their blend,
beside the scikit-learn baselines of benchmarks/baselines.py on its held-out splits. Results go to
benchmarks/RESULTS.md.

    python benchmarks/blends.py [--second convnext_atto] [--second-epochs 12] [--titanic-splits 10] [--shared ../shared]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baselines import titanic_baselines, titanic_split, write_titanic  # noqa: E402
from results import machine_name, write_section  # noqa: E402

from competition import blend, predict, train  # noqa: E402
from competition.data.demos import build_digits  # noqa: E402

TITANIC_RUNS = {"mlp": [], "hist_gbm": ["model.name=hist_gbm"], "random_forest": ["model.name=random_forest"]}


def held_out(sub: Path, root: Path) -> float:
    """Accuracy of a submission file against the split's solution.csv."""
    got, truth = pd.read_csv(sub), pd.read_csv(root / "solution.csv")
    merged = got.merge(truth, on=got.columns[0], suffixes=("", "_true"))
    target = got.columns[1]
    return float((merged[target] == merged[f"{target}_true"]).mean())


def run(config: str, name: str, root: Path, work: Path, sets: list[str]) -> dict:
    """Train every fold and predict through the CLIs: CV as submitted, held-out accuracy, seconds."""
    args = ["--config", config, "--set", f"name={name}", "--set", f"data.root={root}", "--set", "data.demo=null",
            "--set", f"output_dir={work / 'outputs'}", "--set", f"submission_dir={work / 'subs'}"]
    for s in sets:
        args += ["--set", s]
    sub = work / f"{name}.csv"
    start = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        assert train.main([*args, "--fold", "all"]) == 0, name
        assert predict.main([*args, "--output", str(sub)]) == 0, name
    seconds = time.time() - start
    cv = json.loads((work / "outputs" / name / "cv.json").read_text())["as_submitted"]["cv"]
    return {"cv": cv, "held-out": held_out(sub, root), "seconds": seconds}


def blended(config: str, names: list[str], root: Path, work: Path, method: str = "weights") -> dict:
    """Blend the runs; the blend's OOF score (weights fit on those rows), its cross-fitted estimate,
    its weights and its held-out accuracy."""
    sub = work / f"blend-{method}.csv"
    name = f"blend-{method}"
    with contextlib.redirect_stdout(io.StringIO()):
        assert blend.main(["--config", config, "--set", f"data.root={root}", "--set", "data.demo=null",
                           "--set", f"output_dir={work / 'outputs'}", "--set", f"submission_dir={work / 'subs'}",
                           *names, "--method", method, "--name", name, "--output", str(sub)]) == 0
    record = json.loads((work / "outputs" / "blends" / name / "blend.json").read_text())
    return {"cv": record["blend_cv"]["cv"], "estimate": record["cross_fit"]["cv"], "weights": record["weights"],
            "held-out": held_out(sub, root)}


def digits(second: str, epochs: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        work, root = Path(tmp), Path(tmp) / "digits"
        build_digits(root)  # the demo's own split (seed 0): data/digits as `make demo` builds it
        runs = {"resnet18": run("digits", "resnet18", root, work, []),
                second: run("digits", second, root, work, [f"model.name={second}", f"train.epochs={epochs}"])}
        print(runs, flush=True)
        mix = {m: blended("digits", list(runs), root, work, m) for m in ("weights", "mean")}
        print(mix, flush=True)
    lines = ["| entry | CV (out of fold, as submitted) | held-out accuracy (360 test digits) | train + predict |",
             "|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['cv']:.5f} | {r['held-out']:.5f} | {r['seconds']:.0f} s |")
    for method, b in mix.items():
        w = ", ".join(f"{k} {v:.3f}" for k, v in b["weights"].items())
        lines.append(f"| blend, {method} ({w}) | {b['cv']:.5f} (cross-fitted estimate {b['estimate']:.5f}) | "
                     f"{b['held-out']:.5f} | - |")
    return "\n".join(lines)


def titanic(splits: int, shared: Path) -> str:
    full = pd.read_csv(shared / "data" / "titanic" / "train.csv")
    rows = []
    for seed in range(1, splits + 1):
        tr, te = titanic_split(full, seed)
        with tempfile.TemporaryDirectory() as tmp:
            work, root = Path(tmp), Path(tmp) / "titanic"
            write_titanic(root, tr, te)
            runs = {name: run("titanic", name, root, work, sets) for name, sets in TITANIC_RUNS.items()}
            mix = blended("titanic", list(runs), root, work)
        row = {"split seed": seed}
        for name, r in runs.items():
            row[f"{name} CV"], row[f"{name} held-out"] = r["cv"], r["held-out"]
        row.update({"blend CV (fit rows)": mix["cv"], "blend CV (cross-fit)": mix["estimate"],
                    "blend held-out": mix["held-out"],
                    "blend weights": " / ".join(f"{mix['weights'][n]:.2f}" for n in runs),
                    **titanic_baselines(tr, te),
                    "kit seconds": sum(r["seconds"] for r in runs.values())})
        rows.append(row)
        print(row, flush=True)
    return _table(rows)


def _table(rows: list[dict]) -> str:
    df = pd.DataFrame(rows)
    numeric = df.drop(columns=["split seed", "blend weights"]).mean().to_dict()
    df = pd.concat([df, pd.DataFrame([{"split seed": "mean", "blend weights": "", **numeric}])], ignore_index=True)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(
            (f"{v:.0f}" if c == "kit seconds" else f"{v:.4f}") if isinstance(v, (float, np.floating)) else str(v)
            for c, v in r.items()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--second", default="convnext_atto", help="the digits run's second backbone (a timm name)")
    parser.add_argument("--second-epochs", type=int, default=12, help="its train.epochs (resnet18 keeps the shipped 12)")
    parser.add_argument("--titanic-splits", type=int, default=10)
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    began = time.time()
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    body = [f"Machine: {machine_name()}. Command: `{threads}python benchmarks/blends.py --second {args.second} "
            f"--second-epochs {args.second_epochs} --titanic-splits {args.titanic_splits}`. Each entry is one run of a shipped config (its name and "
            f"model set with `--set`), trained on every fold and predicted through the CLIs, then blended with "
            f"`python -m competition.blend` on the same folds. 'CV' is the out-of-fold score as submitted; a blend's "
            f"'fit rows' CV comes from weights fit on those same rows, its 'cross-fit' estimate from weights fit on "
            f"the other folds' rows, fold by fold."]
    if not args.skip_digits:
        body += ["", f"**Digits** (the demo: 1,437 train, 360 held-out digits; `--config digits`, 5 folds; "
                 f"resnet18 as shipped, and `--set model.name={args.second} --set train.epochs={args.second_epochs}`):",
                 "", digits(args.second, args.second_epochs)]
    if args.titanic_splits:
        body += ["", "**Titanic** (Kaggle train.csv, 891 rows; a fresh stratified 20% held out per seed, as in "
                 "benchmarks/baselines.py; `--config titanic`, 5 folds; the MLP as shipped, `model.name=hist_gbm` and "
                 "`model.name=random_forest` with scikit-learn's defaults; baselines fit on the same train part):",
                 "", titanic(args.titanic_splits, args.shared)]
    body += ["", f"Total wall time: {(time.time() - began) / 60:.0f} min."]
    if args.no_write:
        print("\n".join(body))
    else:
        write_section("Blends of runs on the same folds", "\n".join(body))


if __name__ == "__main__":
    main()
