"""What of each photo the model sees (image.crop_mode, image.crop_pct): timm's eval centre crop
cut from the photo before the resize, recorded in the checkpoint, the same in training, the decode
cache and predict; nonsense refused in one line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm.data
from conftest import image_config, refused, write_yaml
from PIL import Image

from competition import predict, train
from competition.config import config_from_dict
from competition.data.cache import resize
from competition.data.images import Crop
from competition.io.checkpoints import load_checkpoint
from competition.tasks.image import crop_of


def _photo(height: int, width: int) -> np.ndarray:
    """A smooth picture whose every pixel says where it is: a crop in the wrong place shows."""
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    rgb = np.stack([255 * xx / width, 255 * yy / height, 127.5 + 127.5 * np.sin(xx / 40.0) * np.cos(yy / 55.0)], -1)
    return rgb.round().astype(np.uint8)


@pytest.mark.parametrize("height, width", [(375, 500), (500, 375)])
def test_the_centre_crop_shows_what_timms_eval_transform_shows(height, width):
    """A landscape and a portrait photo at 224 px with crop_pct 0.875: timm resizes the shorter side to
    256 and crops the central 224; the kit cuts that box first and resizes once. Both see the same picture."""
    photo = _photo(height, width)
    timm_eval = timm.data.create_transform(input_size=(3, 224, 224), crop_pct=0.875, crop_mode="center",
                                           interpolation="bilinear", mean=(0, 0, 0), std=(1, 1, 1))
    expected = timm_eval(Image.fromarray(photo)).permute(1, 2, 0).numpy() * 255
    kit = resize(Crop("center", 0.875)(photo, 224), 224).astype(np.float64)
    assert np.abs(kit - expected).mean() < 1.5  # interpolation differs a little; a misplaced box by tens
    whole = resize(photo, 224).astype(np.float64)  # the kit's default squashes the whole photo: not timm's view
    assert np.abs(whole - expected).mean() > 10


def test_a_box_keeps_the_targets_aspect_and_the_share_asked_for():
    assert Crop("center", 0.5).box(100, 300, [50, 100]) == (25, 100, 50, 100)  # the widest 1:2 box, 100 × 200, halved
    assert Crop("squash", 0.5).box(100, 300, 64) == (25, 75, 50, 150)
    photo = _photo(30, 40)
    assert Crop()(photo, 16) is photo  # the default: the whole photo, no copy


def test_a_cropped_run_records_its_crop_and_predict_sees_what_training_saw(image_comp, tmp_path):
    """Trained through the decode cache with a centre crop at half the side; the checkpoint names the
    crop, and predict (cache off: every photo read from its file and cut there) gives the fold's own
    validation probabilities."""
    _, root = image_comp
    for p in (root / "images").iterdir():  # photos larger than image.size, so no resize enlarges them
        big = Image.open(p).resize((48, 64), Image.NEAREST)
        big.save(p)
    cfg = image_config(tmp_path, root, image={"size": 16, "augment": ["hflip"], "crop_mode": "center", "crop_pct": 0.5},
                       train={"cache": "auto"}, predict={"tta": [], "batch_size": 16})
    path = write_yaml(tmp_path / "run.yaml", cfg)
    assert train.main(["--config", str(path), "--fold", "0"]) == 0
    fold_dir = tmp_path / "outputs" / "shapes" / "fold0"
    best = load_checkpoint(fold_dir / "best.pt")  # torch.load(weights_only=True)
    assert (best.preprocessing["crop_mode"], best.preprocessing["crop_pct"]) == ("center", 0.5)
    assert list((tmp_path / "outputs").rglob("images-16px-center0.5-*.u8"))
    assert predict.main(["--config", str(path), "--fold", "0", "--set", "train.cache=off",
                         "--output", str(tmp_path / "sub.csv")]) == 0
    trained = pd.read_csv(fold_dir / "oof.csv").set_index("id")
    predicted = pd.read_csv(tmp_path / "outputs" / "shapes" / "oof.csv").set_index("id").loc[trained.index]
    cols = [c for c in trained if c.startswith("prob_")]
    np.testing.assert_allclose(predicted[cols].to_numpy(), trained[cols].to_numpy(), atol=1e-5)


def test_pretrained_reads_the_crop_timm_gives_the_backbone(tmp_path):
    for name in ("tf_efficientnet_lite0", "tf_efficientnet_lite2"):
        cfg = config_from_dict(image_config(tmp_path, tmp_path, model={"name": name},
                                            image={"crop_mode": "center", "crop_pct": "pretrained"}))
        assert crop_of(cfg) == Crop("center", timm.models.get_pretrained_cfg(name).crop_pct)
    assert crop_of(config_from_dict(image_config(tmp_path, tmp_path))) == Crop()  # the default: the whole photo
    assert (Crop("center", 0.875).decode_side(224), Crop().decode_side(224)) == (256, 224)  # the box keeps full detail


@pytest.mark.parametrize("sets, culprit", [
    (["image.crop_mode=border"], "image.crop_mode"),
    (["image.crop_pct=1.5"], "image.crop_pct"),
    (["image.crop_pct=0"], "image.crop_pct"),
    (["image.crop_pct=auto"], "image.crop_pct"),
])
def test_nonsense_crops_are_refused_in_one_line(image_comp, capsys, sets, culprit):
    cfg_path, _ = image_comp
    refused(capsys, train.main(["--config", str(cfg_path), *[a for s in sets for a in ("--set", s)]]), culprit)
