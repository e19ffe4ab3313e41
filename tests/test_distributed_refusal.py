"""Bad input under torchrun: every process stops (none waits forever for the first one),
one error line, exit code 2 from the first process, nothing written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import image_config, make_image_competition, write_yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_refuses_bad_input_on_every_rank(tmp_path):
    root = make_image_competition(tmp_path / "data" / "shapes")
    (root / "images" / "img_003.png").unlink()  # listed in train.csv, gone from disk
    cfg = write_yaml(tmp_path / "cfg.yaml", image_config(tmp_path, root))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "competition.train", "--config", str(cfg), "--fold", "0"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "img_003.png" in errors[0]
    # No process dies on a broken connection to the other (a traceback through the kit);
    # torchrun's own launcher still reports the failed children in its summary.
    assert "/competition/" not in "".join(line for line in proc.stderr.splitlines() if line.strip().startswith("File "))
    assert not (tmp_path / "outputs").exists()
