"""Embedded demo competitions, written on first use: scikit-learn's handwritten digits."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from competition.core.errors import CompetitionError

log = logging.getLogger(__name__)

# Each embedded demo and the one root it is built into (config key data.demo).
DEMOS = {"digits": "data/digits"}


def build_digits(root: Path, test_fraction: float = 0.2, seed: int = 0) -> None:
    """Write the 1,797 8x8 digits as PNGs in Kaggle layout, test answers kept in solution.csv."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)  # 0..16 → 0..255
    ids = np.arange(len(images))
    train_idx, test_idx = train_test_split(
        ids, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename it into place: never a half-written demo.
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / "images").mkdir()
        for i in ids:
            Image.fromarray(images[i], mode="L").save(tmp / "images" / f"{i:04d}.png")
        frame = pd.DataFrame({"id": ids, "image": [f"images/{i:04d}.png" for i in ids], "label": digits.target})
        frame.iloc[np.sort(train_idx)].to_csv(tmp / "train.csv", index=False)
        test = frame.iloc[np.sort(test_idx)]
        test[["id", "image"]].to_csv(tmp / "test.csv", index=False)
        test[["id", "label"]].to_csv(tmp / "solution.csv", index=False)
        test[["id"]].assign(label=0).to_csv(tmp / "sample_submission.csv", index=False)
        if root.exists():
            if any(root.iterdir()):
                raise CompetitionError(f"data root {root} exists but has no train.csv; move it away to rebuild the demo")
            root.rmdir()
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote the digits demo to %s (%d train, %d test images)", root, len(train_idx), len(test_idx))


def build_demo(name: str, root: Path) -> None:
    """Write the embedded demo `name` into `root` (config key data.demo)."""
    if name not in DEMOS:
        raise CompetitionError(f"config key data.demo: {name!r} is not one of {', '.join(DEMOS)}")
    build_digits(Path(root))
