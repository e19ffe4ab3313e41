"""Device-side augmentation of cached uint8 batches: same normalisation as the albumentations
path, seeded per sample, flips that flip, and a training run that uses it end to end."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import image_config, write_yaml

from competition import predict, train
from competition.data.batch_augment import BatchAugment
from competition.data.datasets import ImageDataset
from competition.data.transforms import build_eval_transform
from competition.io.checkpoints import load_checkpoint

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _batch(n=4, size=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def test_eval_path_normalises_with_the_models_mean_and_std():
    images = _batch()
    ours = BatchAugment(16, MEAN, STD)(images)
    # what timm's and albumentations' Normalize compute: (pixel / 255 - mean) / std, channels first
    theirs = (images.numpy() / 255.0 - np.array(MEAN)) / np.array(STD)
    assert ours.shape == (4, 3, 16, 16) and ours.dtype == torch.float32 and ours.is_contiguous()
    np.testing.assert_allclose(ours.numpy(), theirs.transpose(0, 3, 1, 2), atol=1e-5)


def test_albumentations_path_hands_over_uint8_rows_of_the_batch_layout(image_comp):
    _, root = image_comp
    train = pd.read_csv(root / "train.csv")
    ds = ImageDataset(train, root, build_eval_transform(16))
    x = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (16, 16, 3)  # what CachedRows hands over too
    batch = torch.stack([ds[i] for i in range(4)])
    assert BatchAugment(16, MEAN, STD)(batch).shape == (4, 3, 16, 16)


def test_training_augmentation_is_seeded_per_sample():
    images = _batch()
    aug = BatchAugment(16, MEAN, STD, ["random_resized_crop", "hflip", "affine"], train=True)
    a, b = aug(images, [1, 2, 3, 4]), aug(images, [1, 2, 3, 4])
    assert torch.equal(a, b)
    c = aug(images, [1, 2, 3, 5])
    assert torch.equal(a[:3], c[:3]) and not torch.equal(a[3], c[3])


def test_hflip_alone_mirrors_or_keeps_each_image():
    images = _batch(n=16)
    plain = BatchAugment(16, MEAN, STD)(images)
    flipped = BatchAugment(16, MEAN, STD, ["hflip"], train=True)(images, list(range(16)))
    mirrored = [torch.allclose(f, p.flip(-1), atol=1e-4) for f, p in zip(flipped, plain, strict=True)]
    kept = [torch.allclose(f, p, atol=1e-4) for f, p in zip(flipped, plain, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 0 < sum(mirrored) < 16


@pytest.mark.slow
def test_training_and_prediction_through_the_device_path(image_comp, tmp_path):
    cfg_path, root = image_comp
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"].update({"cache": "auto", "device_augment": "on"})
    cfg["image"]["augment"] = ["random_resized_crop", "hflip"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert train.main(["--config", str(cfg_path), "--fold", "all"]) == 0
    state = load_checkpoint(tmp_path / "outputs" / "shapes" / "fold0" / "best.pt")
    assert state.config["train"]["device_augment"] == "on"
    # Each image decoded once: one cache of the train images (every fold), one of the test images.
    caches = {p: p.stat().st_mtime_ns for p in (tmp_path / "outputs" / "cache").glob("images-*.u8")}
    assert len(caches) == 2
    out = tmp_path / "sub.csv"
    assert predict.main(["--config", str(cfg_path), "--output", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "outputs" / "cache").glob("images-*.u8")} == caches
    sub = pd.read_csv(out)
    assert list(sub["id"]) == list(pd.read_csv(root / "sample_submission.csv")["id"])


def _blob_positions(images: np.ndarray) -> np.ndarray:
    """Where the bright blob landed in each [n, h, w] image (its centre of brightness), NaN when gone."""
    weights = images.astype(np.float64)
    total = weights.sum((1, 2))
    ys, xs = np.mgrid[: images.shape[1], : images.shape[2]]
    pos = np.stack([(weights * ys).sum((1, 2)), (weights * xs).sum((1, 2))], 1) / np.maximum(total, 1e-9)[:, None]
    pos[total < 0.3 * np.median(total)] = np.nan
    return pos


@pytest.mark.parametrize("size", [64, [48, 64]])
@pytest.mark.parametrize("augment", [["affine"], ["random_resized_crop", "hflip", "vflip", "affine"]])
def test_the_device_path_and_albumentations_move_pixels_alike(size, augment):
    # One spec, two backends: 3,000 draws each of an image with one bright blob off centre; the
    # blob must land in the same places, in the same proportions, whichever path moved it.
    from competition.data.images import hw
    from competition.data.transforms import build_train_transform, seed_pipeline

    h, w = hw(size)
    image = np.zeros((h, w, 3), np.uint8)
    image[h // 4 - 1: h // 4 + 2, w // 3 - 1: w // 3 + 2] = 255
    n = 3000
    pipeline = build_train_transform(size, augment, "bilinear")
    cpu = []
    for seed in range(n):
        seed_pipeline(pipeline, seed)
        cpu.append(pipeline(image=image)["image"][..., 0])
    device = BatchAugment(size, (0.0,) * 3, (1 / 255,) * 3, augment, train=True)(
        torch.from_numpy(np.repeat(image[None], n, 0)), torch.arange(n) * 7919 + 13)[:, 0].numpy()
    # to 0.01 px: the blob the affine left alone (1 in 5) sits at one place on both paths
    a, b = _blob_positions(np.stack(cpu)).round(2), _blob_positions(device).round(2)
    assert abs(np.isnan(a[:, 0]).mean() - np.isnan(b[:, 0]).mean()) < 0.03  # as often pushed out of view
    for axis in (0, 1):  # the two-sample Kolmogorov-Smirnov distance of the blob's row, then column
        xa, xb = np.sort(a[~np.isnan(a[:, axis]), axis]), np.sort(b[~np.isnan(b[:, axis]), axis])
        grid = np.concatenate([xa, xb])
        gap = np.abs(np.searchsorted(xa, grid, "right") / len(xa) - np.searchsorted(xb, grid, "right") / len(xb))
        assert gap.max() < 0.06, (axis, gap.max(), np.quantile(xa, [0.1, 0.5, 0.9]), np.quantile(xb, [0.1, 0.5, 0.9]))


@pytest.mark.slow
def test_rows_held_on_the_device_or_streamed_train_exactly_as_the_dataloader_path(image_comp, tmp_path, caplog):
    # On a GPU the fold's uint8 rows live there (or stream from the cache through pinned memory);
    # on the CPU the same code runs with CPU tensors: every path must give the very same weights,
    # over an epoch of each stage.
    _, root = image_comp
    weights = {}
    for mode in ("off", "on", "stream"):
        cfg = image_config(tmp_path, root, name=f"rows_{mode}", image={"size": 24, "augment": ["random_resized_crop", "hflip"]},
                           train={"cache": "auto", "device_augment": "on", "cache_on_device": mode, "epochs": 1,
                                  "num_workers": 2})
        with caplog.at_level("INFO"):
            assert train.main(["--config", str(write_yaml(tmp_path / f"{mode}.yaml", cfg)), "--fold", "0"]) == 0
        weights[mode] = load_checkpoint(tmp_path / "outputs" / f"rows_{mode}" / "fold0" / "last.pt").model_state_dict
    assert "rows held on the device" in caplog.text and "rows streamed to the device" in caplog.text
    for mode in ("on", "stream"):
        for key, tensor in weights["off"].items():
            assert torch.equal(tensor, weights[mode][key]), (mode, key)
    out = tmp_path / "sub.csv"
    assert predict.main(["--config", str(tmp_path / "on.yaml"), "--folds", "0", "--output", str(out)]) == 0
