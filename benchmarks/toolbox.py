"""The training toolbox on real data, each variant beside its baseline on the same folds, in one run:

- transfer: the shipped `transfer` recipe on hymenoptera's train/ photos (3 folds), with and without
  an EMA of the weights, and with and without mixup; CV, and accuracy on the val/ photos no fold saw;
- imbalance: the digits with class 1 cut to 5% of its rows (train and held-out alike), scored by
  f1_macro: plain shuffle, the class-balanced sampler, class weights, and the focal loss;
- digits: the digits demo with and without mixup + CutMix.

    python benchmarks/toolbox.py [--part transfer imbalance digits] [--shared ../shared]
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

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import machine_name, write_section  # noqa: E402
from transfer_hymenoptera import SGD_RECIPE  # noqa: E402

from competition import predict, train  # noqa: E402
from competition.data.demos import build_digits  # noqa: E402

PLACEHOLDERS = {"imageNotFound.gif"}  # a Flickr "image not found" picture filed under ants


QUICK: list[str] = []  # --quick: a smoke test's overrides


def run(config: str, sets: list[str], out: Path) -> dict:
    """Train every fold and predict through the CLIs; the CV, the CV as submitted, the held-out score."""
    sets = [*sets, *QUICK]
    argv = ["--config", config, *[a for s in sets for a in ("--set", s)]]
    began = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        if train.main([*argv, "--fold", "all"]) != 0:
            raise SystemExit(f"training {sets} failed")
        trained = time.time()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            if predict.main([*argv, "--output", str(out)]) != 0:
                raise SystemExit(f"predicting {sets} failed")
    name = next(s.split("=", 1)[1] for s in sets if s.startswith("name="))
    output_dir = next(s.split("=", 1)[1] for s in sets if s.startswith("output_dir="))
    report = json.loads((Path(output_dir) / name / "cv.json").read_text())
    line = next(x for x in printed.getvalue().splitlines() if x.startswith("local leaderboard"))
    return {"cv": report["cv"], "submitted": report["as_submitted"]["cv"], "held_out": float(line.split(":")[1].split()[0]),
            "train_s": trained - began}


def table(rows: dict[str, dict], metric: str, baseline: str) -> list[str]:
    base = rows[baseline]["held_out"]
    lines = [f"| variant | CV {metric} (best epochs / as submitted) | held-out {metric} | vs {baseline} | train s |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        delta = "—" if name == baseline else f"{r['held_out'] - base:+.4f}"
        lines.append(f"| {name} | {r['cv']:.4f} / {r['submitted']:.4f} | {r['held_out']:.4f} | {delta} | {r['train_s']:.0f} |")
    return lines


def transfer(shared: Path, work: Path) -> str:
    data, root = shared / "data" / "hymenoptera", work / "hymenoptera"
    root.mkdir(parents=True)

    def photos(split: str) -> pd.DataFrame:
        return pd.DataFrame([{"id": f"{split}/{p.parent.name}/{p.name}", "image": str(p.resolve()), "label": p.parent.name}
                             for p in sorted((data / split).glob("*/*")) if p.name not in PLACEHOLDERS])

    train_df, val = photos("train"), photos("val")
    train_df.to_csv(root / "train.csv", index=False)
    val[["id", "image"]].to_csv(root / "test.csv", index=False)
    val[["id"]].assign(label="ants").to_csv(root / "sample_submission.csv", index=False)
    val[["id", "label"]].to_csv(root / "solution.csv", index=False)
    weights = shared / "weights" / "tf_efficientnet_lite0.in1k.safetensors"
    common = [f"data.root={root}", "data.solution=solution.csv", "model.name=tf_efficientnet_lite0", f"model.pretrained_file={weights}",
              "folds.n_splits=3", f"output_dir={work / 'outputs'}", *SGD_RECIPE]  # the recipe EMA and mixup apply to
    variants = {"recipe": [], "recipe + EMA (0.995)": ["train.ema_decay=0.995"],
                "recipe + mixup (0.2)": ["train.mixup_alpha=0.2"]}
    rows = {name: run("transfer", [*common, f"name=t{i}", *extra], work / f"t{i}.csv")
            for i, (name, extra) in enumerate(variants.items())}
    return "\n".join([
        f"Machine: {machine_name()}. Command: `python benchmarks/toolbox.py --part transfer`.",
        "",
        f"The shipped `transfer` recipe (tf_efficientnet_lite0, ImageNet weights from the shared file, 8 head-only "
        f"epochs then 3 of every layer, batch 32) on hymenoptera's {len(train_df)} train/ photos, 3 folds (the same "
        f"folds.csv for every variant); held out: the {len(val)} val/ photos, which no fold saw, scored from the "
        f"written submission.",
        "",
        *table(rows, "accuracy", "recipe"),
    ])


def _cut(frame: pd.DataFrame, keep: pd.Series) -> pd.DataFrame:
    return frame[frame["id"].isin(keep)]


def imbalance(work: Path) -> str:
    root = work / "digits_1"
    build_digits(root)
    answers = pd.concat([pd.read_csv(root / "train.csv")[["id", "label"]], pd.read_csv(root / "solution.csv")])
    ones = answers[answers["label"] == 1]
    kept_ones = set(ones["id"].sample(frac=0.05, random_state=0))
    keep = answers[(answers["label"] != 1) | answers["id"].isin(kept_ones)]["id"]
    for name in ("train.csv", "test.csv", "solution.csv", "sample_submission.csv"):
        _cut(pd.read_csv(root / name), keep).to_csv(root / name, index=False)
    train_counts = pd.read_csv(root / "train.csv")["label"].value_counts()
    common = [f"data.root={root}", "data.demo=null", "train.metric=f1_macro", f"output_dir={work / 'outputs'}"]
    variants = {"shuffle (baseline)": [], "balanced sampler": ["train.sampler=balanced"],
                "class weights": ["train.class_weights=balanced"], "focal loss (gamma 2)": ["train.loss=focal"]}
    rows = {name: run("digits", [*common, f"name=i{i}", *extra], work / f"i{i}.csv")
            for i, (name, extra) in enumerate(variants.items())}
    return "\n".join([
        f"Machine: {machine_name()}. Command: `python benchmarks/toolbox.py --part imbalance`.",
        "",
        f"scikit-learn's digits with class 1 cut to 5% of its rows, in the training and the held-out rows alike: "
        f"{train_counts.get(1, 0)} ones among {train_counts.sum()} training rows (the other classes "
        f"{train_counts.drop(1).min()}-{train_counts.drop(1).max()} each). The shipped `digits` config (resnet18 at "
        f"32 px, 5 folds, 12 epochs) with `train.metric: f1_macro`; the same folds.csv for every variant.",
        "",
        *table(rows, "f1_macro", "shuffle (baseline)"),
    ])


def digits(work: Path) -> str:
    root = work / "digits"
    build_digits(root)
    common = [f"data.root={root}", "data.demo=null", f"output_dir={work / 'outputs'}"]
    variants = {"digits (shipped)": [], "+ mixup 0.2 / CutMix 1.0, last 2 epochs unmixed":
                ["train.mixup_alpha=0.2", "train.cutmix_alpha=1.0", "train.mix_off_epochs=2"]}
    rows = {name: run("digits", [*common, f"name=d{i}", *extra], work / f"d{i}.csv")
            for i, (name, extra) in enumerate(variants.items())}
    return "\n".join([
        f"Machine: {machine_name()}. Command: `python benchmarks/toolbox.py --part digits`.",
        "",
        "The digits demo (resnet18 from scratch at 32 px, 5 folds, 12 epochs; 1,437 training and 360 held-out "
        "digits), with and without timm's Mixup/CutMix (each batch mixes one way or the other, half and half).",
        "",
        *table(rows, "accuracy", "digits (shipped)"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["transfer", "imbalance", "digits"],
                        choices=["transfer", "imbalance", "digits"])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--quick", action="store_true", help="a smoke test: one epoch per stage, 2 folds; writes nothing")
    args = parser.parse_args()
    if args.quick:
        QUICK.extend(["train.epochs=1", "train.freeze_epochs=0", "folds.n_splits=2", "train.patience=0"])
        args.no_write = True
    titles = {"transfer": "Toolbox: EMA and mixup on the transfer recipe (hymenoptera)",
              "imbalance": "Toolbox: class imbalance (digits with few ones)",
              "digits": "Toolbox: Mixup/CutMix on the digits demo"}
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.part:
            work = Path(tmp) / part
            body = transfer(args.shared, work) if part == "transfer" else imbalance(work) if part == "imbalance" \
                else digits(work)
            print(body, flush=True)
            if not args.no_write:
                write_section(titles[part], body)


if __name__ == "__main__":
    main()
