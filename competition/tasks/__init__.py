"""What differs between an image competition and a table: the input columns and their checks, the
work before training, each fold's datasets and model, the test inputs, and for a table model fit
once per fold, its own fold trainer. Everything else — folds, the training loop, checkpoints, the
ensemble and the submission — is shared, and asks the config's task (`task_of`) rather than which
task or model family it runs (tests/test_layout.py checks that no other module branches on them).

The steps are tasks.base.Task's; tasks/image.py and tasks/tabular.py implement them."""
from __future__ import annotations

from torch import nn

from competition.core.errors import CompetitionError
from competition.core.metrics import METRICS
from competition.core.schema import Config
from competition.data.folder import Competition, load_competition
from competition.tasks.base import FoldData, Task
from competition.tasks.image import ImageTask
from competition.tasks.tabular import OneFitTask, TabularTask

__all__ = ["TASKS", "FoldData", "ImageTask", "OneFitTask", "TabularTask", "Task", "build_model", "open_competition",
           "task_of"]

# The task kinds (config key task); competition.config checks the keys each needs (TASK_CHECKS).
TASKS: dict[str, Task] = {"image": ImageTask(), "tabular": TabularTask()}


def task_of(cfg: Config) -> Task:
    """The task a config runs: its kind's, or for a table model fit once per fold, its family's."""
    return TASKS[cfg.task].for_model(cfg)


def build_model(cfg: Config, num_classes: int, in_features: int | None = None, load_pretrained: bool = True) -> nn.Module:
    """The model a config describes (its task's family), unfitted. `load_pretrained=False` when
    weights come from a checkpoint."""
    return task_of(cfg).build_model(cfg, num_classes, in_features, load_pretrained)


def open_competition(cfg: Config) -> tuple[Task, Competition]:
    """The config's task and its competition folder, every CSV, the target and the inputs checked."""
    task = task_of(cfg)
    comp = load_competition(cfg)
    metric = METRICS[cfg.train.metric]
    if comp.target.kind not in metric.formats:
        raise CompetitionError(f"config key train.metric: {metric.name} scores a binary target; "
                               f"{comp.train_path} column '{comp.target.column}' has {len(comp.classes)} classes")
    if cfg.data.positive_class is not None and comp.target.kind != "binary":
        raise CompetitionError(f"config key data.positive_class: {comp.train_path} column '{comp.target.column}' has "
                               f"{len(comp.classes)} classes; a positive class applies to two")
    task.check_inputs(cfg, comp)
    return task, comp
