"""`python -m competition.explain`: Grad-CAM maps of each fold's most confident validation mistakes
and of a sample of its right answers, as PNG grids in outputs/<name>/fold<K>/explain/ and in
the fold's TensorBoard."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from competition.config import add_config_arguments, add_run_argument, command_config
from competition.core.errors import CompetitionError, run_cli

log = logging.getLogger(__name__)

KINDS = ("mistakes", "correct")  # the PNG grids of each fold: <fold>/explain/<kind>.png


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.explain",
        description="Grad-CAM maps of each fold's most confident validation mistakes and of a sample of its "
        "right answers: outputs/<name>/fold<K>/explain/{mistakes,correct}.png and TensorBoard.",
    )
    add_config_arguments(parser)
    add_run_argument(parser)
    parser.add_argument("--fold", default="all", help="fold number, a list like 0,2, or 'all' (default: every trained fold)")
    parser.add_argument("--n", type=int, default=16, help="mistakes, and right answers, to explain per fold (default 16)")
    return parser


def write_png(path: Path, rgb) -> None:
    from PIL import Image

    from competition.io.files import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # The work's modules load once the arguments parse: `--help` loads no torch.
    from competition.core.distributed import device_for, init_world
    from competition.data.splits import parse_folds
    from competition.inference.ensemble import load_fold_models, trained_folds
    from competition.inference.gradcam import explain_fold, panels_rgb
    from competition.io.runs import submission_thresholds
    from competition.io.tracking import log_images
    from competition.tasks import open_competition

    if args.n < 1:
        raise CompetitionError(f"--n {args.n}: explain at least 1 row per fold")
    cfg = command_config(args)
    folds = parse_folds(args.fold, cfg.folds.n_splits, "--fold")
    task, comp = open_competition(cfg)
    device = device_for(init_world())
    loaded = load_fold_models(cfg, task, comp, trained_folds(cfg, folds, explicit=args.fold != "all"), device)
    thresholds = submission_thresholds(cfg.run_dir)  # F1 metrics: a mistake is one in the submission
    # Every fold's maps first, then the files: a refusal (a model without a 2-D map) writes nothing.
    panels = {fold: explain_fold(cfg, task, comp, model, state, device, args.n, thresholds)
              for fold, model, state in loaded}
    for fold, _, state in loaded:
        out, grids = cfg.fold_dir(fold) / "explain", {p.kind: panels_rgb(p) for p in panels[fold]}
        for kind in KINDS:
            if kind in grids:
                write_png(out / f"{kind}.png", grids[kind])
            else:  # no mistakes (or no right answer) now: an older grid would mislead
                (out / f"{kind}.png").unlink(missing_ok=True)
        log_images(cfg.fold_dir(fold), {f"explain/gradcam_{k}": rgb for k, rgb in grids.items()}, state.best_epoch)
        counts = ", ".join(f"{len(p.images)} {p.kind}" for p in panels[fold]) or "no rows"
        where = f" at {panels[fold][0].stage}" if panels[fold] else ""
        print(f"fold {fold}: Grad-CAM of epoch {state.best_epoch}{where}, {counts} → {out}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
