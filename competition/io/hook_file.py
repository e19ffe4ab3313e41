"""The feature hook's file (`data.features: path/to/file.py:ClassName`): where it is and what it holds.

The file's bytes are part of a run's identity (io.runs): a hook edited after training is another
run, so its SHA-256 is recorded with the fit (in the checkpoint's preprocessor state) and mixed into
the run's config hash. Reading the file runs none of it; only data.features imports it, from the
local config."""
from __future__ import annotations

import hashlib
from pathlib import Path

from competition.core.errors import CompetitionError
from competition.core.schema import Config


def check_hook_spec(spec: str) -> tuple[str, str]:
    """`path/to/file.py:ClassName` → (path, class name); anything else is a config error."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise CompetitionError(f"config key data.features: expected path/to/file.py:ClassName, got {spec!r}")
    return path, name


def hook_path(spec: str, source_dir: str | Path = "") -> Path:
    """The hook's file, a relative path resolved against the config's folder; it must exist."""
    file, _ = check_hook_spec(spec)
    path = (Path(source_dir or ".") / file).resolve()
    if not path.is_file():
        raise CompetitionError(f"config key data.features: {path} not found")
    return path


def hook_source(spec: str, source_dir: str | Path = "") -> tuple[Path, bytes, str]:
    """(the hook's file, its bytes, their SHA-256 in hex): what runs is what is hashed."""
    path = hook_path(spec, source_dir)
    data = path.read_bytes()
    return path, data, hashlib.sha256(data).hexdigest()


def hook_digest(cfg: Config) -> str | None:
    """The SHA-256 of the config's hook file (hex), or None for a config without a hook."""
    return hook_source(cfg.data.features, cfg.source_dir)[2] if cfg.data.features else None

