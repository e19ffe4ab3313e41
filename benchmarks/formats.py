"""Competition formats on real data, each with its baseline measured in the same run:

- binary AUC: hymenoptera's photos as an `id,target` competition (bees = 1) scored by ROC AUC;
  the shipped `transfer` recipe trained on the train/ photos, its submission file (the positive
  class's probability) scored on the val/ photos no fold saw, against a logistic regression on
  frozen features of the same pretrained backbone; and the same folds' file written as hard labels,
  which is what the kit wrote for this layout before it knew the format.
- multi-label: scikit-learn's handwritten digits tiled 2×2 (each tile a digit or blank), the label
  set = the digits present; the kit (resnet18 from scratch, f1_samples, per-class thresholds fit on
  out-of-fold rows) against a one-vs-rest logistic regression on the pixels (at 0.5, and with
  thresholds fit the kit's way on its cross-validated predictions). Test tiles are built from
  digits that no training tile uses.

    python benchmarks/formats.py [--part auc multilabel] [--shared ../shared]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import machine_name, write_section  # noqa: E402

from competition import predict, train  # noqa: E402
from competition.core.metrics import METRICS  # noqa: E402

PLACEHOLDERS = {"imageNotFound.gif"}  # a Flickr "image not found" picture filed under ants


def _cli(module, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if module.main(argv) != 0:
            raise SystemExit(f"{module.__name__} {' '.join(argv)} failed")
    return out.getvalue()


def _photos(data: Path, split: str) -> pd.DataFrame:
    rows = [{"id": f"{split}/{p.parent.name}/{p.name}", "image": str(p.resolve()), "target": int(p.parent.name == "bees")}
            for p in sorted((data / split).glob("*/*")) if p.name not in PLACEHOLDERS]
    return pd.DataFrame(rows)


def binary_auc(shared: Path, work: Path, n_splits: int) -> str:
    """The kit's positive-class probabilities and hard labels, and a logistic regression on frozen features."""
    data, root = shared / "data" / "hymenoptera", work / "hymenoptera_auc"
    root.mkdir(parents=True)
    train_df, val = _photos(data, "train"), _photos(data, "val")
    train_df.to_csv(root / "train.csv", index=False)
    val[["id", "image"]].to_csv(root / "test.csv", index=False)
    val[["id"]].assign(target=0).to_csv(root / "sample_submission.csv", index=False)
    val[["id", "target"]].to_csv(root / "solution.csv", index=False)
    weights = shared / "weights" / "tf_efficientnet_lite0.in1k.safetensors"
    sets = [f"data.root={root}", "data.target_column=target", "data.solution=solution.csv", "train.metric=roc_auc",
            "model.name=tf_efficientnet_lite0", f"model.pretrained_file={weights}", f"folds.n_splits={n_splits}", "name=hymenoptera_auc",
            f"output_dir={work / 'outputs'}", f"submission_dir={work / 'subs'}"]
    argv = ["--config", "transfer", *[a for s in sets for a in ("--set", s)]]
    began = time.time()
    _cli(train, [*argv, "--fold", "all"])
    trained = time.time()
    cv_file = work / "outputs" / "hymenoptera_auc" / "cv.json"  # each predict rewrites it: read it after each
    _cli(predict, [*argv, "--output", str(work / "probs.csv")])
    predicted = time.time()
    report = json.loads(cv_file.read_text())
    _cli(predict, [*argv, "--set", "predict.tta=[]", "--output", str(work / "no_tta.csv")])
    plain = json.loads(cv_file.read_text())
    _cli(predict, [*argv, "--set", "predict.output=labels", "--output", str(work / "labels.csv")])
    labels = json.loads(cv_file.read_text())
    truth = val.set_index("id")["target"]

    def auc_of(path: Path) -> float:
        sub = pd.read_csv(path)
        p = sub["target"].to_numpy(dtype=float)
        return METRICS["roc_auc"](truth.loc[sub["id"]].to_numpy(), np.stack([1 - p, p], 1))

    kit_probs, kit_labels, kit_plain = auc_of(work / "probs.csv"), auc_of(work / "labels.csv"), auc_of(work / "no_tta.csv")

    def folds(r: dict) -> str:
        return ", ".join(f"{r['as_submitted']['folds'][f]:.4f}" for f in sorted(r["as_submitted"]["folds"]))
    logreg, feat_s = frozen_feature_logreg(train_df, val, weights)
    return "\n".join([
        f"Machine: {machine_name()}. Command: `python benchmarks/formats.py --part auc --n-splits {n_splits}`.",
        "",
        f"hymenoptera as a binary competition: `id,target` with bees = 1, scored by ROC AUC. Training: the "
        f"{len(train_df)} train/ photos (the placeholder picture left out), {n_splits} folds, the shipped `transfer` "
        f"recipe (tf_efficientnet_lite0, ImageNet weights from the shared file) with `train.metric: roc_auc`. "
        f"Held out: the {len(val)} val/ photos, which no fold saw or chose an epoch on; AUC of the written file "
        f"against their answers.",
        "",
        "| side | held-out AUC | CV AUC (best epochs / as submitted) | as submitted, per fold | seconds |",
        "|---|---|---|---|---|",
        f"| kit: positive-class probability (the layout `predict.output: auto` picks for AUC), TTA hflip | "
        f"**{kit_probs:.4f}** | {report['cv']:.4f} / {report['as_submitted']['cv']:.4f} | {folds(report)} | train "
        f"{trained - began:.0f}, predict {predicted - trained:.0f} |",
        f"| kit: the same folds without TTA (`predict.tta: []`) | {kit_plain:.4f} | {plain['cv']:.4f} / "
        f"{plain['as_submitted']['cv']:.4f} | {folds(plain)} | — |",
        f"| kit: the same folds' file as hard labels (`predict.output: labels`; the kit's only layout before) | "
        f"{kit_labels:.4f} | {labels['cv']:.4f} / {labels['as_submitted']['cv']:.4f} | {folds(labels)} | — |",
        f"| logistic regression on frozen features of the same pretrained backbone (256 px, C by 5-fold CV) | "
        f"{logreg:.4f} | — | — | features {feat_s:.0f} |",
    ])


def frozen_feature_logreg(train_df: pd.DataFrame, val: pd.DataFrame, weights: Path) -> tuple[float, float]:
    """Pooled features of tf_efficientnet_lite0 (ImageNet weights) → logistic regression; val AUC."""
    import timm
    import torch
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from competition.data.images import load_image

    began = time.time()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay={"file": str(weights)}).eval()
    cfg = timm.data.resolve_model_data_config(model)
    cfg["input_size"], cfg["crop_pct"] = (3, 256, 256), 1.0
    tf = timm.data.create_transform(**cfg)

    def features(paths) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(paths), 32):
                batch = torch.stack([tf(Image.fromarray(load_image(Path(p)))) for p in paths[i:i + 32]])
                out.append(model(batch).numpy())
        return np.concatenate(out)

    x_train, x_val = features(list(train_df["image"])), features(list(val["image"]))
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 1, 11), cv=5, scoring="roc_auc",
                                                               max_iter=5000))
    clf.fit(x_train, train_df["target"])
    p = clf.predict_proba(x_val)
    return METRICS["roc_auc"](val["target"].to_numpy(), p), time.time() - began


def digit_tiles(n: int, digits: np.ndarray, images: np.ndarray, rng: np.random.Generator, blank: float = 0.3):
    """n 16x16 pictures of 2x2 tiles, each tile one of the given digits or blank; the labels present."""
    tiles, labels = [], []
    for _ in range(n):
        picture, present = np.zeros((16, 16), np.uint8), set()
        for k in range(4):
            if rng.random() < blank:
                continue
            j = rng.integers(len(images))
            r, c = divmod(k, 2)
            picture[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = images[j]
            present.add(int(digits[j]))
        tiles.append(picture)
        labels.append(" ".join(str(d) for d in sorted(present)))
    return np.stack(tiles), labels


def multilabel(work: Path, n_train: int, n_test: int, n_splits: int, epochs: int) -> str:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    source = load_digits()
    images = np.clip(source.images * 16.0, 0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    cut = int(0.8 * len(images))  # test tiles are made of digits no training tile uses
    train_x, train_y = digit_tiles(n_train, source.target[order[:cut]], images[order[:cut]], rng)
    test_x, test_y = digit_tiles(n_test, source.target[order[cut:]], images[order[cut:]], rng)
    root = work / "digit_tiles"
    (root / "images").mkdir(parents=True)
    frames = []
    for split, xs, ys in (("train", train_x, train_y), ("test", test_x, test_y)):
        rows = []
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            Image.fromarray(x, mode="L").save(root / "images" / f"{split}{i}.png")
            rows.append({"id": f"{split}{i}", "image": f"images/{split}{i}.png", "digits": y})
        frames.append(pd.DataFrame(rows))
    frames[0].to_csv(root / "train.csv", index=False)
    frames[1][["id", "image"]].to_csv(root / "test.csv", index=False)
    frames[1][["id"]].assign(digits="").to_csv(root / "sample_submission.csv", index=False)
    frames[1][["id", "digits"]].to_csv(root / "solution.csv", index=False)

    sets = [f"data.root={root}", "data.demo=null", "data.target_column=digits", "data.target_format=multi_label",
            "data.solution=solution.csv", "train.metric=f1_samples", "folds.strategy=multilabel_stratified",
            f"folds.n_splits={n_splits}", f"train.epochs={epochs}", "name=digit_tiles", f"output_dir={work / 'outputs'}",
            f"submission_dir={work / 'subs'}"]
    argv = ["--config", "digits", *[a for s in sets for a in ("--set", s)]]
    began = time.time()
    _cli(train, [*argv, "--fold", "all"])
    trained = time.time()
    _cli(predict, [*argv, "--output", str(work / "tiles.csv")])
    predicted = time.time()
    report = json.loads((work / "outputs" / "digit_tiles" / "cv.json").read_text())
    classes = [str(d) for d in range(10)]

    def matrix(labels) -> np.ndarray:
        return np.array([[c in str(s).split() for c in classes] for s in labels], dtype=int)

    sub = pd.read_csv(work / "tiles.csv").fillna("")
    truth = matrix(frames[1].set_index("id").loc[sub["id"], "digits"])
    f1 = METRICS["f1_samples"]
    kit = f1(truth, matrix(sub["digits"]))
    y_train = matrix(train_y)
    clf = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=3000)))
    base_began = time.time()
    oof = cross_val_predict(clf, train_x.reshape(len(train_x), -1), y_train, cv=KFold(5, shuffle=True, random_state=0),
                            method="predict_proba")
    thresholds = f1.fit_thresholds(y_train, oof)
    clf.fit(train_x.reshape(len(train_x), -1), y_train)
    p_test = clf.predict_proba(test_x.reshape(len(test_x), -1))
    base_half, base_tuned = f1(truth, p_test), f1(truth, p_test, thresholds)
    empty = int((truth.sum(1) == 0).sum())
    return "\n".join([
        f"Machine: {machine_name()}. Command: `python benchmarks/formats.py --part multilabel --tiles {n_train} "
        f"{n_test} --n-splits {n_splits} --epochs {epochs}`.",
        "",
        f"scikit-learn's handwritten digits (8x8) tiled 2×2 into 16x16 pictures, each tile a digit or blank (30%); "
        f"the labels are the set of digits present, separated by spaces (the Planet layout; {empty} of the "
        f"{n_test} test pictures have none). {n_train} training pictures from 80% of the source digits, {n_test} "
        f"held-out pictures from the other 20%. Kit: the `digits` config (resnet18 from scratch at 32 px) with "
        f"`data.target_format: multi_label`, `train.metric: f1_samples`, `folds.strategy: multilabel_stratified`, "
        f"{n_splits} folds × {epochs} epochs; per-class thresholds fit on the out-of-fold rows.",
        "",
        "| side | held-out f1_samples | CV (best epochs / as submitted) | seconds |",
        "|---|---|---|---|",
        f"| kit | **{kit:.4f}** | {report['cv']:.4f} / {report['as_submitted']['cv']:.4f} | train {trained - began:.0f}, "
        f"predict {predicted - trained:.0f} |",
        f"| one-vs-rest logistic regression on the 256 pixels, thresholds 0.5 | {base_half:.4f} | — | "
        f"{time.time() - base_began:.0f} (both rows) |",
        f"| the same, per-class thresholds fit on its 5-fold out-of-fold predictions (the kit's way) | {base_tuned:.4f} | "
        f"— | |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["auc", "multilabel"], choices=["auc", "multilabel"])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--n-splits", type=int, default=3, help="folds for the AUC part (multi-label: 5)")
    parser.add_argument("--tiles", type=int, nargs=2, default=[2000, 600], metavar=("TRAIN", "TEST"))
    parser.add_argument("--epochs", type=int, default=12, help="multi-label epochs")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "auc" in args.part:
            body = binary_auc(args.shared, work / "auc", args.n_splits)
            print(body, flush=True)
            if not args.no_write:
                write_section("Binary AUC: the positive-class probability on held-out photos", body)
        if "multilabel" in args.part:
            body = multilabel(work / "ml", args.tiles[0], args.tiles[1], 5, args.epochs)
            print(body, flush=True)
            if not args.no_write:
                write_section("Multi-label: digit tiles", body)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
