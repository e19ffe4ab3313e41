"""`python -m competition.package`: a folder to upload as a Kaggle dataset for code competitions
(no internet): the kit as a wheel, every trained fold's best checkpoint (without what only --resume
needs), the config and its feature hook, and a predict.py that installs the wheel offline and writes
submission.csv."""
from __future__ import annotations

import argparse
import shutil
import string
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import competition
from competition.config import add_config_arguments, add_run_argument, command_config
from competition.core.errors import CompetitionError, run_cli
from competition.core.schema import Config, config_to_dict
from competition.io.checkpoints import BEST, checkpoint_bytes, load_checkpoint
from competition.io.disk import DiskFull
from competition.io.files import atomic_dir, write_bytes, write_text, write_yaml
from competition.io.hook_file import check_hook_spec
from competition.io.runs import CV_FILE, check_trained_with, stored_thresholds

RUNS = "outputs"  # the packaged config's output_dir: fold checkpoints under <package>/outputs/<name>/
OOF = "oof.csv"  # a fold's out-of-fold rows: predict's CV report
SCRIPT = "predict.py"  # the notebook's entry point

# The kit's wheel is built from the installed package rather than from a checkout's
# pyproject.toml, so packaging works as well when the kit was itself installed from a wheel:
# the package's files are copied beside this minimal pyproject.toml and setuptools' PEP 517
# backend (what pip and `build` call) builds there, without build isolation: nothing to download.
# No dependencies: predict.py installs with --no-deps into an image that already has torch,
# timm, albumentations, pandas and scikit-learn.
PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "competition"
version = "{version}"
description = "Kaggle-style classification kit (packaged for an offline notebook)"
requires-python = ">=3.10"

[tool.setuptools.packages.find]
include = ["competition*"]

[tool.setuptools.package-data]
competition = ["configs/*.yaml", "configs/*.py"]
"""
BUILD = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"

PREDICT_SCRIPT = string.Template('''\
"""Write the submission of the packaged folds offline: install the kit's wheel from this folder,
then run `python -m competition.predict` on the competition's input folder.

In a Kaggle notebook (internet off), with the competition and this dataset added as inputs:
    !python /kaggle/input/<this dataset>/predict.py [--data DIR] [--output CSV] [--set KEY=VALUE]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WHEEL = HERE / $wheel
RUN = HERE / $run  # the packaged folds (fold<K>/best.pt, oof.csv) and cv.json (thresholds)
DATA = $data


def main(argv=None):
    parser = argparse.ArgumentParser(description="Predict with the packaged folds and write a submission.")
    parser.add_argument("--data", default=DATA, help=f"the competition's input folder (default {DATA})")
    parser.add_argument("--output", default="/kaggle/working/submission.csv", help="the submission's path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, as with python -m competition.predict")
    args = parser.parse_args(argv)
    # --no-index: this file only, never the network. --no-deps: the image has the kit's dependencies.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--force-reinstall", "--disable-pip-version-check", str(WHEEL)],
                   check=True, env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})
    with tempfile.TemporaryDirectory() as scratch:
        # Kaggle mounts datasets read-only and predict writes cv.json beside the folds: it reads
        # them through links from a scratch run folder instead.
        run = Path(scratch) / RUN.name
        for src in sorted(RUN.glob("fold*/*")):
            (run / src.parent.name).mkdir(parents=True, exist_ok=True)
            (run / src.parent.name / src.name).symlink_to(src)
        if (RUN / "cv.json").is_file():
            (run / "cv.json").symlink_to(RUN / "cv.json")
        sets = [f"data.root={json.dumps(str(Path(args.data).resolve()))}", f"output_dir={json.dumps(scratch)}",
                f"submission_dir={json.dumps(scratch)}", *args.overrides]
        # --no-cv: the notebook's time goes to the test set; the CV was measured before packaging.
        cmd = [sys.executable, "-m", "competition.predict", "--config", str(HERE / "config.yaml"), "--no-cv",
               "--output", str(Path(args.output).resolve())]
        for value in sets:
            cmd += ["--set", value]
        # Run from the scratch folder: a `competition` folder where the notebook runs must not
        # shadow the installed wheel.
        return subprocess.run(cmd, cwd=scratch).returncode


if __name__ == "__main__":
    sys.exit(main())
''')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.package",
        description="Package the trained folds, the kit (as a wheel) and a predict.py into a folder "
        "to upload as a Kaggle dataset, for code competitions that run without internet.",
    )
    add_config_arguments(parser)
    add_run_argument(parser)
    parser.add_argument("--output", required=True, help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--folds", default="all", help="'all' trained folds (default) or fold numbers like 0,2")
    parser.add_argument("--kaggle-data", default=None,
                        help="predict.py's default competition folder (default /kaggle/input/<data.root's name>)")
    return parser


def build_wheel(dest: Path) -> Path:
    """The installed kit as a pure-Python wheel in `dest`, built offline."""
    source = Path(competition.__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="competition-wheel-") as tmp:
        shutil.copytree(source, Path(tmp) / "competition", ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
        (Path(tmp) / "pyproject.toml").write_text(PYPROJECT.format(version=competition.__version__))
        # A child process: the backend builds in its current folder and patches distutils on import.
        proc = subprocess.run([sys.executable, "-c", BUILD, str(dest.resolve())], cwd=tmp, capture_output=True, text=True)
    if proc.returncode != 0:
        if "No module named 'setuptools'" in proc.stderr:
            raise CompetitionError("building the kit's wheel needs setuptools, which this Python lacks: pip install setuptools")
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CompetitionError(f"building the kit's wheel failed: {last[:300]}")
    return dest / proc.stdout.strip().splitlines()[-1]


def check_folds(cfg: Config, checkpoints: list[tuple[int, Path]]) -> None:
    """Each checkpoint loads as predict will load it, and all hold what the config describes."""
    classes = None
    for _, path in checkpoints:
        state = load_checkpoint(path)
        classes = state.classes if classes is None else classes
        check_trained_with(cfg, state, path, classes)  # the package's config.yaml is the one given here


def ship_checkpoint(src: Path, dst: Path) -> None:
    """A fold's best.pt as predict needs it (FoldState.for_inference: without the optimizer's
    moments, the loss scaler and the raw weights under an EMA, a third to a quarter of the bytes),
    written, then read back as predict reads it (weights_only): the same weights, or no package."""
    import torch

    state = load_checkpoint(src)
    # Serialised first, then written as bytes: a full disk is then an OSError (DiskFull), where
    # torch.save's own writer would fail with a RuntimeError.
    write_bytes(dst, checkpoint_bytes(state.for_inference()))
    shipped = load_checkpoint(dst).model_state_dict
    weights = state.model_state_dict
    same = shipped.keys() == weights.keys() and all(
        torch.equal(v, shipped[k]) if torch.is_tensor(v) else v == shipped[k] for k, v in weights.items())
    if not same:
        raise CompetitionError(f"{src} written into the package does not read back as the same weights: "
                               f"nothing was left at the package's folder")


def hook_file(cfg: Config) -> tuple[Path, Path] | None:
    """(the feature hook's file, its path relative to the package), or None without a hook.

    Checkpoints name their hook by the spec they were trained with, and predict refuses another,
    so the package keeps the file at the same path relative to its config.yaml."""
    if not cfg.data.features:
        return None
    file, _ = check_hook_spec(cfg.data.features)
    relative = Path(file)
    if relative.is_absolute() or ".." in relative.parts:
        raise CompetitionError(
            f"config key data.features: {cfg.data.features} names a file outside the config's folder, which the "
            f"package cannot put at the same path (checkpoints name their hook by it): keep the hook in the "
            f"config's folder or below, and train with that spec"
        )
    if relative == Path(SCRIPT):
        raise CompetitionError(f"config key data.features: {cfg.data.features} would be overwritten by the package's own {SCRIPT}: rename the hook")
    source = Path(cfg.source_dir or ".") / relative
    if not source.is_file():
        raise CompetitionError(f"config key data.features: {source} not found")
    return source, relative


def packaged_config(cfg: Config, data_root: str) -> dict:
    """The resolved config, reading the competition from `data_root` and the folds from the package."""
    data = config_to_dict(cfg)
    data["output_dir"] = RUNS
    data["submission_dir"] = "submissions"  # a local absolute path means nothing in the notebook
    data["data"]["root"] = data_root
    return data


def write_package(out: Path, cfg: Config, checkpoints: list[tuple[int, Path]], hook: tuple[Path, Path] | None,
                  data_root: str) -> Path:
    """Build the package aside and rename it to `out`; returns the wheel's path inside it."""
    try:
        return _write_package(out, cfg, checkpoints, hook, data_root)
    except DiskFull as exc:  # its message names a file inside the temporary folder, which is gone
        raise CompetitionError(f"writing the package {out} failed: {exc.reason} ({exc.space}); nothing was left there") from None
    except OSError as exc:  # a folder that cannot be written: atomic_dir left nothing
        raise CompetitionError(f"writing the package {out} failed: {exc.strerror or exc}; nothing was left there") from None


def _write_package(out: Path, cfg: Config, checkpoints: list[tuple[int, Path]], hook: tuple[Path, Path] | None,
                   data_root: str) -> Path:
    with atomic_dir(out) as tmp:
        wheel = build_wheel(tmp)
        for fold, best in checkpoints:
            fold_dir = tmp / RUNS / cfg.name / f"fold{fold}"
            ship_checkpoint(best, fold_dir / BEST)
            if (cfg.fold_dir(fold) / OOF).is_file():  # predict's CV report; without it, no CV
                shutil.copyfile(cfg.fold_dir(fold) / OOF, fold_dir / OOF)
        if (cfg.run_dir / CV_FILE).is_file():  # the thresholds predict --no-cv decides at
            shutil.copyfile(cfg.run_dir / CV_FILE, tmp / RUNS / cfg.name / CV_FILE)
        if hook is not None:
            (tmp / hook[1]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(hook[0], tmp / hook[1])
        write_yaml(tmp / "config.yaml", packaged_config(cfg, data_root))
        run = f"{RUNS}/{cfg.name}"
        write_text(tmp / SCRIPT, PREDICT_SCRIPT.substitute(wheel=repr(wheel.name), run=repr(run), data=repr(data_root)))
    return out / wheel.name


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # The work's modules load once the arguments parse: `--help` loads no torch.
    from competition.data.splits import parse_folds
    from competition.inference.ensemble import trained_folds
    from competition.tasks import task_of

    cfg = command_config(args)
    out = Path(args.output)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise CompetitionError(f"--output {out} exists and is not an empty folder: give a new one (nothing was written)")
    task_of(cfg).check_package(cfg)  # a model refit at predict needs folds.csv, which a package lacks
    hook = hook_file(cfg)
    folds = parse_folds(args.folds, cfg.folds.n_splits)
    checkpoints = trained_folds(cfg, folds, explicit=args.folds != "all")
    check_folds(cfg, checkpoints)
    stored_thresholds(cfg)  # a metric that decides at thresholds needs a full predict's cv.json first
    data_root = args.kaggle_data or f"/kaggle/input/{Path(cfg.data.root).resolve().name}"
    wheel = write_package(out, cfg, checkpoints, hook, data_root)

    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"packaged folds {', '.join(str(f) for f, _ in checkpoints)} of {cfg.name} into {out} "
          f"({size / 1e6:.1f} MB): {wheel.name}, config.yaml, predict.py"
          + (f", {hook[1]}" if hook else ""))
    print("upload the folder as a Kaggle dataset; in a notebook with it and the competition as inputs, run:")
    print(f"  !python /kaggle/input/<dataset>/predict.py   (reads {data_root}, writes /kaggle/working/submission.csv)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
