"""Weights & Biases as a second tracking backend: one wandb run per fold, grouped by the config's
name, continued by a resumed fold. Imported only when `tracking.wandb` is not `off`."""
from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import numpy as np

from competition.core.errors import CompetitionError
from competition.core.schema import Config, config_to_dict
from competition.io.files import write_json

log = logging.getLogger(__name__)

RUN_FILE = "wandb.json"  # in the fold folder: the run a resumed fold continues


def _wandb(mode: str):
    try:
        import wandb
    except ImportError:
        raise CompetitionError(f"config key tracking.wandb: {mode} needs the wandb package: "
                               f"pip install -e '.[wandb]' (or pip install wandb)") from None
    return wandb


def check_wandb(cfg: Config) -> None:
    """Before a run writes anything: the package is there and, online, there are credentials
    (read from WANDB_API_KEY, wandb's settings or .netrc; not checked against the server)."""
    mode = cfg.tracking.wandb
    if mode == "off":
        return
    wandb = _wandb(mode)
    if mode == "online" and not wandb.login(prompt=False, verify=False):
        raise CompetitionError("config key tracking.wandb: online needs W&B credentials: run `wandb login` or set "
                               "WANDB_API_KEY (or log with tracking.wandb: offline and `wandb sync` later)")


class WandbRun:
    """One fold's wandb run: scalars against the epoch, images, the config and the best scores.

    The run id is kept in <fold>/wandb.json, so `train --resume` continues the same run (offline,
    each session is a folder of its own; `wandb sync` uploads them into that run in order)."""

    def __init__(self, cfg: Config, fold: int, fold_dir: Path, resumed: bool):
        mode = cfg.tracking.wandb
        self.wandb = wandb = _wandb(mode)
        id_file = Path(fold_dir) / RUN_FILE
        run_id = json.loads(id_file.read_text()).get("id") if resumed and id_file.is_file() else None
        run_id = run_id or secrets.token_hex(4)  # wandb's id alphabet; its own generator is not public API
        # Offline means no network at all: machine-info and system-stats probes look for cloud
        # metadata endpoints; online runs keep them (GPU use beside the curves).
        quiet = {"x_disable_stats": True, "x_disable_machine_info": True} if mode == "offline" else {}
        try:
            self.run = wandb.init(
                mode=mode, dir=str(fold_dir), project=cfg.tracking.project, entity=cfg.tracking.entity,
                group=cfg.name, name=f"{cfg.name}-fold{fold}", job_type="train", id=run_id, resume="allow",
                config=config_to_dict(cfg), reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", **quiet),
            )
        except Exception as exc:  # auth, network and server errors all end here, in one line
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise CompetitionError(f"wandb run for fold {fold} could not start ({type(exc).__name__}: {first}); "
                                   f"check the network and `wandb login`, or set tracking.wandb: offline") from None
        write_json(id_file, {"id": run_id, "mode": mode, "project": cfg.tracking.project})
        # Resumed epochs follow the interrupted ones on one axis; wandb's own step restarts per session.
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        where = self.run.url if mode == "online" else Path(self.run.dir).parent
        log.info("fold %d: wandb %s run %s (%s)", fold, mode, run_id, where)

    def scalars(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log({**values, "epoch": epoch})

    def image(self, tag: str, rgb: np.ndarray, epoch: int) -> None:
        self.run.log({tag: self.wandb.Image(rgb), "epoch": epoch})

    def summary(self, values: dict[str, float]) -> None:
        self.run.summary.update(values)

    def close(self) -> None:
        self.run.finish()
        # finish() can return before wandb's service has written the run's file (the second run
        # of a process does); teardown waits for it, so each fold's run folder is complete, ready
        # for `wandb sync`, when the fold ends. The next fold starts a service of its own.
        self.wandb.teardown()
