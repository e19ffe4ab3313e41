"""Checkpoints never run code, broken ones are refused in one line, and a fold trains once at a time."""
from __future__ import annotations

import contextlib
import pathlib
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import fold_state, refused

from competition import predict, train
from competition.config import load_config
from competition.core.errors import CompetitionError
from competition.core.schema import config_to_dict
from competition.io.checkpoints import BEST, FORMAT, LAST, FoldLock, load_checkpoint, save_checkpoint
from competition.io.files import torch_save
from competition.io.runs import check_trained_with

CLASSES = ["circle", "cross", "square"]


class TouchOnLoad:
    """Unpickling this creates `path`: the way a hostile checkpoint runs code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def kit_state(cfg_path: Path, classes: list | None = None, model: str | None = None) -> dict:
    """A loadable checkpoint as training writes it, as the mapping torch.save gets."""
    cfg = config_to_dict(load_config(str(cfg_path)))
    if model:
        cfg["model"]["name"] = model
    return fold_state(cfg, classes or CLASSES).to_dict()




def no_submission(tmp_path: Path) -> None:
    assert not (tmp_path / "submissions").exists()
    assert not (tmp_path / "outputs" / "shapes" / "cv.json").exists()


def fold_dir(tmp_path: Path, fold: int = 0) -> Path:
    return tmp_path / "outputs" / "shapes" / f"fold{fold}"


# --- hostile, truncated and foreign files ---------------------------------------------------


def _torch_save(path: Path, obj) -> None:
    torch.save(obj, path)


def _torch_save_legacy(path: Path, obj) -> None:
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def _plain_pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj))


WRITERS = {"torch.save": _torch_save, "torch.save legacy": _torch_save_legacy, "pickle.dumps": _plain_pickle}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_checkpoint_that_runs_code_is_refused_and_nothing_runs(image_comp, tmp_path, capsys, writer):
    cfg, _ = image_comp
    # The payload is real: the unsafe load that the kit never does creates the file.
    proof = tmp_path / "proof"
    WRITERS[writer](tmp_path / "proof.pt", {**kit_state(cfg), "extra": TouchOnLoad(proof)})
    with contextlib.suppress(Exception):  # a plain pickle runs, then fails torch's format check
        torch.load(tmp_path / "proof.pt", weights_only=False)
    assert proof.exists()

    created = tmp_path / "created-by-the-checkpoint"
    best = fold_dir(tmp_path) / BEST
    best.parent.mkdir(parents=True)
    WRITERS[writer](best, {**kit_state(cfg), "extra": TouchOnLoad(created)})

    refused(capsys, predict.main(["--config", str(cfg)]), str(best), "refused", "could run code")
    assert not created.exists()
    no_submission(tmp_path)
    with pytest.raises(CompetitionError, match="could run code"):
        load_checkpoint(best)
    assert not created.exists()


def test_a_truncated_checkpoint_is_refused(image_comp, tmp_path, capsys):
    cfg, _ = image_comp
    best = fold_dir(tmp_path) / BEST
    torch_save(best, kit_state(cfg))
    assert load_checkpoint(best).classes == CLASSES  # whole, it loads
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    refused(capsys, predict.main(["--config", str(cfg)]), str(best), "truncated or not a checkpoint")
    no_submission(tmp_path)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "empty"),
        (b"hello, not a checkpoint\n", "not a checkpoint"),
        (b"PK\x03\x04" + bytes(64), "not a checkpoint"),
    ],
)
def test_a_foreign_file_is_refused(image_comp, tmp_path, capsys, content, said):
    cfg, _ = image_comp
    best = fold_dir(tmp_path) / BEST
    best.parent.mkdir(parents=True)
    best.write_bytes(content)
    refused(capsys, predict.main(["--config", str(cfg)]), str(best), said)
    no_submission(tmp_path)


def test_a_safetensors_file_is_foreign_not_hostile(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.pt"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(CompetitionError, match=r"weights\.pt is truncated or not a checkpoint") as info:
        load_checkpoint(path)
    assert "could run code" not in str(info.value)


@pytest.mark.parametrize(
    ("state", "said"),
    [
        ([1, 2, 3], "holds a list"),
        ({"epoch": 1, "weights": torch.zeros(2)}, "no format"),
        ({"format": FORMAT, "epoch": 1, "weights": torch.zeros(2)}, "no fold, config"),
        ({"format": 1, "epoch": 1, "model_state_dict": {}}, "has format 1; this kit reads format 2"),
    ],
)
def test_plain_data_that_is_not_a_kit_checkpoint(tmp_path, state, said):
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(CompetitionError, match=said):
        load_checkpoint(path)


# --- checkpoints that do not fit the config or the data --------------------------------------


@pytest.mark.parametrize(
    ("changes", "culprits"),
    [
        ({"classes": ["circle", "cross", "hexagon"]}, ["['hexagon'] unknown to the data", "['square'] missing"]),
        ({"classes": ["circle", "cross", "square", "star"]}, ["['star'] unknown to the data"]),
        ({"model": "resnet18"}, ["was trained with model.name 'resnet18' and the config says 'test_resnet'", "--run"]),
    ],
)
def test_predict_refuses_a_checkpoint_that_does_not_match(image_comp, tmp_path, capsys, changes, culprits):
    cfg, _ = image_comp
    best = fold_dir(tmp_path) / BEST
    torch_save(best, kit_state(cfg, **changes))
    refused(capsys, predict.main(["--config", str(cfg)]), str(best), *culprits)
    no_submission(tmp_path)


def test_resume_refuses_a_last_checkpoint_with_classes_unknown_to_the_data(image_comp, tmp_path, capsys):
    cfg, _ = image_comp
    last = fold_dir(tmp_path) / LAST
    torch_save(last, kit_state(cfg, classes=["circle", "cross", "hexagon"]))
    before = last.read_bytes()
    refused(capsys, train.main(["--config", str(cfg), "--fold", "0", "--resume"]), str(last), "['hexagon'] unknown to the data")
    assert last.read_bytes() == before
    assert not (fold_dir(tmp_path) / BEST).exists()
    assert not (tmp_path / "outputs" / "shapes" / "config.yaml").exists()


def test_class_order_difference_is_named(image_comp, tmp_path):
    cfg = load_config(str(image_comp[0]))
    state = fold_state(config_to_dict(cfg), ["b", "a"])
    with pytest.raises(CompetitionError, match=r"classes \['b', 'a'\] and train.csv says \['a', 'b'\] \(in another order\)"):
        check_trained_with(cfg, state, tmp_path / "best.pt", ["a", "b"])
    state.config["task"] = "tabular"
    with pytest.raises(CompetitionError, match="best.pt was trained with task 'tabular' and the config says 'image'; "):
        check_trained_with(cfg, state, tmp_path / "best.pt", ["b", "a"])
    state.config["task"] = "image"
    check_trained_with(cfg, state, tmp_path / "best.pt", ["b", "a"])  # a match passes


def test_save_and_load_round_trip_plain_data_and_tensors(tmp_path):
    state = fold_state({"model": {"name": "m"}}, ["0", "1"], w=torch.arange(4.0))  # classes are text
    path = tmp_path / "fold0" / "best.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.model_state_dict["w"], torch.arange(4.0))
    assert loaded.history == [{"epoch": 1}] and loaded.classes == ["0", "1"]
    plain = {k: v for k, v in vars(state).items() if k != "model_state_dict"}
    assert {k: v for k, v in vars(loaded).items() if k != "model_state_dict"} == plain  # every field comes back
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temporary file left beside it


# --- one training per fold at a time --------------------------------------------------------


def test_training_a_locked_fold_refuses_and_writes_nothing(image_comp, tmp_path, capsys):
    cfg, root = image_comp
    with FoldLock(fold_dir(tmp_path)):
        refused(capsys, train.main(["--config", str(cfg), "--fold", "0"]), str(fold_dir(tmp_path)), "another process")
    assert sorted(p.name for p in fold_dir(tmp_path).iterdir()) == [".lock"]
    assert not (tmp_path / "outputs" / "shapes" / "config.yaml").exists()
    # --fold all refuses too, before training the free fold 1.
    with FoldLock(fold_dir(tmp_path)):
        refused(capsys, train.main(["--config", str(cfg), "--fold", "all"]), "fold0", "another process")
    assert not (fold_dir(tmp_path, 1) / BEST).exists()


@pytest.mark.slow
def test_a_second_process_holding_the_lock_blocks_training_until_it_dies(image_comp, tmp_path, capsys, zygote):
    cfg, _ = image_comp
    holder = zygote.spawn(
        ["-c", "import sys, time; from pathlib import Path; from competition.io.checkpoints import FoldLock\n"
               "with FoldLock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)\n",
         str(fold_dir(tmp_path))], stderr=subprocess.DEVNULL,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused(capsys, train.main(["--config", str(cfg), "--fold", "0"]), str(fold_dir(tmp_path)), "another process")
        assert not (fold_dir(tmp_path) / LAST).exists()
        with pytest.raises(CompetitionError, match="another process"):
            FoldLock(fold_dir(tmp_path)).__enter__()
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.wait()
        holder.stdout.close()
    with FoldLock(fold_dir(tmp_path)):  # the kernel released the dead holder's lock: no stale lock
        pass
