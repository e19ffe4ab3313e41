"""How auto's final choice among its trials holds up on held-out rows: on the folders that
`benchmarks/auto.py --keep DIR` kept (each split's data, study and every trial's run), the finished
trials' kept predictions are combined by each way of choosing, and each choice is scored twice — its
cross-fitted CV (every step of the choice, the ranking of the trials included, made without the fold
it scores) and its held-out accuracy on the split's solution.csv. No training: a few seconds a split.

    python benchmarks/auto_choice.py DIR [DIR ...] [--no-write]

The ways of choosing:
- auto: the kit's own choice (competition.experiments.blending.choose): best, top20 or portfolio,
  whichever scores higher across the folds — its held-out accuracy, and the cross-fit of the way it took;
- top20: the 20 best trials by CV, greedy ensemble selection on all out-of-fold rows (auto before it
  chose);
- recipe_best: the best trial of each recipe, greedy;
- portfolio: the portfolio's trials (each recipe's known-good settings), greedy;
- bagged: greedy selection on 20 random halves of the 20 best, weights averaged (Caruana et al., 2006);
- best: the best trial alone.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import machine_name, publish  # noqa: E402

from competition.core.choices import AUTO_DIR  # noqa: E402
from competition.core.metrics import METRICS  # noqa: E402
from competition.experiments.blending import blend_of, blend_of_best, choose, ranked  # noqa: E402
from competition.experiments.standings import stored_target  # noqa: E402
from competition.io.prob_columns import read_oof_probs  # noqa: E402
from competition.io.runs import RunRecord  # noqa: E402

TITLE = "auto: choosing among the trials, held out"
TOP, BAGS = 20, 20


def load(split: Path) -> dict:
    """The split's finished trials: truth, folds, each trial's out-of-fold and test probabilities,
    whether it was a portfolio trial, its recipe; and the held-out truth."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = next((split / "outputs" / AUTO_DIR).iterdir()).name
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{split / 'outputs' / AUTO_DIR / name / 'study.db'}")
    trials = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run = split / "outputs" / t.user_attrs.get("run", "?")
        if (run / "oof.csv").is_file() and (run / "test_probs.csv").is_file():
            trials.append((t, run))
    record = RunRecord.read(trials[0][1])
    target = stored_target(record.config, record.classes)
    idc = record.config["data"]["id_column"]
    first = pd.read_csv(trials[0][1] / "oof.csv", dtype={idc: str}).sort_values(idc)
    oof, test = [], []
    for _, run in trials:
        o = pd.read_csv(run / "oof.csv", dtype={idc: str}).set_index(idc).loc[first[idc]]
        te = pd.read_csv(run / "test_probs.csv", dtype={idc: str}).sort_values(idc)
        oof.append(read_oof_probs(o, record.classes))
        test.append(read_oof_probs(te, record.classes))
    root = next(p for p in split.iterdir() if (p / "solution.csv").is_file())
    sol = pd.read_csv(root / "solution.csv", dtype=str).sort_values(idc)
    label = next(c for c in sol.columns if c != idc)
    classes = [str(c) for c in record.classes]
    assert list(sol[idc]) == list(te[idc])
    return {"y": target.encode(first.reset_index(drop=True), run / "oof.csv"), "fold": first["fold"].to_numpy(),
            "oof": oof, "test": test, "truth": sol[label].map(classes.index).to_numpy(),
            "portfolio": np.array(["fixed_params" in t.system_attrs and "continues" not in t.user_attrs
                                   for t, _ in trials]),
            "recipe": [t.params["recipe"] for t, _ in trials], "metric": METRICS[record.config["train"]["metric"]]}


def _order(d, rows) -> list[int]:
    return ranked(d["metric"], d["y"][rows], [p[rows] for p in d["oof"]])


def _sparse(w: np.ndarray) -> dict[int, float]:
    return {i: float(x) for i, x in enumerate(w) if x > 0}


def top20(d, rows, rng) -> dict[int, float]:
    return _sparse(blend_of_best(d["metric"], d["y"][rows], [p[rows] for p in d["oof"]], TOP))


def recipe_best(d, rows, rng) -> dict[int, float]:
    order = _order(d, rows)
    return _greedy(d, rows, [next(i for i in order if d["recipe"][i] == r) for r in dict.fromkeys(d["recipe"])])


def portfolio(d, rows, rng) -> dict[int, float]:
    return _greedy(d, rows, [i for i in range(len(d["oof"])) if d["portfolio"][i]])


def bagged(d, rows, rng) -> dict[int, float]:
    chosen, total = _order(d, rows)[:TOP], {}
    for _ in range(BAGS):
        half = list(rng.choice(chosen, size=max(1, len(chosen) // 2), replace=False))
        for i, w in _greedy(d, rows, half).items():
            total[i] = total.get(i, 0.0) + w / BAGS
    return total


def best(d, rows, rng) -> dict[int, float]:
    return {_order(d, rows)[0]: 1.0}


def _greedy(d, rows, chosen) -> dict[int, float]:
    return _sparse(blend_of(d["metric"], d["y"][rows], [p[rows] for p in d["oof"]], chosen))


WAYS: dict[str, Callable] = {"top20": top20, "recipe_best": recipe_best, "portfolio": portfolio, "bagged": bagged,
                             "best": best}


def _mix(preds, weights: dict[int, float]) -> np.ndarray:
    return sum(w * preds[i] for i, w in weights.items())


def score(d: dict, way: Callable, seed: int) -> dict:
    """The way's cross-fitted CV (each fold's rows combined as the way chooses on the other folds) and
    the held-out accuracy of its choice on every out-of-fold row."""
    rng = np.random.default_rng(seed)
    honest = np.zeros_like(d["oof"][0])
    for k in np.unique(d["fold"]):
        held = d["fold"] == k
        honest[held] = _mix([p[held] for p in d["oof"]], way(d, ~held, rng))
    weights = way(d, np.ones(len(d["y"]), dtype=bool), rng)
    test = _mix(d["test"], weights)
    return {"cross-fit": d["metric"].best(d["y"], honest), "fitted": d["metric"].best(d["y"], _mix(d["oof"], weights)),
            "held-out": float(np.mean(test.argmax(1) == d["truth"])), "runs": len(weights)}


def auto(d: dict) -> dict:
    """The kit's choice on every out-of-fold row, and the cross-fit of the way it took (its estimate)."""
    c = choose(d["metric"], d["y"], d["fold"], d["oof"], TOP, list(np.flatnonzero(d["portfolio"])))
    rows = np.ones(len(d["y"]), dtype=bool)
    weights = {"best": lambda: {c.order[0]: 1.0}, "blend": lambda: top20(d, rows, None),
               "portfolio": lambda: portfolio(d, rows, None)}[c.way]()
    return {"cross-fit": c.scores[c.way], "fitted": d["metric"].best(d["y"], _mix(d["oof"], weights)),
            "held-out": float(np.mean(_mix(d["test"], weights).argmax(1) == d["truth"])), "runs": len(weights),
            "took": c.way}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="--keep folders of benchmarks/auto.py")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    for split in sorted(p for f in args.folders for p in f.iterdir() if (p / "outputs" / AUTO_DIR).is_dir()):
        d = load(split)
        rows.append({"split": split.name, "way": "auto", "trials": len(d["oof"]), **auto(d)})
        print(rows[-1], flush=True)
        for name, way in WAYS.items():
            rows.append({"split": split.name, "way": name, "trials": len(d["oof"]), **score(d, way, 0)})
            print(rows[-1], flush=True)
    if not rows:
        parser.error(f"no split folder with outputs/{AUTO_DIR}/ under {', '.join(map(str, args.folders))}: give the "
                     "folders --keep was given")
    df = pd.DataFrame(rows)
    lines = [f"Machine: {machine_name()}. Command: `python benchmarks/auto_choice.py DIR ...` on the folders of "
             "`benchmarks/auto.py --keep DIR`. Accuracy; cross-fit: every step of the choice made without the fold "
             "it scores.", "", "| split | trials | " + " | ".join(f"{w} held-out (cross-fit)" for w in ["auto", *WAYS])
             + " |", "|---|---|" + "---|" * (len(WAYS) + 1)]
    for split, g in df.groupby("split", sort=False):
        cells = [f"{r['held-out']:.4f} ({r['cross-fit']:.4f})" + (f" {r['took']}" if r["way"] == "auto" else "")
                 for _, r in g.iterrows()]
        lines.append(f"| {split} | {g['trials'].iloc[0]} | " + " | ".join(cells) + " |")
    df["dataset"] = df["split"].str.rsplit("-", n=1).str[0]  # the dataset and budget
    for dataset, g in df.groupby("dataset", sort=False):
        mean = g.groupby("way", sort=False)[["held-out", "cross-fit"]].mean()
        lines.append(f"| {dataset}: mean | | " + " | ".join(
            f"{mean.loc[w, 'held-out']:.4f} ({mean.loc[w, 'cross-fit']:.4f})" for w in ["auto", *WAYS]) + " |")
    publish(TITLE, "\n".join(lines), args.no_write)


if __name__ == "__main__":
    main()
