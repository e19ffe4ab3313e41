"""The fold trainers, by the name a task gives (tasks.base.Task.trainer): train.py runs the config's
task's, never asking which task or model it is."""
from __future__ import annotations

from competition.training.estimator_fold import fit_estimator_fold
from competition.training.fold import fit_fold

# Each takes (cfg, task, comp, df, fold, *, device, world, resume, stop) and returns a FoldResult.
TRAINERS = {
    "epochs": fit_fold,  # the torch loop: stages of epochs, checkpoints, early stopping (training.fold)
    "once": fit_estimator_fold,  # one fit on the fold's rows, the same files (training.estimator_fold)
}
