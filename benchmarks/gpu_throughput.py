"""End-to-end training images/s of the kit on a GPU against the synthetic-data ceiling of the same
model (bf16 autocast, channels_last, data already on the GPU, AdamW step), in the same run.

The kit side is what `fit_fold` runs each epoch: the fold's loader over the decode cache (on CUDA
the device path picks itself: uint8 rows in, crop/flip/normalise on the GPU), `train_one_epoch`
with the kit's AMP, channels_last model and per-step learning rate. Goal: ≥ 90% of the ceiling.
Writes benchmarks/RESULTS.md when run on CUDA; `--device cpu` is a smoke test that only prints.

    python benchmarks/gpu_throughput.py --device cuda [--models tf_efficientnet_lite0 resnet50] [--size 224]
    python benchmarks/gpu_throughput.py --device cpu --model test_resnet --size 32 --steps 3
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import machine_name, write_section  # noqa: E402

from competition.config import config_from_dict  # noqa: E402
from competition.core.distributed import SeededSampler  # noqa: E402
from competition.core.runtime import amp_dtype_for  # noqa: E402
from competition.data.datasets import CachedRows, build_loader  # noqa: E402
from competition.data.device_rows import DeviceRows  # noqa: E402
from competition.data.splits import load_or_create_folds  # noqa: E402
from competition.tasks import build_model, open_competition  # noqa: E402
from competition.training.epoch import Optimization, train_one_epoch  # noqa: E402
from competition.training.stages import param_groups, set_stage, stage_schedule, train_mode  # noqa: E402

TITLE = "GPU training throughput: the kit against the synthetic-data ceiling"
CLASSES = 10


def write_images(root: Path, n: int, seed: int = 0) -> None:
    """n photo-sized JPEGs (smooth colour fields plus noise, 400x300) in Kaggle layout."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)

    def one(i: int) -> None:
        r = np.random.default_rng(seed + 1 + i)
        yy, xx = np.mgrid[:300, :400].astype(np.float32)
        base = np.stack([np.sin(xx / r.uniform(20, 80) + c) * np.cos(yy / r.uniform(20, 80)) for c in range(3)], -1)
        img = (127 + 90 * base + r.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i:05d}.jpg", quality=90)

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(one, range(n)))
    df = pd.DataFrame({"id": range(n), "image": [f"images/{i:05d}.jpg" for i in range(n)],
                       "label": [f"c{k}" for k in labels]})
    df.to_csv(root / "train.csv", index=False)
    df[["id", "image"]].head(8).to_csv(root / "test.csv", index=False)
    df[["id"]].head(8).assign(label="c0").to_csv(root / "sample_submission.csv", index=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling(cfg, device: torch.device, batch_size: int, steps: int, warmup: int) -> float:
    """Images/s of the bare step: random batches already on the device, bf16, channels_last, AdamW."""
    model = build_model(cfg, CLASSES, load_pretrained=False).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    loss_fn = nn.CrossEntropyLoss()
    size = cfg.image.size
    x = torch.randn(batch_size, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (batch_size,), device=device)
    amp = amp_dtype_for(device, True)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def kit(cfg, task, comp, df, device: torch.device, epochs: int, progress: bool) -> tuple[float, str]:
    """Images/s of the kit's training epochs after the first (worker start-up, autotuning), and
    where its rows came from: held on the device, streamed, or a DataLoader. `progress`: with
    progress bars drawn, as on a terminal."""
    os.environ["COMPETITION_PROGRESS"] = "1" if progress else "0"
    t = cfg.train
    model, data = task.fold(cfg, comp, df, 0, device, load_pretrained=False)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    set_stage(model, 2)
    sampler = SeededSampler(len(data.train_ds), cfg.seed, shuffle=True)
    loader = build_loader(data.train_ds, t.batch_size, device, num_workers=t.num_workers, sampler=sampler,
                          drop_last=len(data.train_ds) % t.batch_size == 1)
    opt = torch.optim.AdamW(param_groups(model, 2, t.lr, t.backbone_lr_mult, t.weight_decay))
    optimization = Optimization(opt, stage_schedule(opt, epochs * len(loader), 0))
    amp = amp_dtype_for(device, t.amp)
    images, seconds = 0, 0.0
    for e in range(epochs):
        sampler.set_epoch(e)
        train_mode(model, 2)
        sync(device)
        start = time.perf_counter()
        out = train_one_epoch(model, loader, optimization, device, loss_fn=nn.CrossEntropyLoss(), amp_dtype=amp,
                              batch_transform=data.train_transform)
        sync(device)
        if e > 0 or epochs == 1:
            images += out["samples"]
            seconds += time.perf_counter() - start
    rows = data.train_ds
    where = ("held on the device" if not rows.streaming else "streamed") if isinstance(rows, DeviceRows) else \
        "DataLoader (device augmentation)" if isinstance(rows, CachedRows) else "DataLoader (albumentations)"
    return images / seconds, where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke test)")
    parser.add_argument("--models", "--model", nargs="+", default=["tf_efficientnet_lite0", "resnet50"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=None,
                        help="generated images (default: fold 0 holds --steps batches, so each kit epoch is that long)")
    parser.add_argument("--epochs", type=int, default=3, help="kit epochs; the first is not timed")
    parser.add_argument("--steps", type=int, default=50, help="timed ceiling steps, and the kit's steps per epoch")
    parser.add_argument("--warmup", type=int, default=None, help="untimed ceiling steps (default steps // 2)")
    parser.add_argument("--device-augment", default="auto", choices=["auto", "on", "off"],
                        help="train.device_augment (auto: on with CUDA)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 2))
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA GPU is visible to torch here; "
              "`--device cpu --model test_resnet --size 32 --steps 3` runs a smoke test", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 2)
    # 5 folds: fold 0 trains on 80% of the images.
    n_images = args.images or -(-args.steps * args.batch_size * 5 // 4)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        write_images(work / "data", n_images)
        gen_s = time.perf_counter() - start
        for name in args.models:
            raw = {
                "name": "throughput", "task": "image", "seed": 0, "output_dir": str(work / "outputs"),
                "data": {"root": str(work / "data")}, "folds": {"n_splits": 5},
                "model": {"name": name}, "image": {"size": args.size, "augment": ["random_resized_crop", "hflip"]},
                "train": {"batch_size": args.batch_size, "num_workers": args.workers, "cache": "auto",
                          "device_augment": args.device_augment, "amp": True},
            }
            cfg = config_from_dict(raw)
            task, comp = open_competition(cfg)
            df = load_or_create_folds(cfg, comp.train, comp.target)
            start = time.perf_counter()
            kit_rate, where = kit(cfg, task, comp, df, device, args.epochs, progress=False)
            kit_s = time.perf_counter() - start
            bars_rate, _ = kit(cfg, task, comp, df, device, args.epochs, progress=True)
            ceil_rate = ceiling(cfg, device, args.batch_size, args.steps, warmup)
            results.append((name, kit_rate, bars_rate, ceil_rate, where, kit_s))
            print(f"{name}: kit {kit_rate:,.0f} img/s ({bars_rate:,.0f} with progress bars), ceiling {ceil_rate:,.0f} "
                  f"img/s ({kit_rate / ceil_rate:.0%}), rows: {where}", flush=True)

    if device.type != "cuda":
        print("(CPU smoke test: nothing written to RESULTS.md)")
        return 0
    lines = [
        f"Machine: {machine_name()}. Command: `python benchmarks/gpu_throughput.py --device {args.device} "
        f"--models {' '.join(args.models)} --size {args.size} --batch-size {args.batch_size} "
        f"--epochs {args.epochs} --steps {args.steps} --workers {args.workers} --device-augment {args.device_augment}`; "
        f"torch {torch.__version__}.",
        "",
        f"Kit: fold 0 (80%) of {n_images} generated 400x300 JPEGs ({gen_s:.0f} s to write), decode cache at "
        f"{args.size} px, random-resized crop + flip, batch {args.batch_size}, {args.workers} workers, bf16 "
        f"autocast, channels_last; images/s over epochs 2-{args.epochs}. Ceiling: the same model on one random "
        f"batch already on the GPU, bf16, channels_last, AdamW; {args.steps} steps after {warmup}.",
        "",
        "| model | kit img/s | with progress bars | ceiling img/s | kit / ceiling (bars) | rows from | kit seconds |",
        "|---|---|---|---|---|---|---|",
        *(f"| {n} | {k:,.0f} | {b:,.0f} | {c:,.0f} | {k / c:.0%} ({b / c:.0%}) | {w} | {s:.0f} |"
          for n, k, b, c, w, s in results),
        "",
        "Goal: ≥ 90% of the ceiling: " + ", ".join(f"{n} {'met' if min(k, b) >= 0.9 * c else 'NOT met'}"
                                                  for n, k, b, c, _, _ in results) + ".",
    ]
    print("\n".join(lines))
    write_section(TITLE, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
