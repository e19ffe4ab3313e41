"""data.image_pattern: Kaggle layouts with an id column and no path column (Plant Pathology's
image_id, SIIM's image_name), the path built from the row and checked as a path column is."""
from __future__ import annotations

import pandas as pd
import pytest
from conftest import refused

from competition import train
from competition.config import load_config
from competition.tasks import open_competition


@pytest.fixture
def no_path_column(image_comp):
    """The shapes competition as SIIM lays it out: ids only, train and test images in their own folders."""
    cfg, root = image_comp
    for name, folder in (("train.csv", "train"), ("test.csv", "test")):
        frame = pd.read_csv(root / name)
        names = frame.pop("image").str.removeprefix("images/").str.removesuffix(".png")
        (root / "jpeg" / folder).mkdir(parents=True)
        for n in names:
            (root / "images" / f"{n}.png").rename(root / "jpeg" / folder / f"{n}.png")
        frame.insert(1, "image_name", names)
        frame.to_csv(root / name, index=False)
    return cfg, root


def test_paths_are_built_from_the_row_for_train_and_test(no_path_column):
    cfg, root = no_path_column
    config = load_config(str(cfg), ["data.image_pattern=jpeg/train/{image_name}.png",
                                    "data.test_image_pattern=jpeg/test/{image_name}.png"])
    task, comp = open_competition(config)
    assert comp.train["image"].iloc[0] == "jpeg/train/img_000.png" and comp.test["image"].iloc[0] == "jpeg/test/img_036.png"
    task.prepare(config, comp)  # every built path decodes


@pytest.mark.parametrize(("sets", "culprits"), [
    (["data.image_pattern=jpeg/train/{image_id}.png"],
     ["data.image_pattern", "names column 'image_id'", "train.csv does not have", "image_name"]),
    (["data.image_pattern=jpeg/train/{image_name}.png"],  # test.csv's images are not under jpeg/train
     ["test.csv line 2: image", "jpeg/train/img_036.png not found (and 8 more)"]),
    (["data.image_pattern=jpeg/train/{image_name:>5}.png"], ["data.image_pattern", "a column name and nothing else"]),
    (["data.image_pattern=jpeg/train/img.png"], ["data.image_pattern", "names no column"]),
    (["data.image_pattern=jpeg/{image_name}.png", "data.image_column=image_name"],
     ["data.image_pattern", "already has a column 'image_name'", "data.image_column"]),
])
def test_a_pattern_that_does_not_fit_the_files_is_refused_in_one_line(no_path_column, tmp_path, capsys, sets, culprits):
    cfg, _ = no_path_column
    code = train.main(["--config", str(cfg), *[a for s in sets for a in ("--set", s)]])
    refused(capsys, code, *culprits)
    assert not (tmp_path / "outputs" / "shapes").exists()
