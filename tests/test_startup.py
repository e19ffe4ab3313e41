"""Commands start at once: `--help` of every command, and the board, load none of the libraries
that only the work needs (torch, timm, albumentations, OpenCV, scikit-learn, matplotlib), and a
board with nothing to show loads no pandas either. What is imported is checked rather than how
long it takes, which depends on how busy the machine is; benchmarks/startup.py times them."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES, image_config, write_yaml

from competition.config import TASK_CHECKS
from competition.core.choices import AUGMENTATION_NAMES, TASK_KINDS, TTA_VIEW_NAMES
from competition.core.schema import build_config, config_to_dict
from competition.data.transforms import AUGMENTATIONS, TTA_VIEWS
from competition.io.prob_columns import oof_frame
from competition.io.runs import RunKey, RunRecord, config_digest, stamp
from competition.tasks import TASKS

COMMANDS = ("train", "predict", "explain", "board", "blend", "folds", "import_folders", "package", "auto")
HEAVY = ("torch", "timm", "albumentations", "cv2", "sklearn", "matplotlib", "tensorboard", "optuna")

# Runs each (label, command, argv) in one fresh interpreter, in order, and prints which of the
# watched modules each step loaded that were not loaded before it, with what the step printed.
PROBE = """
import contextlib, importlib, io, json, sys
watched, steps = json.loads(sys.argv[1])
report = {}
for label, command, argv in steps:
    before = {m for m in watched if m in sys.modules}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = importlib.import_module(f"competition.{command}").main(argv)
        except SystemExit as exc:  # --help
            code = exc.code
    report[label] = {"loaded": sorted({m for m in watched if m in sys.modules} - before), "code": code,
                     "out": out.getvalue()}
print(json.dumps(report))
"""


def probe(steps: list[tuple[str, str, list[str]]]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([[*HEAVY, "pandas"], steps])],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write_run(cfg: dict, run_dir: Path) -> float:
    """A trained run's files as train writes them (run.json, each fold's oof.csv and summary.csv);
    returns the accuracy of their pooled rows, the CV the board must show."""
    config = config_to_dict(build_config(cfg))
    key = RunKey(config_digest(config), "0123456789ab")
    RunRecord(cfg["name"], config, key.config, key.folds, CLASSES, "2026-01-01T00:00:00Z").write(run_dir)
    rng = np.random.default_rng(0)
    hits = 0
    for fold in (0, 1):
        labels = rng.choice(CLASSES, 12)
        probs = rng.dirichlet(np.ones(3), 12)
        hits += int((np.array(CLASSES)[probs.argmax(1)] == labels).sum())
        (run_dir / f"fold{fold}").mkdir(parents=True)
        frame = oof_frame([f"{fold}-{i}" for i in range(12)], "id", {"label": list(labels)}, CLASSES, probs)
        stamp(frame, key).to_csv(run_dir / f"fold{fold}" / "oof.csv", index=False)
        pd.DataFrame({"epoch": [1, 2], "seconds": [3.0, 4.0]}).to_csv(run_dir / f"fold{fold}" / "summary.csv", index=False)
    return hits / 24


@pytest.mark.slow
def test_help_of_every_command_and_the_board_load_none_of_the_heavy_libraries(tmp_path):
    root = tmp_path / "data" / "shapes"  # never read: no folds.csv there, nothing to compare with
    empty = write_yaml(tmp_path / "empty.yaml", image_config(tmp_path, root, output_dir=str(tmp_path / "none")))
    cfg = image_config(tmp_path, root)
    cv = _write_run(cfg, Path(cfg["output_dir"]) / cfg["name"])
    with_run = write_yaml(tmp_path / "run.yaml", cfg)

    report = probe([(f"{c} --help", c, ["--help"]) for c in COMMANDS]
                   + [("empty board", "board", ["--config", str(empty)]),
                      ("board", "board", ["--config", str(with_run), "--format", "csv"]),
                      ("competition --help", "__main__", ["--help"]),
                      ("competition board", "__main__", ["board", "--config", str(empty)])])

    for c in COMMANDS:
        step = report[f"{c} --help"]
        assert step["code"] == 0 and f"python -m competition.{c}" in step["out"], step
        assert step["loaded"] == [], f"{c} --help loads {step['loaded']}"
    assert report["empty board"]["code"] == 0 and "no runs under" in report["empty board"]["out"]
    assert report["empty board"]["loaded"] == [], report["empty board"]["loaded"]  # not even pandas
    # `competition COMMAND` is the command itself, and its own help lists every command
    assert report["competition --help"]["code"] == 0 and report["competition --help"]["loaded"] == []
    assert all(f"  {c} " in report["competition --help"]["out"] for c in COMMANDS), report["competition --help"]
    assert report["competition board"] == report["empty board"]
    board = report["board"]
    assert board["code"] == 0 and board["loaded"] == ["pandas"], board  # the CSVs, and nothing heavier
    rows = pd.read_csv(io.StringIO(board["out"]))
    assert rows["name"].tolist() == ["shapes"] and rows["cv_from"].tolist() == ["best epochs"]
    assert rows["cv"].iloc[0] == pytest.approx(cv, abs=1e-9) and rows["seconds"].iloc[0] == 14.0


def test_the_console_script_runs_the_commands(tmp_path):
    """`make install` puts `competition` beside the interpreter: `competition folds` is `python -m competition.folds`."""
    script = Path(sys.executable).parent / "competition"
    assert script.is_file(), f"{script}: the console script is missing; run make install"
    proc = subprocess.run([str(script), "folds", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "python -m competition.folds" in proc.stdout, proc.stderr
    proc = subprocess.run([str(script), "fold"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown command 'fold'" in proc.stderr and "folds" in proc.stderr


def test_each_choice_table_is_keyed_by_the_names_the_config_accepts():
    """The config checks names without loading the tables (core.choices); the tables implement them."""
    assert list(AUGMENTATIONS) == list(AUGMENTATION_NAMES)
    assert list(TTA_VIEWS) == list(TTA_VIEW_NAMES)
    assert list(TASKS) == list(TASK_CHECKS) == list(TASK_KINDS)
    assert all(TASKS[k].two_stages == TASK_KINDS[k].staged for k in TASKS)
