"""Datasets in train and test modes; images of any PIL mode become RGB; tables fit on train rows only."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from competition.core.distributed import SeededSampler
from competition.data.batch_augment import BatchAugment
from competition.data.datasets import ImageDataset, TabularDataset, ThreadedRows, build_loader
from competition.data.features import TabularPreprocessor
from competition.data.images import load_image
from competition.data.targets import Target
from competition.data.transforms import RRC_RATIO, RRC_SCALE, build_eval_transform, build_train_transform, decode_side

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CLASSES = ["circle", "cross", "square"]


def test_image_dataset_with_and_without_answers(image_comp):
    _, root = image_comp
    train = pd.read_csv(root / "train.csv")
    tf = build_eval_transform(32)
    target = Target("single", CLASSES, "label")
    ds = ImageDataset(train, root, tf, target.encode(train))
    x, y = ds[4]
    assert x.shape == (32, 32, 3) and x.dtype == torch.uint8  # normalised per batch, on the device
    assert CLASSES[y] == train["label"][4]
    test = pd.read_csv(root / "test.csv")
    item = ImageDataset(test, root, tf)[0]
    assert isinstance(item, torch.Tensor) and item.shape == (32, 32, 3)  # no answers: the image alone
    # Multi-label answers come as a float 0/1 vector per row.
    multi = Target("multi_label", CLASSES, "label")
    _, y = ImageDataset(train, root, tf, multi.encode(train))[4]
    assert y.dtype == torch.float32 and y.tolist() == [float(c == train["label"][4]) for c in CLASSES]


def test_normalisation_uses_the_given_mean_and_std(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(tmp_path / "white.png")
    df = pd.DataFrame({"image": ["white.png"], "label": [0]})
    x = ImageDataset(df, tmp_path, build_eval_transform(8))[0]
    x = BatchAugment(8, MEAN, STD)(x[None])
    assert x.shape == (1, 3, 8, 8) and torch.allclose(x, torch.full_like(x, (1.0 - 0.5) / 0.25))


def test_seeded_augmentation_repeats_per_row_and_seed(image_comp):
    _, root = image_comp
    train = pd.read_csv(root / "train.csv")
    ds = ImageDataset(train, root, build_train_transform(32, ["affine", "hflip", "color_jitter"]))
    a, b, c = ds[(3, 123)], ds[(3, 123)], ds[(3, 124)]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_seeded_augmentations_draw_independently():
    # Each sample's seed drives the whole pipeline; its transforms must not each replay the
    # same random stream (hflip and vflip would then always fire together, and a row would
    # never be flipped one way only).
    image = np.zeros((8, 8, 3), np.uint8)
    image[0, 0] = 255  # the corner the bright pixel lands in tells the flips apart
    ds = ImageDataset(pd.DataFrame({"image": ["x.png"], "label": [0]}), ".",
                      build_train_transform(8, ["hflip", "vflip"]), images=image[None])
    corners = {tuple(np.argwhere(ds[(0, seed)].numpy()[..., 0] == 255)[0]) for seed in range(64)}
    assert corners == {(0, 0), (0, 7), (7, 0), (7, 7)}


def test_cached_rows_load_on_threads_and_give_the_batches_worker_processes_give(image_comp):
    # With a CPU model, decode-cache rows load on threads of the training process; which of
    # them served a row must not change a pixel, and files to decode keep their processes.
    _, root = image_comp
    train = pd.read_csv(root / "train.csv")
    images = np.random.default_rng(0).integers(0, 256, (len(train), 24, 24, 3), dtype=np.uint8)
    tf = build_train_transform(16, ["random_resized_crop", "hflip", "vflip", "color_jitter"])
    answers = Target("single", CLASSES, "label").encode(train)
    cached = ImageDataset(train, root, tf, answers, images=images)
    sampler = SeededSampler(len(cached), 0, shuffle=True)
    cpu = torch.device("cpu")
    threaded = build_loader(cached, 5, cpu, num_workers=2, sampler=sampler)
    assert threaded.num_workers == 0 and isinstance(threaded.dataset, ThreadedRows)
    processes = torch.utils.data.DataLoader(cached, 5, sampler=sampler, num_workers=2)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        got, want = list(threaded), list(processes)
        assert len(got) == len(want) == -(-len(train) // 5)
        for (x, y), (x2, y2) in zip(got, want, strict=True):
            assert torch.equal(x, x2) and torch.equal(y, y2)
    files = ImageDataset(train, root, tf, answers)
    assert build_loader(files, 5, cpu, num_workers=2, sampler=sampler).num_workers == 2


def test_large_jpegs_decode_at_reduced_scale_never_below_the_side_asked(tmp_path):
    y, x = np.mgrid[0:320, 0:400]
    rgb = np.stack([x * 255 // 400, y * 255 // 320, (x + y) * 255 // 720], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(rgb).save(tmp_path / "big.png")
    full = load_image(tmp_path / "big.jpg")
    assert full.shape == (320, 400, 3)
    small = load_image(tmp_path / "big.jpg", 64)
    assert small.shape == (80, 100, 3)  # 1/4 scale; 1/8 would leave 40 rows
    assert load_image(tmp_path / "big.jpg", 200).shape == (320, 400, 3)  # half scale would be too small
    assert load_image(tmp_path / "big.png", 64).shape == (320, 400, 3)  # only JPEG has a cheaper decode
    # the same picture as the full decode brought to that size
    reference = cv2.resize(full, (100, 80), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference).mean() < 3
    ds = ImageDataset(pd.DataFrame({"image": ["big.jpg"]}), tmp_path, build_eval_transform(64), decode_side=64)
    assert ds.raw(0).shape == (80, 100, 3) and ds[0].shape == (64, 64, 3)


def test_decode_side_leaves_the_smallest_random_crop_at_full_detail():
    assert decode_side(64, ["hflip", "affine"]) == 64  # a resize comes first: the size is enough
    side = decode_side(224, ["random_resized_crop", "hflip"])
    assert side * math.sqrt(RRC_SCALE[0] * RRC_RATIO[0]) >= 224 > (side - 1) * math.sqrt(RRC_SCALE[0] * RRC_RATIO[0])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_any_pil_mode_becomes_rgb(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    suffix = {"CMYK": ".jpg", "P": ".gif"}.get(mode, ".png")
    path = tmp_path / f"img{suffix}"
    img.save(path)
    arr = load_image(path)
    assert arr.shape == (10, 12, 3) and arr.dtype == np.uint8
    if mode == "I;16":  # 16-bit values are scaled down, not clipped to white
        assert np.abs(arr[..., 0].astype(int) - np.asarray(Image.fromarray(rgb).convert("L"))).max() <= 1


def test_tabular_dataset_modes(table_comp):
    _, root = table_comp
    df = pd.read_csv(root / "train.csv")
    pre = TabularPreprocessor.fit(df, ["x1", "x2", "color"])
    ds = TabularDataset(df, pre, Target("single", [0, 1], "target").encode(df))
    x, y = ds[0]
    assert x.shape == (pre.n_features,) and int(y) == df["target"][0]
    assert "x2_missing" in pre.feature_names and "color=red" in pre.feature_names
    test = TabularDataset(pd.read_csv(root / "test.csv"), pre)
    assert test[0].shape == (pre.n_features,)
