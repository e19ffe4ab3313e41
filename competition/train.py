"""`python -m competition.train --fold K|all`: k-fold training with best/last checkpoints per fold."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch

from competition.checkpoints import LAST, FoldLock, check_compatible, load_checkpoint
from competition.config import Config, add_config_arguments, config_to_dict, load_config
from competition.data import Competition, load_competition
from competition.distributed import barrier, broadcast_object, device_for, init_world
from competition.ensemble import cv_report
from competition.errors import EXIT_USAGE, CompetitionError, run_cli
from competition.fileio import write_yaml
from competition.finetune import fit_fold, prepare_images
from competition.folds import load_or_create_folds
from competition.models import check_model
from competition.runtime import keep_freed_memory

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.train",
        description="Train one fold or every fold; writes outputs/<name>/fold<K>/{best,last}.pt, oof.csv, summary.csv, tb/.",
    )
    add_config_arguments(parser)
    parser.add_argument("--fold", default="all", help="fold number, or 'all' (default)")
    parser.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    return parser


def parse_fold(spec: str, n_splits: int) -> list[int]:
    if spec == "all":
        return list(range(n_splits))
    try:
        fold = int(spec)
    except ValueError:
        raise CompetitionError(f"--fold {spec}: expected a fold number or 'all'") from None
    if not 0 <= fold < n_splits:
        raise CompetitionError(f"--fold {fold} is out of range: folds are 0..{n_splits - 1} (folds.n_splits = {n_splits})")
    return [fold]


def check_resumable(cfg: Config, comp: Competition, folds: list[int]) -> None:
    """Each last.pt to resume from must load and hold this model and the data's classes."""
    for fold in folds:
        path = cfg.fold_dir(fold) / LAST
        if path.is_file():
            check_compatible(load_checkpoint(path), path, cfg.model.name, cfg.task, comp.classes)


def check_not_running(cfg: Config, folds: list[int]) -> None:
    """Refuse up front when another process trains one of these folds (each fold locks again to train)."""
    for fold in folds:
        with FoldLock(cfg.fold_dir(fold)):
            pass


def _main(argv: Sequence[str] | None) -> int:
    keep_freed_memory()  # before the big allocations: see runtime.py
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    folds = parse_fold(args.fold, cfg.folds.n_splits)
    world = init_world()
    device = device_for(world)
    refusal = None
    if world.is_main:
        # Every check comes before the first write: a refused run leaves no config.yaml or checkpoint.
        try:
            comp = load_competition(cfg)
            # A resumed fold takes its weights from last.pt: no pretrained download needed.
            check_model(cfg, len(comp.classes), load_pretrained=not args.resume)
            prepare_images(cfg, comp)
            if args.resume:
                check_resumable(cfg, comp, folds)
            df = load_or_create_folds(cfg, comp.train)
            check_not_running(cfg, folds)
            write_yaml(cfg.run_dir / "config.yaml", config_to_dict(cfg))
        except CompetitionError as exc:
            refusal = str(exc)
    # Under torchrun the other ranks wait for the first one's checks: they stop with it.
    refusal = broadcast_object(refusal, world)
    if refusal is not None:
        if not world.distributed:
            raise CompetitionError(refusal)
        # torchrun stops the other processes as soon as one exits: say it before anyone leaves.
        if world.is_main:
            print(f"error: {refusal}", file=sys.stderr, flush=True)
        barrier(world)
        torch.distributed.destroy_process_group()
        return EXIT_USAGE
    if not world.is_main:  # the first rank wrote folds.csv; the others read it
        comp = load_competition(cfg)
        df = load_or_create_folds(cfg, comp.train)
    log.info("%s: %d train rows, %d test rows, %d classes, device %s%s", cfg.name, len(comp.train), len(comp.test),
             len(comp.classes), device, f", {world.size} processes" if world.distributed else "")
    results = [fit_fold(cfg, comp, df, f, device=device, world=world, resume=args.resume) for f in folds]
    if world.is_main:
        for r in results:
            print(f"fold {r['fold']}: best {cfg.train.metric} {r['best_metric']:.5f} at epoch {r['best_epoch']}")
        report = cv_report(cfg, comp, list(range(cfg.folds.n_splits)))
        if len(report["folds"]) == cfg.folds.n_splits:
            print(f"CV {report['metric']}: {report['cv']:.5f} over {report['oof_rows']} out-of-fold rows")
        else:
            print(f"folds trained so far: {sorted(report['folds'])} of {cfg.folds.n_splits}")
    if world.distributed:
        torch.distributed.destroy_process_group()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
