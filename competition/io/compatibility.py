"""Whether a checkpoint or a run belongs with a config (or with another checkpoint): one comparison
for resume, predict, warm starts and a run's identity, and one wording for what differs:

    <path> was trained with <key> <old> and the config says <new>; <what to do>

A `Purpose` says which config keys it compares (all but those that may differ, or only some) and
whether the classes, the split (folds.csv's hash) and the feature hook file's content must agree."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from competition.core.errors import CompetitionError
from competition.core.keys import number_of
from competition.core.schema import Config, build_config, config_to_dict, flat_config
from competition.io.checkpoints import FoldState
from competition.io.hook_file import hook_digest, hook_path

# Keys that say where files are, how fast the work runs or what the submission looks like, not what
# is trained: a run keeps its identity when they change. `folds.*` only matter through folds.csv,
# whose own hash is part of the identity (an existing folds.csv wins over them). A time limit stops
# a fold cleanly, as Ctrl-C does, and --resume continues it; kept epochs are files beside best.pt:
# a resumed run may change both (RESUME_MUTABLE), so they cannot be part of its identity either.
# `auto.*` says what auto may try next; a trial's own model and training keys are the run's.
NOT_TRAINING = (
    "name", "output_dir", "submission_dir", "data.root", "data.test_csv", "data.sample_submission",
    "data.solution", "data.sample_target_column", "data.image_pattern", "data.test_image_pattern", "data.demo",
    "data.max_classes", "folds", "train.num_workers", "train.cache", "train.cache_on_device", "train.compile",
    "train.checkpoint_every_minutes", "train.time_limit", "train.keep_top_k", "tracking", "predict", "auto",
)
# Keys a resumed fold may change; anything else must match the config it started with.
RESUME_MUTABLE = (
    "train.num_workers", "train.cache", "train.cache_on_device", "train.epochs", "train.patience",
    "train.checkpoint_every_minutes", "train.time_limit", "train.keep_top_k", "predict", "tracking", "auto",
)
FIRST = ("task", "model.name", "data.features")  # named before the other keys that differ
SHOWN = 5  # differences named in one message
UNRECORDED = "unrecorded"  # a hook file's content, or a split, that a checkpoint from an older kit does not name


def _under(key: str, names: tuple[str, ...]) -> bool:
    return any(key == n or key.startswith(f"{n}.") for n in names)


def flat_trained(config: dict, where: object = None) -> dict:
    """A stored config's flattened keys, through the current schema (a key added to the kit since
    compares as its default); `where` names the file in the error when the kit cannot read it."""
    try:
        return flat_config(config_to_dict(build_config(config)))
    except CompetitionError as exc:
        if where is None:
            raise
        raise CompetitionError(f"{where} holds a config this kit cannot read: {exc}") from None


def training_config(config: dict) -> dict:
    """The flattened keys of a stored config that decide what is trained (NOT_TRAINING left out)."""
    return {k: v for k, v in flat_trained(config).items() if not _under(k, NOT_TRAINING)}


@dataclass(frozen=True)
class Trained:
    """What a checkpoint or run was trained with, or what a config would train, and the names the
    wording gives the side that is compared against (`and <name> says …`)."""

    config: dict  # flattened, through the current schema
    classes: list | None = None  # None: not compared
    folds: str | None = None  # folds.csv's hash; None: not recorded (or not compared)
    hook: str | None = None  # the hook file's SHA-256; None: no hook; UNRECORDED: not recorded
    name: str = "the config"
    folds_file: str | None = None
    hook_file: str | None = None

    @classmethod
    def stored(cls, config: dict, path: Path, classes: list | None = None, folds: str | None = None,
               hook: str | None = None) -> Trained:
        """A run.json's or a checkpoint's record (`path`): a hook named without its content recorded is UNRECORDED."""
        named = (config.get("data") or {}).get("features")
        return cls(flat_trained(config, path), None if classes is None else list(classes), folds,
                   hook or (UNRECORDED if named else None), name=str(path))

    @classmethod
    def of_state(cls, state: FoldState, path: Path) -> Trained:
        return cls.stored(state.config, path, state.classes, state.folds_hash, state.hook_sha256)

    @classmethod
    def of_config(cls, cfg: Config, classes: list | None = None, folds: str | None = None,
                  folds_file: Path | None = None) -> Trained:
        """What `cfg` trains now: its hook file's content as it is on disk."""
        hook = str(hook_path(cfg.data.features, cfg.source_dir)) if cfg.data.features else None
        return cls(flat_config(config_to_dict(cfg)), None if classes is None else list(classes), folds,
                   hook_digest(cfg), folds_file=None if folds_file is None else str(folds_file), hook_file=hook)


@dataclass(frozen=True)
class Purpose:
    """What must agree for one purpose: the config keys (`only` these, else all but `may_differ`),
    and whether the classes, the split and the hook file's content do."""

    may_differ: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    classes: bool = True
    folds: bool = False
    hook: bool = True
    unrecorded_folds_differ: bool = False  # a checkpoint that names no split cannot be on this one
    prefix: str = ""

    def compares(self, key: str) -> bool:
        return key in self.only if self.only is not None else not _under(key, self.may_differ)


RESUME = Purpose(may_differ=RESUME_MUTABLE, prefix="--resume: ")
PREDICT = Purpose(may_differ=NOT_TRAINING)
WARM_START = Purpose(only=("task", "model.name"), folds=True, hook=False, unrecorded_folds_differ=True,
                     prefix="config key model.init_from: ")
SAME_RUN = Purpose(may_differ=NOT_TRAINING, classes=False, folds=True)


def _classes(old: list, new: list) -> str:
    """The classes part: which are unknown to the data, which missing, or only their order."""
    unknown, absent = [c for c in old if c not in new], [c for c in new if c not in old]
    detail = ([f"classes {unknown} unknown to the data"] if unknown else []) + (
        [f"data classes {absent} missing from it"] if absent else [])
    a, b = [number_of(c) for c in old], [number_of(c) for c in new]
    if not detail:
        detail.append("in another order")
    elif None not in a and None not in b and sorted(a) == sorted(b):  # `1` and `01`
        detail.append("its labels were read as numbers by an older kit (retrain the fold)")
    return f"classes {old} and train.csv says {new} ({'; '.join(detail)})"


def _hook(spec: str, old: str | None, new: str | None, where: str) -> str:
    said = "of unrecorded content (an older kit trained it)" if old == UNRECORDED else f"sha256 {str(old)[:12]}"
    return f"feature hook {spec} file {said} and {where} says sha256 {str(new)[:12]}"


def differences(trained: Trained, given: Trained, purpose: Purpose) -> list[tuple[str, str]]:
    """(kind, wording) of each difference `purpose` compares; kind: config, classes, folds or hook."""
    found = []
    order = {k: i for i, k in enumerate(FIRST)}
    for key in sorted(set(trained.config) | set(given.config), key=lambda k: (order.get(k, len(FIRST)), k)):
        old, new = trained.config.get(key), given.config.get(key)
        if old != new and purpose.compares(key):
            found.append(("hook" if key == "data.features" else "config", f"{key} {old!r} and {given.name} says {new!r}"))
    if purpose.classes and None not in (trained.classes, given.classes) and trained.classes != given.classes:
        found.append(("classes", _classes(trained.classes, given.classes)))
    if (purpose.folds and given.folds is not None and trained.folds != given.folds
            and (trained.folds is not None or purpose.unrecorded_folds_differ)):
        found.append(("folds", f"folds {trained.folds or UNRECORDED} and {given.folds_file or given.name} says {given.folds}"))
    spec = given.config.get("data.features")
    if purpose.hook and spec and spec == trained.config.get("data.features") and trained.hook != given.hook:
        found.append(("hook", _hook(spec, trained.hook, given.hook, given.hook_file or given.name)))
    return found


def check_compatible(path: Path, trained: Trained, given: Trained, purpose: Purpose,
                     advice: str | Mapping[str, str]) -> None:
    """Refuse in one line when `trained` (what `path` was trained with) and `given` differ in what
    `purpose` compares. `advice` says what to do: one text, or one per kind of the first difference
    (key "" for the others)."""
    found = differences(trained, given, purpose)
    if not found:
        return
    if isinstance(advice, Mapping):
        advice = advice.get(found[0][0], advice[""])
    shown = ", with ".join(text for _, text in found[:SHOWN])
    more = f", and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    raise CompetitionError(f"{purpose.prefix}{path} was trained with {shown}{more}; {advice}")
