"""Names and paths a user gives: a run's name stays one folder under output_dir, clear of the kit's own
folders; a shipped config's name is not shadowed by a folder; a folder given for a file (or a file for
a folder) is named for what it is, not as 'not found'."""
from __future__ import annotations

import pytest
from conftest import refused

from competition import blend, train
from competition.config import check_run_name, load_config
from competition.core.errors import CompetitionError

BAD_NAMES = {
    "..": "is not one folder name",  # trained into the working folder, over the user's config.yaml
    ".": "is not one folder name",
    "../beside": "is not one folder name",  # beside outputs/
    "a/b": "is not one folder name",  # nested: missing from the board, renamed `b` by blend
    "/elsewhere": "is not one folder name",  # an absolute path (under the test's folder)
    ".hidden": "is not one folder name",
    "cache": "the kit's own folder",  # the decode cache, safe to delete
    "Blends": "the kit's own folder",  # blend records (case-insensitive filesystems)
    "folds": "the kit's own folder",  # the folds.csv of read-only data folders
}


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_run_name_that_is_not_one_plain_folder_is_refused_before_anything_is_written(image_comp, tmp_path, capsys,
                                                                                        name):
    cfg, root = image_comp
    mine = {"config.yaml": "my own config\n", "oof.csv": "id,prob\n"}  # the user's files in the working folder
    for file, text in mine.items():
        (tmp_path / file).write_text(text)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    given = f"{tmp_path}{name}" if name.startswith("/") else name
    code = train.main(["--config", str(cfg), "--set", f"name={given}", "--fold", "0", "--overwrite"])
    refused(capsys, code, "config key name", repr(given), BAD_NAMES[name])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert {f: (tmp_path / f).read_text() for f in mine} == mine


def test_plain_run_names_are_accepted_and_names_a_yaml_file_can_hold_are_checked_too():
    for name in ("exp-1", "resnet18_384px", "v2.1", "a+b", "étude"):
        assert load_config("digits", [f"name={name}"]).name == name
    for name in (" padded", "line\nbreak", "back\\slash", "x" * 201, ""):
        with pytest.raises(CompetitionError, match="config key name: .* is not one folder name under output_dir"):
            check_run_name(name, "config key name")


def test_a_warm_start_names_a_run_too(image_comp, capsys):
    cfg, _ = image_comp
    refused(capsys, train.main(["--config", str(cfg), "--set", "model.init_from=../other", "--fold", "0"]),
            "config key model.init_from", "'../other' is not one folder name")


@pytest.mark.parametrize("name", ["a/b", "..", ".x"], ids=repr)
def test_a_blend_name_is_one_plain_folder(image_comp, tmp_path, capsys, name):
    cfg, _ = image_comp
    refused(capsys, blend.main(["--config", str(cfg), "r1", "r2", "--name", name]), "--name", repr(name))
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "submissions").exists()


def test_a_folder_named_like_a_shipped_config_does_not_hide_it(tmp_path, capsys):
    (tmp_path / "titanic").mkdir()  # the competition's data folder, say
    assert load_config("titanic").name == "titanic"
    (tmp_path / "mine").mkdir()
    refused(capsys, train.main(["--config", "mine"]), "config mine is a folder, not a YAML file")


def test_a_folder_given_as_an_image_is_named_as_one(image_comp, capsys):
    cfg, root = image_comp
    (root / "images" / "img_005.png").unlink()
    (root / "images" / "img_005.png").mkdir()
    refused(capsys, train.main(["--config", str(cfg), "--fold", "0"]), "train.csv line 7", "img_005.png",
            "is a folder, not an image file")


def test_a_file_given_as_the_data_root_is_named_as_one(image_comp, tmp_path, capsys):
    cfg, root = image_comp
    refused(capsys, train.main(["--config", str(cfg), "--set", f"data.root={root / 'train.csv'}", "--fold", "0"]),
            "data root", "train.csv is a file, not a folder", "data.root")
    refused(capsys, train.main(["--config", str(cfg), "--set", "data.test_csv=images", "--fold", "0"]),
            "test CSV", "images is a folder, not a CSV file")
    assert not (tmp_path / "outputs").exists()
