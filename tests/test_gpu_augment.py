"""Device-side augmentation of cached uint8 batches: same normalisation as the albumentations
path, seeded per sample, flips that flip, and a training run that uses it end to end."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import yaml

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
