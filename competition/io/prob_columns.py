"""The probability columns of the kit's prediction files (each fold's oof.csv, a run's oof.csv and
test_probs.csv): prob_<class> per class, written and read here, apart from io.tracking so that the
board, which reads these files, loads none of its plotting and TensorBoard libraries."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PROB_PREFIX = "prob_"


def oof_frame(ids: Sequence, id_column: str, answers: dict[str, list], classes: Sequence, probs: np.ndarray) -> pd.DataFrame:
    """id, the answers in train.csv's own target column(s), then prob_<class> per class."""
    frame = pd.DataFrame({id_column: list(ids), **answers})
    for k, c in enumerate(classes):
        frame[f"{PROB_PREFIX}{c}"] = probs[:, k]
    return frame


def read_oof_probs(frame: pd.DataFrame, classes: Sequence) -> np.ndarray:
    return frame[[f"{PROB_PREFIX}{c}" for c in classes]].to_numpy(dtype=np.float64)
