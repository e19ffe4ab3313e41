"""Folders the kit may not write: a read-only data folder (a Kaggle notebook's /kaggle/input) trains,
its folds.csv kept under output_dir; a read-only output_dir, submission_dir or an --output that is a
folder is one line, and nothing is half-written.

The tests run as root, which ignores permission bits: a folder is made read-only by a read-only bind
mount of it onto itself, which refuses root too."""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import image_config, make_image_competition, make_table_competition, refused, table_config, write_yaml

from competition import blend, board, folds, predict, train
from competition.config import config_from_dict
from competition.core.errors import CompetitionError
from competition.io.files import write_text
from competition.io.runs import folds_digest
from competition.tasks import open_competition

pytestmark = pytest.mark.slow  # a shared module fixture trains two runs; bind mounts in a namespace


def _umount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture(scope="module")
def make_read_only() -> Iterator[Callable[[Path], Path]]:
    """make_read_only(folder) → folder, bind-mounted read-only onto itself; unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    mounts: list[Path] = []

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode != 0:
            pytest.skip("bind mounts are not permitted on this machine")
        mounts.append(folder)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        with pytest.raises(OSError):  # really read-only, for root too
            (folder / "probe").write_text("")
        return folder

    yield make
    for where in reversed(mounts):
        _umount(where)


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and mtime: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _trained_and_predicted(cfg: Path, name: str, *extra: str) -> None:
    args = ["--config", str(cfg), "--set", f"name={name}", "--set", f"model.name={name}"]
    assert train.main([*args, "--fold", "all"]) == 0
    assert predict.main([*args, *extra]) == 0


@pytest.fixture(scope="module")
def runs_on_read_only_data(tmp_path_factory, make_read_only) -> tuple[Path, Path, Path]:
    """(folder, config, data root): runs `mlp` and `logreg` trained and predicted on a read-only
    table competition (logreg refits from train.csv and folds.csv at predict, --no-cv too)."""
    tmp = tmp_path_factory.mktemp("data-locked")
    root = make_table_competition(tmp / "data" / "table")
    cfg = write_yaml(tmp / "table.yaml", table_config(tmp, root))
    make_read_only(root)
    _trained_and_predicted(cfg, "mlp")
    _trained_and_predicted(cfg, "logreg", "--no-cv")
    return tmp, cfg, root


def test_runs_on_a_read_only_data_folder_share_one_split_kept_under_output_dir(runs_on_read_only_data, capsys):
    tmp, cfg, root = runs_on_read_only_data
    assert not (root / "folds.csv").exists()
    kept = tmp / "outputs" / "folds" / "table" / "folds.csv"
    split = folds_digest(pd.read_csv(kept), "key")
    assert [json.loads((tmp / "outputs" / n / "run.json").read_text())["folds_hash"] for n in ("mlp", "logreg")] == [split] * 2

    capsys.readouterr()
    assert board.main(["--config", str(cfg)]) == 0  # each run's split against the competition's, as blend checks it
    shown = capsys.readouterr().out
    assert "mlp" in shown and "logreg" in shown and "other folds" not in shown  # no run marked
    assert folds.main(["--config", str(cfg)]) == 0
    assert str(kept) in capsys.readouterr().out


def test_a_folds_csv_in_a_read_only_data_folder_is_used(table_comp, tmp_path, make_read_only, capsys):
    cfg, root = table_comp
    assert folds.main(["--config", str(cfg)]) == 0
    make_read_only(root)
    assert train.main(["--config", str(cfg), "--fold", "0"]) == 0
    record = json.loads((tmp_path / "outputs" / "table" / "run.json").read_text())
    assert record["folds_hash"] == folds_digest(pd.read_csv(root / "folds.csv"), "key")
    assert not (tmp_path / "outputs" / "folds").exists()
    capsys.readouterr()
    refused(capsys, folds.main(["--config", str(cfg), "--force"]), str(root / "folds.csv"), "read-only file system")


def test_the_decode_cache_of_a_read_only_image_folder_goes_under_output_dir(tmp_path, make_read_only):
    root = make_image_competition(tmp_path / "data" / "shapes", n_train=12, n_test=3)
    cfg = config_from_dict(image_config(tmp_path, root, train={"cache": "auto"}))
    before = _files(root)
    make_read_only(root)
    task, comp = open_competition(cfg)
    task.prepare(cfg, comp)  # what train does before the first fold: decode every image into the cache
    assert len(list((tmp_path / "outputs" / "cache").glob("images-*.u8"))) == 2  # train and test images
    assert _files(root) == before


def test_a_read_only_output_dir_is_one_line_before_anything_is_written(table_comp, tmp_path, make_read_only, capsys):
    cfg, root = table_comp
    outputs = make_read_only(tmp_path / "outputs")
    refused(capsys, train.main(["--config", str(cfg), "--fold", "0"]), "output_dir", str(outputs), "read-only file system")
    assert not (root / "folds.csv").exists() and list(outputs.iterdir()) == []


def test_a_submission_that_cannot_be_written_leaves_the_run_as_it_was(runs_on_read_only_data, tmp_path, make_read_only,
                                                                       capsys):
    tmp, cfg, _ = runs_on_read_only_data
    locked = make_read_only(tmp_path / "locked")
    a_folder = tmp_path / "a-folder"
    a_folder.mkdir()
    outputs, submissions = _files(tmp / "outputs"), _files(tmp / "submissions")
    base = ["--config", str(cfg), "--set", "name=mlp", "--set", "model.name=mlp"]
    capsys.readouterr()
    refused(capsys, predict.main([*base, "--set", f"submission_dir={locked}"]), "submission_dir", str(locked), "read-only file system")
    refused(capsys, predict.main([*base, "--output", str(a_folder)]), str(a_folder), "is a folder")
    refused(capsys, predict.main([*base, "--output", str(locked / "sub.csv")]), str(locked), "read-only file system")
    refused(capsys, blend.main(["--config", str(cfg), "mlp", "logreg", "--set", f"submission_dir={locked}"]),
            "submission_dir", "read-only file system")
    refused(capsys, blend.main(["--config", str(cfg), "mlp", "logreg", "--output", str(a_folder)]), "is a folder")
    # cv.json, oof.csv and test_probs.csv untouched: they still name and match the last submission written
    assert _files(tmp / "outputs") == outputs and _files(tmp / "submissions") == submissions
    assert list(a_folder.iterdir()) == []


def test_a_run_folder_that_is_read_only_is_refused_before_the_submission_is_written(runs_on_read_only_data, tmp_path,
                                                                                    make_read_only, capsys):
    tmp, cfg, _ = runs_on_read_only_data
    run = make_read_only(tmp / "outputs" / "logreg")
    capsys.readouterr()
    refused(capsys, predict.main(["--config", str(cfg), "--set", "name=logreg", "--set", "model.name=logreg", "--set",
                                  f"submission_dir={tmp_path / 'subs'}"]), "run folder", str(run), "read-only file system")
    assert not (tmp_path / "subs").exists()


def test_the_kits_writes_into_a_read_only_folder_or_onto_a_folder_are_one_line(tmp_path, make_read_only):
    locked = make_read_only(tmp_path / "locked")
    with pytest.raises(CompetitionError, match="cannot write .*locked/new/x.txt \\(read-only file system\\)"):
        write_text(locked / "new" / "x.txt", "x")
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(CompetitionError, match="a-folder: it is a folder"):
        write_text(tmp_path / "a-folder", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "locked"]
    assert list((tmp_path / "a-folder").iterdir()) == []
