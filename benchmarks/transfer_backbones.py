"""Keeping what pretraining knows, on hymenoptera held out: for EfficientNet-Lite0, Lite1 and Lite2
(ImageNet weights from ../shared/weights), the untrained ImageNet head (ant logit against bee logit,
no training at all) as the anchor, then the kit's variants trained through its CLIs on the train/
photos (the split of benchmarks/transfer_hymenoptera.py's held-out check: 3 folds) and scored on
the tutorial's val/ photos, which no fold saw or chose anything on.

Variants (overrides on top of the shipped `transfer` config):
  before  the recipe as shipped before train.head_fit existed: 8 SGD head epochs, 3 of stage 2, 256 px
  logreg  train.head_fit logreg, stage 1 only: the exact linear probe
  logreg_hflip  the same, fit on each training photo and its mirror image (train.head_fit_views)
  lpft    logreg, then 2 epochs of stage 2, a greedy soup of the epochs and WiSE-FT interpolation
  logits  train.head_fit_inputs pretrained_logits: the probe on the ImageNet classifier's 1000 logits
  label_map  train.head_fit_prior label_map: the probe fit towards the ImageNet classes that match
             ants and bees on each fold's training rows (L2-SP around that zero-shot head)
  label_map_center  label_map with the kit's centre crop at the weights' crop_pct (image.crop_mode center,
             image.crop_pct pretrained), at the native size: timm's eval view of each photo, in training too
  label_map_crop  label_map on photos cut beforehand (--crop, one backbone) to the central square
             timm's eval transform keeps: what a centre crop in the kit would give
  label_map_resize  the same at the side timm's eval transform resizes to before its centre crop
             (size / crop_pct: Lite0 256, Lite1 272, Lite2 292), so the objects are as large as the
             anchor sees them (the kit resizes the whole photo; it does not crop)

    python benchmarks/transfer_backbones.py [--backbones lite0,lite1,lite2] [--variants anchor,logreg,...]
        [--rows earlier.jsonl]   # rows printed by earlier invocations, published with this one's
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

from results import machine_name, publish  # noqa: E402
from transfer_hymenoptera import PLACEHOLDERS, build_pool, run_variant  # noqa: E402

from competition import import_folders  # noqa: E402
from competition.config import load_config  # noqa: E402

TITLE = "Keeping what pretraining knows: backbones on hymenoptera, held out"
BACKBONES = {"lite0": ("tf_efficientnet_lite0", 224), "lite1": ("tf_efficientnet_lite1", 240),
             "lite2": ("tf_efficientnet_lite2", 260)}
IMAGENET = {"ants": 310, "bees": 309}  # ImageNet-1k class indices: ant (emmet, pismire) and bee
PLAIN = ["train.head_fit=sgd", "train.head_fit_prior=none", "train.average=off", "train.interpolate=off"]
FEATURES = ["train.head_fit_inputs=features", "train.head_fit_prior=none"]  # the logreg probe of the features alone
VARIANTS = {
    "anchor": ("untrained ImageNet head: ant logit vs bee logit, no training", None),
    "before": ("the recipe before issue 23 (8 SGD head epochs, 3 of stage 2, 256 px)",
               [*PLAIN, "train.freeze_epochs=8", "train.epochs=3", "image.size=256"]),
    "logreg": ("head_fit logreg, stage 1 only (exact linear probe)",
               [*FEATURES, "train.head_fit=logreg", "train.freeze_epochs=1", "train.epochs=0", "train.average=off",
                "train.interpolate=off"]),
    "logreg_hflip": ("head_fit logreg on each photo and its mirror image (head_fit_views [hflip])",
                     [*FEATURES, "train.head_fit=logreg", "train.head_fit_views=[hflip]", "train.freeze_epochs=1", "train.epochs=0",
                      "train.average=off", "train.interpolate=off"]),
    "lpft": ("logreg + 2 stage-2 epochs + greedy soup + interpolation",
             [*FEATURES, "train.head_fit=logreg", "train.freeze_epochs=1", "train.epochs=2", "train.average=greedy_soup",
              "train.interpolate=auto"]),
    "logits": ("head_fit logreg on the ImageNet classifier's 1000 logits (head_fit_inputs pretrained_logits)",
               ["train.head_fit=logreg", "train.head_fit_inputs=pretrained_logits", "train.freeze_epochs=1",
                "train.epochs=0", "train.average=off", "train.interpolate=off"]),
    "label_map": ("head_fit logreg fit towards the matched ImageNet classes (head_fit_prior label_map)",
                  ["train.head_fit=logreg", "train.head_fit_prior=label_map", "train.freeze_epochs=1", "train.epochs=0",
                   "train.average=off", "train.interpolate=off"]),
    "label_map_resize": ("label_map at size / crop_pct (the objects as large as the anchor's crop shows them)",
                         ["train.head_fit=logreg", "train.head_fit_prior=label_map", "train.freeze_epochs=1",
                          "train.epochs=0", "train.average=off", "train.interpolate=off", "image.size=RESIZE"]),
    "label_map_center": ("label_map with the weights' own eval crop, in the kit (image.crop_mode center, crop_pct pretrained)",
                         ["train.head_fit=logreg", "train.head_fit_prior=label_map", "train.freeze_epochs=1",
                          "train.epochs=0", "train.average=off", "train.interpolate=off", "image.crop_mode=center",
                          "image.crop_pct=pretrained"]),
    "label_map_crop": ("label_map on photos cut beforehand to their central square at crop_pct (--crop; outside the kit)",
                       ["train.head_fit=logreg", "train.head_fit_prior=label_map", "train.freeze_epochs=1",
                        "train.epochs=0", "train.average=off", "train.interpolate=off"]),
}


def resize_side(model_name: str, size: int) -> int:
    """The side timm's eval transform resizes to before its centre crop (timm.data.transforms_factory)."""
    import math

    import timm

    return math.floor(size / timm.models.get_pretrained_cfg(model_name).crop_pct)


def centre_crops(data: Path, out: Path, model_name: str) -> Path:
    """Copies of train/ and val/ (placeholders left out), each photo cut to its central square of side
    shorter side × crop_pct: what timm's eval transform (resize, then centre crop) keeps of it."""
    import timm
    from PIL import Image

    crop_pct = timm.models.get_pretrained_cfg(model_name).crop_pct
    for split in ("train", "val"):
        for p, label in photos(data / split):
            image = Image.open(p).convert("RGB")
            side = min(image.size) * crop_pct
            left, top = (image.size[0] - side) / 2, (image.size[1] - side) / 2
            (out / split / label).mkdir(parents=True, exist_ok=True)
            image.crop((round(left), round(top), round(left + side), round(top + side))).save(out / split / label / f"{p.stem}.png")
    return out


def photos(folder: Path) -> list[tuple[Path, str]]:
    return [(p, c.name) for c in sorted(folder.iterdir()) if c.is_dir()
            for p in sorted(c.iterdir()) if p.name not in PLACEHOLDERS]


def untrained_head(model_name: str, weights: Path, rows: list[tuple[Path, str]]) -> float:
    """Accuracy of the ImageNet head itself: a photo is an ant when its ant logit beats its bee logit,
    with the weights' own eval preprocessing (resize, centre crop, normalisation)."""
    import timm
    import torch
    from PIL import Image

    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    right = 0
    with torch.inference_mode():
        for i in range(0, len(rows), 32):
            chunk = rows[i:i + 32]
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in chunk])
            logits = model(x)[:, [IMAGENET["ants"], IMAGENET["bees"]]]
            right += sum(["ants", "bees"][int(k)] == label for k, (_, label) in zip(logits.argmax(1), chunk, strict=True))
    return right / len(rows)


def cross_fit_cv(run_dir: Path, n_splits: int) -> float | None:
    """The CV with each fold's α chosen on the other folds' validation curves (accuracy pooled by rows),
    instead of on its own validation rows: what choosing α costs the CV in optimism."""
    records = [run_dir / f"fold{f}" / "averaging.json" for f in range(n_splits)]
    if not all(r.is_file() for r in records):
        return None
    curves = [json.loads(r.read_text()) for r in records]
    if not all("interpolated" in c for c in curves):
        return None
    right = 0.0
    for k, c in enumerate(curves):
        others = [o for j, o in enumerate(curves) if j != k]
        pooled = {a: sum(o["interpolated"]["alpha_scores"][a] * o["validation_rows"] for o in others)
                  for a in c["interpolated"]["alpha_scores"]}
        alpha = max(pooled, key=lambda a: (pooled[a], -float(a)))
        right += c["interpolated"]["alpha_scores"][alpha] * c["validation_rows"]
    return right / sum(c["validation_rows"] for c in curves)


def held_out(submission: Path) -> tuple[float, int]:
    """Accuracy on the val/ photos (their ids are paths under val/: <class>/<photo>) and how many are wrong."""
    sub = pd.read_csv(submission)
    right = sub["label"] == sub["id"].str.split("/").str[0]
    return float(right.mean()), int((~right).sum())


def run_kit(backbone: str, variant: str, common: list[str], work: Path, n_splits: int, weights: Path) -> dict:
    name, size = BACKBONES[backbone]
    # Every variant sees the whole photo (as they were measured before image.crop_mode existed) unless it sets a crop.
    sets = [*common, f"model.name={name}", f"model.pretrained_file={weights}", f"image.size={size}",
            "image.crop_mode=squash", "image.crop_pct=1.0",
            *(f"image.size={resize_side(name, size)}" if o == "image.size=RESIZE" else o for o in VARIANTS[variant][1])]
    row = run_variant(f"{backbone}-{variant}", [], sets, work)
    heldout, wrong = held_out(work / f"{backbone}-{variant}.csv")
    cfg = load_config("transfer", [*sets, f"name={backbone}-{variant}"])
    alphas = [json.loads((cfg.fold_dir(f) / "averaging.json").read_text())["interpolated"]["alpha"]
              for f in range(n_splits) if (cfg.fold_dir(f) / "averaging.json").is_file()]
    return {"cv": row["cv"], "cv_cross_fit": cross_fit_cv(cfg.run_dir, n_splits), "heldout": heldout, "wrong": wrong, "seconds": row["train_seconds"] + row["predict_seconds"], "alphas": alphas}


def render(rows: list[dict], n_train: int, n_test: int, n_splits: int, command: str) -> str:
    lines = [
        f"Machine: {machine_name()}. Command: `{command}`.",
        "",
        f"Data: hymenoptera's train/ photos ({n_train}, the placeholder image left out) into {n_splits} stratified "
        f"folds through `competition.import_folders`; the tutorial's {n_test} val/ photos held out, predicted by "
        f"each variant's {n_splits}-fold ensemble × TTA (`competition.predict`) and scored against their folder "
        f"names. The anchor row trains nothing: its CV column is its accuracy on the {n_train} train/ photos. Each "
        f"backbone at its native size (Lite0 224, Lite1 240, Lite2 260 px) except `before` (256 px, as shipped then) "
        f"and `label_map_resize` (Lite0 256, Lite1 272, Lite2 292 px). "
        f"'CV, α cross-fit': each fold's interpolation α chosen on the other folds' validation curves instead of "
        f"its own rows (accuracy pooled by rows), the honest counterpart of the CV column for that row.",
        "",
        "| backbone | variant | CV accuracy | CV, α cross-fit | held-out accuracy (wrong) | α per fold | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cross = f"{r['cv_cross_fit']:.4f}" if r.get("cv_cross_fit") is not None else "-"
        alphas = ", ".join(f"{a:g}" for a in r.get("alphas", [])) or "-"
        lines.append(f"| {r['backbone']} | {r['variant']}: {VARIANTS[r['variant']][0]} | {r['cv']:.4f} | {cross} | "
                     f"**{r['heldout']:.4f}** ({r['wrong']}) | {alphas} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="folder holding data/ and weights/")
    parser.add_argument("--n-splits", type=int, default=3)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--crop", action="store_true", help="one backbone: train and score on photos cropped to their "
                        "central square at the weights' crop_pct beforehand (what timm's eval transform shows the anchor)")
    parser.add_argument("--rows", type=Path, help="JSON lines of rows an earlier invocation printed, published too")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    args = parser.parse_args(argv)
    data = args.shared / "data" / "hymenoptera"
    command = "python benchmarks/transfer_backbones.py" + "".join(
        f" --{k} {getattr(args, k)}" for k in ("backbones", "variants")
        if getattr(args, k) != ",".join(BACKBONES if k == "backbones" else VARIANTS)) + (" --crop" if args.crop else "")
    train_rows, val_rows = photos(data / "train"), photos(data / "val")
    rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.startswith("{")] if args.rows else []
    measured = len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.crop:  # every photo its central square at the backbone's crop_pct, as timm's eval transform sees it
            data = centre_crops(data, work / "cropped", BACKBONES[args.backbones][0])
        build_pool(data, work / "pool", splits=("train",))
        with contextlib.redirect_stdout(io.StringIO()):
            if import_folders.main([str(work / "pool"), str(work / "comp"), "--test", str(data / "val"), "--link"]) != 0:
                raise SystemExit("import_folders failed")
        common = [f"data.root={work / 'comp'}", f"folds.n_splits={args.n_splits}", f"output_dir={work / 'outputs'}",
                  f"submission_dir={work / 'submissions'}", "train.num_workers=0"]
        for backbone in args.backbones.split(","):
            weights = args.shared / "weights" / f"{BACKBONES[backbone][0]}.in1k.safetensors"
            for variant in filter(None, args.variants.split(",")):
                if args.crop != variant.endswith("_crop"):
                    raise SystemExit(f"{variant}: --crop goes with the _crop variants, and only with them")
                began = time.time()
                if variant == "anchor":
                    cv = untrained_head(BACKBONES[backbone][0], weights, train_rows)
                    held = untrained_head(BACKBONES[backbone][0], weights, val_rows)
                    row = {"cv": cv, "heldout": held, "wrong": int(round((1 - held) * len(val_rows))),
                           "seconds": time.time() - began}
                else:
                    row = run_kit(backbone, variant, common, work, args.n_splits, weights)
                rows.append({"backbone": backbone, "variant": variant, **row})
                print(json.dumps(rows[-1]), flush=True)
    if measured:
        command += f" --rows {args.rows.name} ({measured} rows measured by earlier invocations)"
    order = [*BACKBONES], [*VARIANTS]
    rows.sort(key=lambda r: (order[0].index(r["backbone"]), order[1].index(r["variant"])))
    body = render(rows, len(train_rows), len(val_rows), args.n_splits, command)
    publish(TITLE, body, print_only=args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
