"""All checkpoint I/O: the one checkpoint schema (`FoldState`), atomic saves, weights_only loads,
the fold lock. Whether a checkpoint fits a config is io.compatibility's question."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import pickletools
import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from competition import __version__
from competition.core.errors import CompetitionError
from competition.core.keys import text_of
from competition.core.schema import Config, build_config
from competition.io.files import atomic_path, torch_save

BEST, LAST = "best.pt", "last.pt"
FORMAT = 2  # 2: the feature hook's spec and state inside `preprocessor`


@dataclass
class FoldState:
    """A fold's checkpoint (best.pt and last.pt alike): what the fold is, where its training
    stands, and the state to continue it from. Plain data and tensors only, so it loads with
    weights_only=True and predict rebuilds the model from `config` alone."""

    # What was trained: predict rebuilds the model and its inputs from these.
    fold: int
    config: dict
    classes: list
    metric_name: str
    higher_is_better: bool
    preprocessing: dict  # image size, mean, std, interpolation; {} for a table
    preprocessor: dict | None  # a table's fitted preprocessing (and feature-hook) state
    in_features: int | None
    # Where training stands after `epoch` completed epochs.
    epoch: int
    stage: int
    stage_complete: bool
    finished: bool
    loss: float
    metric: float
    best_metric: float | None
    best_epoch: int
    best_loss: float
    bad_epochs: int
    history: list
    # What --resume continues from. model_state_dict holds the weights that scored at this epoch
    # (`scored`: the EMA's when train.ema_decay is on, then train_state_dict holds the raw ones).
    model_state_dict: dict
    optimizer_state_dict: dict
    scaler_state_dict: dict | None = None
    train_state_dict: dict | None = None
    scored: str = "model"
    # A mid-epoch last.pt: `batches_done` batches of epoch `epoch` + 1 are in the weights, with
    # this running training loss; 0 at an epoch's end.
    batches_done: int = 0
    epoch_loss_total: float = 0.0
    epoch_samples: int = 0
    # "time_limit": train.time_limit stopped this unfinished fold (best.pt holds its best epoch so far;
    # --resume continues it). None: it trained on, or stopped otherwise.
    stopped_by: str | None = None
    kit_version: str = __version__
    # The run this fold belongs to (io.runs): its training-relevant config's hash and its folds.csv's.
    config_hash: str | None = None
    folds_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The mapping torch.save writes (no copy of the tensors)."""
        return {"format": FORMAT, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> FoldState:
        """Check a loaded mapping against the schema; say what is wrong in one line."""
        if not isinstance(data, dict):
            raise CompetitionError(f"checkpoint {path} is not a kit checkpoint (holds a {type(data).__name__})")
        fields = dataclasses.fields(cls)
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        if "format" not in data:
            missing = [k for k in required if k not in data]
            raise CompetitionError(f"checkpoint {path} is not a kit checkpoint: no format{', ' if missing else ''}{', '.join(missing[:6])}")
        if data["format"] != FORMAT:
            raise CompetitionError(
                f"checkpoint {path} has format {data['format']!r}; this kit reads format {FORMAT}: "
                f"retrain the fold with this kit version"
            )
        missing = [k for k in required if k not in data]
        if missing:
            raise CompetitionError(f"checkpoint {path} is not a kit checkpoint: no {', '.join(missing)}")
        if not isinstance(data["config"], dict) or not isinstance(data["classes"], list):
            raise CompetitionError(f"checkpoint {path} is not a kit checkpoint: 'config' must be a mapping, 'classes' a list")
        known = {f.name for f in fields}
        # Classes are text; kits before labels were read as text stored a numeric class as a number.
        return cls(**{k: v for k, v in data.items() if k in known and k != "classes"},
                   classes=[text_of(c) for c in data["classes"]])

    @property
    def hook_sha256(self) -> str | None:
        """The SHA-256 of the feature hook file the preprocessor was fit with (data.features' content),
        kept in the hook's part of `preprocessor`; None without a hook, or from a kit before it was kept."""
        return ((self.preprocessor or {}).get("hook") or {}).get("sha256")

    def for_inference(self) -> FoldState:
        """The fold as predict needs it: what --resume continues from (the optimizer's moments, the
        loss scaler, the raw weights under an EMA) left out, the weights that scored kept."""
        return dataclasses.replace(self, optimizer_state_dict={}, scaler_state_dict=None, train_state_dict=None)

    def restore_config(self, path: Path) -> Config:
        """The config this fold was trained with (keys and types checked)."""
        try:
            return build_config(self.config)
        except CompetitionError as exc:
            raise CompetitionError(f"checkpoint {path} holds a config this kit cannot read: {exc}") from None


def save_checkpoint(path: str | os.PathLike, state: FoldState) -> None:
    """Write a checkpoint to a temp name, then rename it into place."""
    torch_save(path, state.to_dict())


def checkpoint_bytes(state: FoldState) -> bytes:
    """The bytes save_checkpoint would write: a snapshot that later training steps cannot change."""
    import torch  # torch is loaded where a checkpoint is written or read, not by every import of this module

    buffer = io.BytesIO()
    torch.save(state.to_dict(), buffer)
    return buffer.getvalue()


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put the bytes of checkpoint `src` under `dst` too, atomically: a hard link where the
    filesystem has them (no second serialisation and fsync of the whole file), else a copy.
    Replacing either name later leaves the other as it was."""
    with atomic_path(dst, size=os.path.getsize(src)) as tmp:  # the size a copy needs
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _pickle_globals(path: Path) -> list[str]:
    """Names a plain pickle file would import when unpickled, read without unpickling it."""
    names: list[str] = []
    strings: list[str] = []  # the strings pushed so far; STACK_GLOBAL takes the last two
    memo: dict = {}
    last = None  # what the previous opcode pushed, when it was a string
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):  # parses opcodes only, runs nothing
                pushed = None
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(".".join(strings[-2:]))
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = last
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = last
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed = memo.get(arg)
                elif isinstance(arg, str):
                    pushed = arg
                if pushed is not None:
                    strings.append(pushed)
                last = pushed if op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT") else last
    except Exception:  # not a pickle, or a broken one: nothing more to say
        pass
    return names


def load_checkpoint(path: str | os.PathLike) -> FoldState:
    """Load with weights_only=True; code-carrying, truncated and foreign files are refused."""
    path = Path(path)
    if not path.is_file():
        raise CompetitionError(f"checkpoint {path} not found")
    if path.stat().st_size == 0:
        raise CompetitionError(f"checkpoint {path} is empty: truncated or not a checkpoint")
    foreign = f"checkpoint {path} is truncated or not a checkpoint"
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: the one line below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the first global it refused; a plain pickle file fails earlier, so read its globals.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        names = [found.group(1)] if found else _pickle_globals(path)
        if names:
            raise CompetitionError(
                f"checkpoint {path} refused: it holds pickled objects ({', '.join(dict.fromkeys(names[:3]))}) "
                f"that could run code; the kit loads plain tensors and data only"
            ) from None
        raise CompetitionError(f"{foreign} (not a file written by torch.save)") from None
    except RuntimeError as exc:  # the zip reader: "failed finding central directory" when cut short
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompetitionError(f"{foreign} ({first.split('. ')[0][:160]})") from None
    except (EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AttributeError, IndexError):
        raise CompetitionError(f"{foreign} (not a file written by torch.save, or cut short)") from None
    return FoldState.from_dict(state, path)


class FoldLock:
    """An exclusive lock on a fold directory: a second training of the same fold refuses.

    filelock's Unix lock is an flock, which the kernel releases when the holder dies, so a
    killed run never leaves a stale lock behind.
    """

    def __init__(self, fold_dir: Path):
        self.path = Path(fold_dir) / ".lock"
        self._lock: filelock.BaseFileLock | None = None

    def __enter__(self) -> FoldLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path, timeout=0, thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise CompetitionError(
                f"{self.path.parent} is being trained by another process (lock {self.path} is held); "
                f"wait for it to finish or stop it"
            ) from None
        self._lock = lock
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
