"""The kit's training overhead: one fold through `python -m competition.train` (with its logging,
checkpoints, OOF file, TensorBoard) against a plain PIL + torchvision + timm loop doing the same
job (same fold 0 rows, model, image size, batch size, epochs, workers), each a subprocess timed
whole, alternated, medians reported. Results go to benchmarks/RESULTS.md.

    python benchmarks/train_overhead.py [--workloads photos digits] [--repeats 3] [--epochs 5] [--size 64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TITLE = "Training overhead: the kit against a plain loop"


def plain_main(argv: list[str]) -> None:
    """The loop a competitor writes without the kit: PIL, torchvision transforms, timm, AdamW,
    a validation pass per epoch, nothing written. Imports stay inside: they count in its time."""
    import numpy as np
    import pandas as pd
    import timm
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    p = argparse.ArgumentParser()
    for name in ("--root", "--model"):
        p.add_argument(name, required=True)
    for name in ("--size", "--epochs", "--batch-size", "--workers", "--seed"):
        p.add_argument(name, type=int, required=True)
    for name in ("--lr", "--weight-decay", "--label-smoothing", "--drop-rate"):
        p.add_argument(name, type=float, required=True)
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    root = Path(a.root)
    train = pd.read_csv(root / "train.csv").merge(pd.read_csv(root / "folds.csv"), on="id")
    classes = sorted(train["label"].unique())

    class Files(Dataset):
        def __init__(self, df, transform):
            self.paths = [root / p for p in df["image"]]
            self.labels = [classes.index(v) for v in df["label"]]
            self.transform = transform

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            with Image.open(self.paths[i]) as im:
                return self.transform(im.convert("RGB")), self.labels[i]

    model = timm.create_model(a.model, num_classes=len(classes), drop_rate=a.drop_rate)
    dc = timm.data.resolve_model_data_config(model)
    tail = [T.ToTensor(), T.Normalize(dc["mean"], dc["std"])]
    train_tf = T.Compose([T.Resize((a.size, a.size)), T.RandomHorizontalFlip(), *tail])
    eval_tf = T.Compose([T.Resize((a.size, a.size)), *tail])
    kw = {"batch_size": a.batch_size, "num_workers": a.workers, "persistent_workers": a.workers > 0}
    train_dl = DataLoader(Files(train[train.fold != 0], train_tf), shuffle=True, **kw)
    valid_dl = DataLoader(Files(train[train.fold == 0], eval_tf), **{**kw, "batch_size": a.batch_size * 2})
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    for epoch in range(a.epochs):
        began = time.perf_counter()
        model.train()
        for x, y in train_dl:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        right = 0
        with torch.inference_mode():
            for x, y in valid_dl:
                right += int((model(x).argmax(1) == y).sum())
        print(f"epoch {epoch + 1}: accuracy {right / len(valid_dl.dataset):.4f}, "
              f"{time.perf_counter() - began:.1f} s", flush=True)
    np.asarray(0)  # numpy imported like any real loop would


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:4])} … failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return seconds


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "plain":
        plain_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--photos", type=int, default=1500, help="generated photos in the photos workload")
    args = parser.parse_args()

    from results import machine_name, write_section

    lines = [
        f"Machine: {machine_name()}. Command: `python benchmarks/train_overhead.py --workloads "
        f"{' '.join(args.workloads)} --repeats {args.repeats} --epochs {args.epochs} --model {args.model} "
        f"--size {args.size} --batch-size {args.batch_size} --workers {args.workers} --photos {args.photos}`.",
        "",
        f"Job: fold 0 (of 5), {args.model} from scratch at {args.size} px, horizontal flip, AdamW, batch "
        f"{args.batch_size}, {args.epochs} epochs, a validation pass per epoch, {args.workers} loader workers. Each "
        f"run is a fresh process timed whole: imports, start-up and training, and for the kit also its image "
        f"check, decode cache (cache auto: built inside every run, from a fresh outputs/), best/last checkpoints, "
        f"OOF file, summary and TensorBoard scalars and figures. The plain loop writes nothing. Sides alternate, "
        f"{args.repeats} runs each, medians compared.",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            work = Path(tmp) / workload
            work.mkdir()
            root, what = WORKLOADS[workload](work / "data", args)
            runs = measure(root, work, args)
            base = statistics.median(runs["plain"])
            verdict = ", ".join(f"{name.split(', ')[1]}: {'met' if statistics.median(v) <= base else 'NOT met'}"
                                for name, v in runs.items() if name != "plain")
            lines += [
                "",
                f"**{workload}**: {what}.",
                "",
                "| side | median s | runs (s) | kit / plain |",
                "|---|---|---|---|",
                *(f"| {name} | {statistics.median(v):.1f} | {', '.join(f'{s:.1f}' for s in v)} | "
                  f"{statistics.median(v) / base:.2f} |" for name, v in runs.items()),
                "",
                f"Target kit / plain ≤ 1.0 — {verdict}.",
            ]
    print("\n".join(lines))
    write_section(TITLE, "\n".join(lines))


def digits_workload(root: Path, args) -> tuple[Path, str]:
    from competition.data.demos import build_digits

    build_digits(root)
    n = sum(1 for _ in (root / "images").iterdir())
    return root, (f"the digits demo's {n} 8x8 PNGs (its train split: 1,437); decoding is next to free, so the "
                  f"decode cache has nothing to win and the kit's bookkeeping is all that differs")


def photos_workload(root: Path, args) -> tuple[Path, str]:
    from gpu_throughput import write_images

    write_images(root, args.photos)
    return root, (f"{args.photos} generated 400x300 JPEG photos in 10 classes; the plain loop decodes and resizes "
                  f"each one every epoch, the kit (cache auto) once per run")


WORKLOADS = {"photos": photos_workload, "digits": digits_workload}


def measure(root: Path, work: Path, args) -> dict[str, list[float]]:
    """Wall seconds of each side, `repeats` times, alternating."""
    from competition.config import load_config

    py = sys.executable
    job = [
        "data.demo=null", "data.solution=null", f"data.root={root}", f"model.name={args.model}",
        f"image.size={args.size}", "image.augment=[hflip]", f"train.epochs={args.epochs}", "train.freeze_epochs=0",
        "train.patience=0", f"train.batch_size={args.batch_size}", f"train.num_workers={args.workers}",
    ]
    sets = [x for s in job for x in ("--set", s)]
    # folds.csv once, before any timing: both sides read fold 0 from it.
    subprocess.run([py, "-m", "competition.folds", "--config", "digits", *sets], cwd=work, check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    cfg = load_config("digits", job)
    t = cfg.train
    plain = [py, str(Path(__file__).resolve()), "plain", "--root", str(root), "--model", args.model,
             "--size", str(args.size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
             "--workers", str(args.workers), "--seed", "0", "--lr", str(t.lr), "--weight-decay",
             str(t.weight_decay), "--label-smoothing", str(t.label_smoothing), "--drop-rate", str(cfg.model.drop_rate)]
    runs: dict[str, list[float]] = {"plain": [], "kit, cache auto": [], "kit, cache off": []}
    for r in range(args.repeats):
        for name in runs:  # alternate, so drift on a shared machine hits every side alike
            if name == "plain":
                cmd = plain
            else:
                cache = name.rsplit(" ", 1)[-1]
                # quoted: YAML reads a bare `off` as false
                cmd = [py, "-m", "competition.train", "--config", "digits", *sets, "--set", f"train.cache='{cache}'",
                       "--set", f"output_dir={work / f'out-{r}-{cache}'}", "--fold", "0"]
            runs[name].append(timed(cmd, work))
            print(f"{root.parent.name} repeat {r + 1}: {name} {runs[name][-1]:.1f} s", flush=True)
    return runs


if __name__ == "__main__":
    main()
