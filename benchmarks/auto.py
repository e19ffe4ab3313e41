"""`python -m competition.auto` against AutoGluon at the same time budgets, on the held-out splits of
benchmarks/tables.py: Titanic (the shipped config and its feature hook), scikit-learn's breast_cancer
and wine (the MLP settings of tables.py). For each budget and split: the held-out accuracy of auto's
submission, its estimate (the blend's cross-fitted CV), how much the choice among its trials flatters
the best CV, its trials, and the wall-clock seconds of the whole command against the budget; then
AutoGluon's `best_quality` preset given the same budget. Results go to benchmarks/RESULTS.md.

    python benchmarks/auto.py [--budgets 2m,5m,15m] [--splits 3] [--datasets titanic,breast_cancer,wine]
                              [--autogluon /work/venv-ag/bin/python] [--no-write]
                              [--tools auto|autogluon] [--json rows.json] [--combine a.json b.json] [--seeds 2,3]
                              [--keep DIR]

--tools runs one side only (e.g. each side as its own process, at the same time, with --json), and
--combine renders the section from the rows they saved, merged by dataset, budget and split seed.

AutoGluon runs in its own virtualenv (see benchmarks/tables.py). Each auto run is its own process,
timed from its start to its exit, as a person would time it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baselines import write_titanic  # noqa: E402
from results import machine_name, publish  # noqa: E402
from tables import autogluon, held_out, kit_config, split_of, write_split  # noqa: E402

from competition.core.durations import format_duration, parse_duration  # noqa: E402

TITLE = "auto: a time-budgeted search against AutoGluon"


@lru_cache
def held_out_rows(name: str, titanic_csv: Path) -> int:
    """The held-out rows of a split of this dataset (a stratified 20%: the same count for every seed); one
    split made per dataset, whatever the number of budgets rendered."""
    return len(split_of(name, 1, titanic_csv)[1])


def prepare(name: str, seed: int, work: Path, titanic_csv: Path) -> tuple[Path, str, str]:
    """The split in Kaggle's layout under work/<name> (answers in solution.csv): (root, label, id column)."""
    root = work / name
    tr, te = split_of(name, seed, titanic_csv)
    if name == "titanic":
        write_titanic(root, tr, te)
        return root, "Survived", "PassengerId"
    write_split(root, tr, te, "id", "target")
    return root, "target", "id"


def run_auto(name: str, root: Path, work: Path, seconds: float) -> dict:
    """One `python -m competition.auto` process on the split: its numbers and its wall-clock time."""
    out = work / "auto.csv"
    argv = [sys.executable, "-m", "competition.auto", *kit_config(name, root, work), "--time-budget", f"{seconds:g}",
            "--output", str(out)]
    began = time.monotonic()
    proc = subprocess.run(argv, cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    wall = time.monotonic() - began
    (work / "auto.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(f"auto failed on {name}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
        return {"auto seconds": wall}
    summary = json.loads((work / "outputs" / "auto" / name / "summary.json").read_text())  # the study: the config's name
    counts = summary["trials"]
    return {"auto": held_out(out, root / "solution.csv"), "auto estimate": summary["estimate"],
            "auto best trial CV": summary["best"]["cv"], "auto selection drop": summary["selection"]["drop"],
            "auto trials": sum(counts.values()), "auto finished": counts.get("complete", 0),
            "auto best recipe": summary["best"]["recipe"], "auto submitted": summary["choice"]["submitted"],
            "auto seconds": wall}


def one(name: str, seed: int, seconds: float, ag: str | None, titanic_csv: Path, with_auto: bool = True,
        keep: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) if keep is None else keep / f"{name}-{format_duration(seconds)}-seed{seed}"
        work.mkdir(parents=True, exist_ok=True)
        root, label, idc = prepare(name, seed, work, titanic_csv)
        row = {"dataset": name, "budget": seconds, "split seed": seed}
        if with_auto:
            row.update(run_auto(name, root, work, seconds))
        if ag:
            began = time.monotonic()
            row["AutoGluon"] = autogluon(ag, seconds, root, label, idc, work)
            row["AutoGluon seconds"] = time.monotonic() - began
    return row


def _mean(g: pd.DataFrame, col: str, fmt: str = ".4f", how: str = "mean") -> str:
    return f"{getattr(g[col], how)():{fmt}}" if col in g and g[col].notna().any() else "-"


def _against(g: pd.DataFrame, rows: int) -> str:
    """Held-out rows auto got right beyond AutoGluon's over the splits both ran, and on how many splits
    auto was ahead, level and behind: the target read split by split, not only from the mean."""
    if "auto" not in g or "AutoGluon" not in g:
        return "-"
    both = g.dropna(subset=["auto", "AutoGluon"])
    if both.empty:
        return "-"
    diff = ((both["auto"] - both["AutoGluon"]) * rows).round().astype(int)
    return f"{diff.sum():+d} ({(diff > 0).sum()}/{(diff == 0).sum()}/{(diff < 0).sum()})"


def render(rows: list[dict], args) -> str:
    df = pd.DataFrame(rows)
    lines = [f"Machine: {machine_name()}, shared with other jobs while it ran: compare rows of this run only. "
             f"Command: `python benchmarks/auto.py --budgets {args.budgets} --splits {args.splits} --datasets "
             f"{args.datasets}" + (" --autogluon VENV/bin/python" if args.autogluon else "") + "`. Held-out accuracy "
             "on a fresh stratified 20% of each source per split seed (benchmarks/tables.py's splits), never seen by "
             "either; auto's 'estimate' is the cross-fitted score of the way it submitted (every step of the choice "
             "made on the other folds); 'drop' is how much choosing the best of its trials flatters the best CV; "
             "'submitted' counts the splits where auto submitted its best trial alone, its blend of the best "
             "(blend) or of the portfolio's trials; 'seconds' is the wall-clock time of the whole command, interpreter "
             "start to exit, against the budget. AutoGluon: `TabularPredictor(presets='best_quality', time_limit="
             "budget, num_cpus=2, dynamic_stacking=False)`.", "",
             "| dataset | budget | splits | auto held-out | auto estimate | best trial CV | drop | trials (finished) "
             "| submitted | auto seconds (max) | AutoGluon held-out | AutoGluon seconds (max) | auto − AutoGluon, rows "
             "(splits ahead/level/behind) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, budget), g in df.groupby(["dataset", "budget"], sort=False):
        trials = f"{_mean(g, 'auto trials', '.1f')} ({_mean(g, 'auto finished', '.1f')})"
        took = g["auto submitted"].value_counts() if "auto submitted" in g else pd.Series(dtype=int)
        submitted = ", ".join(f"{way} {n}" for way, n in took.items()) or "-"
        lines.append(f"| {name} | {format_duration(budget)} | {len(g)} | {_mean(g, 'auto')} | {_mean(g, 'auto estimate')} "
                     f"| {_mean(g, 'auto best trial CV')} | {_mean(g, 'auto selection drop')} | {trials} | {submitted} | "
                     f"{_mean(g, 'auto seconds', '.0f', 'max')} | {_mean(g, 'AutoGluon')} | "
                     f"{_mean(g, 'AutoGluon seconds', '.0f', 'max')} | {_against(g, held_out_rows(name, args.titanic))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="2m,5m,15m")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--seeds", default=None, help="split seeds to run, e.g. 2,3 (default: 1..--splits)")
    parser.add_argument("--datasets", default="titanic,breast_cancer,wine")
    parser.add_argument("--titanic", type=Path, default=REPO / "data" / "titanic" / "train.csv")
    parser.add_argument("--autogluon", default=None, help="the python of a virtualenv with autogluon.tabular")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here, after each one")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--tools", default="auto,autogluon", help="which sides to run (AutoGluon needs --autogluon)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each split's folder (data, study, every trial's run) under this folder")
    parser.add_argument("--combine", type=Path, nargs="+", default=None, help="render the rows of these --json files")
    args = parser.parse_args()
    if args.combine:
        merged: dict = {}
        for path in args.combine:
            for r in json.loads(path.read_text()):
                merged.setdefault((r["dataset"], r["budget"], r["split seed"]), {}).update(r)
        publish(TITLE, render(list(merged.values()), args), args.no_write)
        return
    tools = args.tools.split(",")
    ag = args.autogluon if "autogluon" in tools else None
    rows = []
    for budget in (parse_duration(b, "--budgets") for b in args.budgets.split(",")):
        for name in args.datasets.split(","):
            for seed in ([int(x) for x in args.seeds.split(",")] if args.seeds else range(1, args.splits + 1)):
                rows.append(one(name, seed, budget, ag, args.titanic, "auto" in tools, args.keep))
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows))
    publish(TITLE, render(rows, args), args.no_write)


if __name__ == "__main__":
    main()
