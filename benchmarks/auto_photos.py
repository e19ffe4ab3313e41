"""`python -m competition.auto` on real photos against the best hand-tuned recipe, in one run: the
ants and bees of hymenoptera's train/ photos (3 stratified folds, through `competition.import_folders`),
the tutorial's val/ photos held out and scored against their folder names.

- the hand-tuned recipe: the shipped `transfer` config (label_map head, EfficientNet-Lite1 at 240 px, the
  weights' own centre crop; benchmarks/transfer_backbones.py measured it), trained and predicted through
  the CLIs;
- auto: `--config transfer` with `auto.backbones` naming Lite0, Lite1 and Lite2 and their local ImageNet
  weights, the whole command (interpreter start to exit) timed against `--time-budget`.

    python benchmarks/auto_photos.py [--budget 10m] [--shared ../shared] [--no-write]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from results import machine_name, publish  # noqa: E402
from transfer_backbones import held_out  # noqa: E402
from transfer_hymenoptera import build_pool, run_variant  # noqa: E402

from competition import import_folders  # noqa: E402
from competition.core.durations import format_duration, parse_duration  # noqa: E402

TITLE = "auto on photos: ants and bees against the hand-tuned recipe"
BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="folder holding data/ and weights/")
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing RESULTS.md")
    args = parser.parse_args(argv)
    budget = parse_duration(args.budget, "--budget")
    data, weights = args.shared / "data" / "hymenoptera", args.shared / "weights"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_pool(data, work / "pool", splits=("train",))
        with contextlib.redirect_stdout(io.StringIO()):
            if import_folders.main([str(work / "pool"), str(work / "comp"), "--test", str(data / "val"), "--link"]) != 0:
                raise SystemExit("import_folders failed")
        common = [f"data.root={work / 'comp'}", "folds.n_splits=3", f"output_dir={work / 'outputs'}",
                  f"submission_dir={work / 'submissions'}", "train.num_workers=0"]
        hand = [*common, f"model.pretrained_file={weights / 'tf_efficientnet_lite1.in1k.safetensors'}"]
        row = run_variant("recipe", [], hand, work)
        recipe = {"cv": row["cv"], "seconds": row["train_seconds"] + row["predict_seconds"]}
        recipe["heldout"], recipe["wrong"] = held_out(work / "recipe.csv")
        print(json.dumps({"recipe": recipe}), flush=True)

        backbones = "{" + ", ".join(f"{b}: {weights / f'{b}.in1k.safetensors'}" for b in BACKBONES) + "}"
        out = work / "auto.csv"
        cmd = [sys.executable, "-m", "competition.auto", "--config", "transfer", *(a for s in common for a in ("--set", s)),
               "--set", "name=photos", "--set", f"auto.backbones={backbones}", "--time-budget", f"{budget:g}",
               "--output", str(out)]
        began = time.monotonic()
        proc = subprocess.run(cmd, cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
        wall = time.monotonic() - began
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit(f"auto failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        summary = json.loads((work / "outputs" / "auto" / "photos" / "summary.json").read_text())
        auto = {"seconds": wall, "estimate": summary["estimate"], "best": summary["best"], "trials": summary["trials"],
                "blend": summary["blend"], "drop": summary["selection"]["drop"]}
        auto["heldout"], auto["wrong"] = held_out(out)
        trial_lines = [line for line in proc.stdout.splitlines() if line.startswith("trial ")]
        print(json.dumps({"auto": auto}), flush=True)
    n_val = sum(1 for c in (data / "val").iterdir() if c.is_dir() for _ in c.iterdir())
    blend = auto["blend"]
    weights_text = ", ".join(f"{r} {w:.2f}" for r, w in blend["weights"].items() if w > 0) if blend else "-"
    body = "\n".join([
        f"Machine: {machine_name()}. Command: `python benchmarks/auto_photos.py --budget {args.budget}`.",
        "",
        f"Data: hymenoptera's train/ photos (244, the placeholder image left out) in 3 stratified folds; the tutorial's "
        f"{n_val} val/ photos held out, never seen by either side, scored against their folder names. The hand-tuned "
        f"recipe is the shipped `transfer` config (EfficientNet-Lite1, 240 px, centre crop, label_map head); auto is "
        f"`python -m competition.auto --config transfer` with `auto.backbones` naming Lite0, Lite1 and Lite2 and their "
        f"local ImageNet weights. Seconds: the recipe's train + predict; auto's whole command, interpreter start to "
        f"exit, against its budget.",
        "",
        "| what | CV accuracy | estimate | held-out accuracy (wrong) | seconds |",
        "|---|---|---|---|---|",
        f"| hand-tuned recipe (transfer, Lite1) | {recipe['cv']:.4f} | - | **{recipe['heldout']:.4f}** ({recipe['wrong']}) "
        f"| {recipe['seconds']:.0f} |",
        f"| auto, {format_duration(budget)} | {auto['best']['cv']:.4f} (best trial: {auto['best']['recipe']}) | "
        f"{auto['estimate']:.4f} | **{auto['heldout']:.4f}** ({auto['wrong']}) | {auto['seconds']:.0f} |",
        "",
        f"auto's trials: {', '.join(f'{v} {k}' for k, v in auto['trials'].items())}; blend weights: {weights_text}; "
        f"the choice among its trials flatters the best CV by {auto['drop']:.4f}. Its progress lines:",
        "",
        "```",
        *trial_lines,
        "```",
    ])
    publish(TITLE, body, args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
