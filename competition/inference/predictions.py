"""The predictions a run keeps for blending: outputs/<name>/test_probs.csv (the fold × TTA mean on
test.csv) and outputs/<name>/oof.csv (every fold's validation rows as the submission pipeline
predicts them), each row stamped with the run's hashes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from competition.core.schema import Config
from competition.data.folder import Competition
from competition.inference.validation import OutOfFold
from competition.io.files import write_csv
from competition.io.prob_columns import oof_frame
from competition.io.runs import RunKey, stamp

TEST_PROBS, OOF = "test_probs.csv", "oof.csv"


def probs_frame(ids, id_column: str, classes: list, probs: np.ndarray) -> pd.DataFrame:
    """id, then prob_<class> per class (the columns of a fold's oof.csv)."""
    return oof_frame(list(ids), id_column, {}, classes, probs)


def keep_predictions(cfg: Config, comp: Competition, loaded: list, test_probs: np.ndarray,
                     oof: OutOfFold | None) -> None:
    """Write test_probs.csv and, when the out-of-fold rows were predicted, oof.csv (in train.csv's
    order: id, fold, the answer, prob_<class> …)."""
    key = RunKey.of_state(loaded[0][2])  # the folds are one run: ensemble.load_fold_models checked
    idc = cfg.data.id_column
    write_csv(cfg.run_dir / TEST_PROBS, stamp(probs_frame(comp.test[idc], idc, comp.classes, test_probs), key))
    if oof is None:
        return
    order = np.argsort(oof.rows, kind="stable")
    frame = oof_frame(comp.train[idc].iloc[oof.rows[order]].tolist(), idc, comp.target.answer_frame(oof.y[order]),
                      comp.classes, oof.probs[order])
    frame.insert(1, "fold", oof.fold[order])
    write_csv(cfg.run_dir / OOF, stamp(frame, key))
