"""Datasets in train and test modes; images of any PIL mode become RGB; tables fit on train rows only."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from competition.data import load_image
from competition.datasets import ImageDataset, TabularDataset, ThreadedRows, build_loader
from competition.distributed import SeededSampler
from competition.features import TabularPreprocessor
from competition.gpu_augment import BatchAugment
from competition.transforms import RRC_RATIO, RRC_SCALE, build_eval_transform, build_train_transform, decode_side

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_image_dataset_modes(image_comp):
    _, root = image_comp
    train = pd.read_csv(root / "train.csv")
    tf = build_eval_transform(32)
    ds = ImageDataset(train, root, tf, "train")
    x, y = ds[4]
    assert x.shape == (32, 32, 3) and x.dtype == torch.uint8  # normalised per batch, on the device
    assert ds.classes == ["circle", "cross", "square"]
    assert ds.classes[y] == train["label"][4]
    test = pd.read_csv(root / "test.csv")
    item = ImageDataset(test, root, tf, "test")[0]
    assert isinstance(item, torch.Tensor) and item.shape == (32, 32, 3)  # no label in test mode
    with pytest.raises(ValueError, match="mode"):
        ImageDataset(test, root, tf, "valid")


def test_normalisation_uses_the_given_mean_and_std(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(tmp_path / "white.png")
    df = pd.DataFrame({"image": ["white.png"], "label": [0]})
    x, _ = ImageDataset(df, tmp_path, build_eval_transform(8), "train")[0]
    x = BatchAugment(8, MEAN, STD)(x[None])
    assert x.shape == (1, 3, 8, 8) and torch.allclose(x, torch.full_like(x, (1.0 - 0.5) / 0.25))


def test_seeded_augmentation_repeats_per_row_and_seed(image_comp):
    _, root = image_comp
    train = pd.read_csv(root / "train.csv")
    ds = ImageDataset(train, root, build_train_transform(32, ["affine", "hflip", "color_jitter"]), "train")
    a, b, c = ds[(3, 123)][0], ds[(3, 123)][0], ds[(3, 124)][0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_seeded_augmentations_draw_independently():
    # Each sample's seed drives the whole pipeline; its transforms must not each replay the
    # same random stream (hflip and vflip would then always fire together, and a row would
    # never be flipped one way only).
    image = np.zeros((8, 8, 3), np.uint8)
    image[0, 0] = 255  # the corner the bright pixel lands in tells the flips apart
    ds = ImageDataset(pd.DataFrame({"image": ["x.png"], "label": [0]}), ".",
                      build_train_transform(8, ["hflip", "vflip"]), "train", images=image[None])
    corners = {tuple(np.argwhere(ds[(0, seed)][0].numpy()[..., 0] == 255)[0]) for seed in range(64)}
    assert corners == {(0, 0), (0, 7), (7, 0), (7, 7)}


def test_cached_rows_load_on_threads_and_give_the_batches_worker_processes_give(image_comp):
    # With a CPU model, decode-cache rows load on threads of the training process; which of
    # them served a row must not change a pixel, and files to decode keep their processes.
    _, root = image_comp
    train = pd.read_csv(root / "train.csv")
    images = np.random.default_rng(0).integers(0, 256, (len(train), 24, 24, 3), dtype=np.uint8)
    tf = build_train_transform(16, ["random_resized_crop", "hflip", "vflip", "color_jitter"])
    cached = ImageDataset(train, root, tf, "train", images=images)
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
    files = ImageDataset(train, root, tf, "train")
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
    ds = ImageDataset(pd.DataFrame({"image": ["big.jpg"]}), tmp_path, build_eval_transform(64), "test", decode_side=64)
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


def _titanic_like(n=60, seed=0):
    rng = np.random.default_rng(seed)
    titles = rng.choice(["Mr.", "Mrs.", "Miss.", "Master.", "Dr."], size=n)
    return pd.DataFrame({
        "PassengerId": np.arange(n),
        "Survived": rng.integers(0, 2, n),
        "Pclass": rng.integers(1, 4, n),
        "Name": [f"Doe, {t} John" for t in titles],
        "Sex": rng.choice(["male", "female"], n),
        "Age": np.where(rng.random(n) < 0.2, np.nan, rng.uniform(1, 70, n)),
        "SibSp": rng.integers(0, 3, n),
        "Parch": rng.integers(0, 3, n),
        "Ticket": rng.choice(["A1", "B2", "C3", "D4", "E5", "F6"], n),
        "Fare": rng.uniform(5, 100, n),
        "Cabin": rng.choice(["C85", None, "E46", None], n),
        "Embarked": rng.choice(["S", "C", "Q", None], n),
    })


def test_tabular_preprocessor_fits_on_training_rows_only():
    df = _titanic_like()
    columns = [c for c in df.columns if c not in ("PassengerId", "Survived")]
    fit_rows, other = df.iloc[:40], df.iloc[40:].copy()
    pre = TabularPreprocessor.fit(fit_rows, columns)
    before = pre.transform(fit_rows)
    # Changing held-out rows changes nothing that was fit: the same training rows map identically.
    other["Fare"] = other["Fare"] * 1000
    pre_again = TabularPreprocessor.fit(fit_rows, columns)
    assert np.array_equal(pre_again.transform(fit_rows), before)
    # Standardised numeric columns are centred on the fit rows.
    assert abs(before[:, pre.feature_names.index("LogFare")].mean()) < 1e-5
    # Engineered features are there, and the state is plain data (it lives in weights_only checkpoints).
    assert {"FamilySize", "TicketGroupSize", "Title=Mr", "Deck=C"} <= set(pre.feature_names)
    assert not any(name.startswith("Name") for name in pre.feature_names)
    torch.save(pre.state, "state.pt")
    restored = TabularPreprocessor(torch.load("state.pt", weights_only=True))
    assert np.array_equal(restored.transform(other), pre.transform(other))


def test_ticket_group_size_counts_a_new_row_as_joining_its_group():
    df = _titanic_like()
    columns = [c for c in df.columns if c not in ("PassengerId", "Survived")]
    pre = TabularPreprocessor.fit(df.iloc[:40], columns)
    ticket = df["Ticket"].iloc[45]
    in_fit = int((df["Ticket"].iloc[:40] == ticket).sum())
    pre.state["numeric"] = [s | {"mean": 0.0, "std": 1.0} for s in pre.state["numeric"]]  # read raw values
    col = pre.feature_names.index("TicketGroupSize")
    assert pre.transform(df.iloc[[45]])[0, col] == in_fit + 1


def test_tabular_dataset_modes(table_comp):
    _, root = table_comp
    df = pd.read_csv(root / "train.csv")
    pre = TabularPreprocessor.fit(df, ["x1", "x2", "color"])
    ds = TabularDataset(df, pre, "train", target_column="target")
    x, y = ds[0]
    assert x.shape == (pre.n_features,) and int(y) == df["target"][0]
    assert "x2_missing" in pre.feature_names and "color=red" in pre.feature_names
    test = TabularDataset(pd.read_csv(root / "test.csv"), pre, "test")
    assert test[0].shape == (pre.n_features,)


def test_group_survival_is_leave_one_out_and_never_reads_held_out_labels():
    df = _titanic_like(n=80, seed=1)
    columns = [c for c in df.columns if c not in ("PassengerId", "Survived")]
    fit_rows, held_out = df.iloc[:60], df.iloc[60:].copy()
    pre = TabularPreprocessor.fit(fit_rows, columns, id_column="PassengerId", target_column="Survived")
    raw = TabularPreprocessor._engineer(fit_rows, pre.state)
    # A fitted row's ticket survival is the mean over the *other* fitted rows of its ticket.
    row = fit_rows.iloc[0]
    others = fit_rows[(fit_rows["Ticket"] == row["Ticket"]) & (fit_rows["PassengerId"] != row["PassengerId"])]
    assert raw["TicketSurvival"].iloc[0] == pytest.approx(others["Survived"].mean())
    # Held-out labels are never read: flipping them changes nothing the model sees.
    before = pre.transform(held_out)
    held_out["Survived"] = 1 - held_out["Survived"]
    assert np.array_equal(pre.transform(held_out), before)
    # Without labels at all (test.csv) the held-out rows transform the same way.
    assert np.array_equal(pre.transform(held_out.drop(columns="Survived")), before)
