"""`python -m competition.train --fold K|all`: k-fold training with best/last checkpoints per fold."""
from __future__ import annotations

import argparse
import functools
import logging
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from competition.config import add_config_arguments, load_config
from competition.core.errors import EXIT_USAGE, CompetitionError, run_cli

if TYPE_CHECKING:
    import pandas as pd

    from competition.core.distributed import World
    from competition.core.schema import Config
    from competition.data.folder import Competition
    from competition.tasks import Task

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.train",
        description="Train one fold or every fold; writes outputs/<name>/fold<K>/{best,last}.pt, oof.csv, summary.csv, tb/.",
    )
    add_config_arguments(parser)
    parser.add_argument("--fold", default="all", help="fold number, a list like 0,2, or 'all' (default)")
    parser.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="outputs/<name> holds a run of another config: discard it (every fold) and train this one")
    return parser


def check_resumable(cfg: Config, comp: Competition, folds: list[int]) -> None:
    """Each last.pt to resume from must load and hold this config (io.compatibility.RESUME_MUTABLE
    aside), the data's classes and this feature hook file."""
    from competition.io.checkpoints import LAST, load_checkpoint
    from competition.io.runs import check_resumed

    for fold in folds:
        path = cfg.fold_dir(fold) / LAST
        if path.is_file():
            check_resumed(cfg, load_checkpoint(path), path, comp.classes)


def check_not_running(cfg: Config, folds: list[int]) -> None:
    """Refuse up front when another process trains one of these folds (each fold locks again to train)."""
    from competition.io.checkpoints import FoldLock

    for fold in folds:
        with FoldLock(cfg.fold_dir(fold)):
            pass


def prepare_run(cfg: Config, folds: list[int], resume: bool, overwrite: bool = False) -> tuple[Task, Competition, pd.DataFrame]:
    """Every check comes before the first write: a refused run leaves no config.yaml or checkpoint."""
    from competition.core.schema import config_to_dict
    from competition.data.pseudo import read_pseudo_labels
    from competition.data.splits import folds_path, load_or_create_folds
    from competition.inference.submission import layout_of
    from competition.io.disk import WRITABLE_OUTPUT, check_writable
    from competition.io.files import write_yaml
    from competition.io.runs import check_new_run, start_run
    from competition.io.wandb_runs import check_wandb
    from competition.tasks import open_competition
    from competition.training.disk_space import check_disk_space
    from competition.training.warm_start import check_warm_starts

    check_writable(cfg.output_dir, "output_dir", WRITABLE_OUTPUT)
    task, comp = open_competition(cfg)
    layout_of(cfg, comp)  # a sample predict could not fill is refused before the first fold trains
    # A resumed fold takes its weights from last.pt: no pretrained download needed.
    model = task.check_model(cfg, len(comp.classes), load_pretrained=not resume)
    check_wandb(cfg)
    check_disk_space(cfg, task, comp, folds, model)  # before the decode cache, the first thing written
    task.prepare(cfg, comp)
    task.check_fit(cfg, comp)  # a model fit once per fold: a small fit on real rows
    read_pseudo_labels(cfg, comp)  # a bad pseudo-label file fails before anything is written
    if resume:
        check_resumable(cfg, comp, folds)
    df = load_or_create_folds(cfg, comp.train, comp.target)
    if not resume:
        check_warm_starts(cfg, comp.classes, df, folds)
    check_not_running(cfg, folds)
    discard = check_new_run(cfg, df, overwrite, folds_path(cfg))  # a run is one config: io/runs.py
    start_run(cfg, df, comp.classes, discard)
    write_yaml(cfg.run_dir / "config.yaml", config_to_dict(cfg))
    return task, comp, df


def _agree_on_refusal(refusal: str | None, world: World) -> int | None:
    """Under torchrun the other ranks wait for the first one's checks and stop with it."""
    import torch

    from competition.core.distributed import barrier, broadcast_object

    refusal = broadcast_object(refusal, world)
    if refusal is None:
        return None
    if not world.distributed:
        raise CompetitionError(refusal)
    # torchrun stops the other processes as soon as one exits: say it before anyone leaves.
    if world.is_main:
        print(f"error: {refusal}", file=sys.stderr, flush=True)
    barrier(world)
    torch.distributed.destroy_process_group()
    return EXIT_USAGE


def _report(cfg: Config, comp: Competition, results) -> None:
    from competition.inference.best_epochs import cv_report

    for r in results:
        stopped = f" (stopped by train.time_limit {cfg.train.time_limit}; --resume continues it)" if r.stopped_by else ""
        if r.best_metric is None:
            print(f"fold {r.fold}: no epoch ended{stopped}")
        else:
            print(f"fold {r.fold}: best {cfg.train.metric} {r.best_metric:.5f} at epoch {r.best_epoch}{stopped}")
    report = cv_report(cfg, comp, list(range(cfg.folds.n_splits)))
    if len(report["folds"]) == cfg.folds.n_splits:
        print(f"CV {report['metric']}: {report['cv']:.5f} over {report['oof_rows']} out-of-fold rows")
    else:
        print(f"folds trained so far: {sorted(report['folds'])} of {cfg.folds.n_splits}")


def resume_command(argv: Sequence[str] | None) -> str:
    """The command line that continues this run: the same arguments, with --resume."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "-m", "competition.train", *args, *([] if "--resume" in args else ["--resume"])])


def _after_divergence(cfg: Config, folds: list[int], world: World) -> str:
    """A diverged fold saved nothing from the bad epoch on; a run with no fold saved at all is
    removed, so it does not look trained. What to do next."""
    from competition.io.runs import forget_unsaved_folds, free_name

    if world.is_main and forget_unsaved_folds(cfg, folds):
        return f"{cfg.run_dir} was removed (no fold had saved an epoch): train again"
    return f"train again under another name (--set name={free_name(cfg)}), or replace this run (--overwrite)"


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # The work's modules load once the arguments parse (here and in each step): `--help` loads no torch.
    import torch

    from competition.core.distributed import device_for, init_world
    from competition.core.interrupts import GracefulStop, Interrupted
    from competition.core.runtime import keep_freed_memory
    from competition.data.splits import load_or_create_folds, parse_folds
    from competition.io.disk import DiskFull
    from competition.tasks import open_competition
    from competition.training.epoch import Diverged
    from competition.training.trainers import TRAINERS

    keep_freed_memory()  # before the big allocations: see core/runtime.py
    cfg = load_config(args.config, args.overrides)
    folds = parse_folds(args.fold, cfg.folds.n_splits, "--fold")
    world = init_world()
    device = device_for(world)
    refusal = None
    if world.is_main:
        try:
            task, comp, df = prepare_run(cfg, folds, args.resume, args.overwrite)
        except CompetitionError as exc:
            refusal = str(exc)
    code = _agree_on_refusal(refusal, world)
    if code is not None:
        return code
    if not world.is_main:  # the first rank wrote folds.csv; the others read it
        task, comp = open_competition(cfg)
        df = load_or_create_folds(cfg, comp.train, comp.target)
    log.info("%s: %d train rows, %d test rows, %d classes, device %s%s", cfg.name, len(comp.train), len(comp.test),
             len(comp.classes), device, f", {world.size} processes" if world.distributed else "")
    try:
        with GracefulStop() as stop_request:
            # the task's fold trainer; the torch loop stops at a signal's next step
            fit = functools.partial(TRAINERS[task.trainer], stop=stop_request)
            results = []
            for f, after in zip(folds, [*folds[1:], None], strict=True):
                results.append(fit(cfg, task, comp, df, f, device=device, world=world, resume=args.resume))
                # A signal during a one-fit fold (it cannot stop inside its fit), or after a fold's last step:
                # stop before the next fold. Under torchrun the ranks agree on stopping inside the fold loop.
                if stop_request() is not None and after is not None and not world.distributed:
                    raise Interrupted(stop_request(), f"stopped after fold {f}, before fold {after}")
    except Interrupted as exc:
        exc.message = f"{exc.message}; continue with: {resume_command(argv)}"
        raise
    except DiskFull as exc:  # every finished epoch is in last.pt
        raise DiskFull(f"{exc}; free some space, then continue with --resume", exc.reason, exc.space) from None
    except Diverged as exc:
        raise CompetitionError(f"{exc}; {_after_divergence(cfg, folds, world)}") from None
    if world.is_main:
        _report(cfg, comp, results)
    if world.distributed:
        torch.distributed.destroy_process_group()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
