"""All checkpoint I/O: atomic saves, weights_only loads, checks against the config, the fold lock."""
from __future__ import annotations

import errno
import fcntl
import io
import os
import pickle
import pickletools
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from competition.errors import CompetitionError
from competition.fileio import atomic_path, torch_save

REQUIRED_KEYS = ("epoch", "model_state_dict", "optimizer_state_dict", "loss", "metric", "config", "classes")
BEST, LAST = "best.pt", "last.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a checkpoint of plain data and tensors to a temp name, then rename it into place."""
    torch_save(path, state)


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    """The bytes save_checkpoint would write: a snapshot that later training steps cannot change."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put the bytes of checkpoint `src` under `dst` too, atomically: a hard link where the
    filesystem has them (no second serialisation and fsync of the whole file), else a copy.
    Replacing either name later leaves the other as it was."""
    with atomic_path(dst) as tmp:
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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load with weights_only=True; code-carrying, truncated and foreign files are refused."""
    path = Path(path)
    if not path.is_file():
        raise CompetitionError(f"checkpoint {path} not found")
    if path.stat().st_size == 0:
        raise CompetitionError(f"checkpoint {path} is empty: truncated or not a checkpoint")
    foreign = f"checkpoint {path} is truncated or not a checkpoint"
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
    if not isinstance(state, dict):
        raise CompetitionError(f"checkpoint {path} is not a kit checkpoint (holds a {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CompetitionError(f"checkpoint {path} is not a kit checkpoint: no {', '.join(missing)}")
    if not isinstance(state["config"], dict) or not isinstance(state["classes"], list):
        raise CompetitionError(f"checkpoint {path} is not a kit checkpoint: 'config' must be a mapping, 'classes' a list")
    return state


def check_compatible(state: dict, path: Path, model_name: str, task: str, classes: list) -> None:
    """A checkpoint must hold the model and class list the run expects; say what differs."""
    cfg = state["config"]
    got_model = cfg.get("model", {}).get("name")
    if got_model != model_name:
        raise CompetitionError(f"checkpoint {path} holds model {got_model!r}, the config says {model_name!r}")
    if cfg.get("task") != task:
        raise CompetitionError(f"checkpoint {path} is for task {cfg.get('task')!r}, the config says {task!r}")
    if list(state["classes"]) != list(classes):
        got, want = list(state["classes"]), list(classes)
        unknown = [c for c in got if c not in want]
        absent = [c for c in want if c not in got]
        detail = []
        if unknown:
            detail.append(f"classes {unknown} unknown to the data")
        if absent:
            detail.append(f"data classes {absent} missing from it")
        if not detail:
            detail.append(f"class order {got} vs {want}")
        raise CompetitionError(f"checkpoint {path} does not match train.csv: {'; '.join(detail)}")


class FoldLock:
    """An exclusive lock on a fold directory: a second training of the same fold refuses.

    flock is released by the kernel when the holder dies, so a killed run never leaves a
    stale lock behind.
    """

    def __init__(self, fold_dir: Path):
        self.path = Path(fold_dir) / ".lock"
        self.fh = None

    def __enter__(self) -> FoldLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.fh.close()
            self.fh = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise CompetitionError(
                    f"{self.path.parent} is being trained by another process (lock {self.path} is held); "
                    f"wait for it to finish or stop it"
                ) from None
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None
