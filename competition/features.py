"""Tabular preprocessing fit on a fold's training rows only, with state kept as plain types."""
from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MAX_CATEGORIES = 30  # a text column with more distinct values is treated as free text and dropped
TITANIC_COLUMNS = {"Name", "Sex", "Age", "SibSp", "Parch", "Ticket", "Fare", "Cabin", "Embarked", "Pclass"}
TITLE_MAP = {"Mlle": "Miss", "Ms": "Miss", "Mme": "Mrs", "Mr": "Mr", "Mrs": "Mrs", "Miss": "Miss", "Master": "Master"}


def _title(name: object) -> str:
    match = re.search(r",\s*([^.]+)\.", str(name))
    return TITLE_MAP.get(match.group(1).strip(), "Rare") if match else "Rare"


def _ticket_key(ticket: object) -> str:
    return str(ticket).strip()


def _family_key(frame: pd.DataFrame) -> pd.Series:
    """Surname plus fare: relatives travel on one booking, and the fare tells namesakes apart."""
    surname = frame["Name"].map(lambda n: str(n).split(",")[0].strip())
    return surname + "|" + frame["Fare"].round(1).astype(str)


class TabularPreprocessor:
    """Impute, scale, one-hot, plus the engineered Titanic features when those columns exist.

    `fit` sees only the rows it is given (a fold's training part), so validation and test
    rows never leak into medians, scales, category lists or ticket-group counts. `state` is
    plain Python data: it lives inside weights_only checkpoints and rebuilds the transform.
    """

    def __init__(self, state: dict):
        self.state = state

    @property
    def feature_names(self) -> list[str]:
        return list(self.state["feature_names"])

    @property
    def n_features(self) -> int:
        return len(self.state["feature_names"])

    # 1. engineered columns  2. numeric: impute + indicator + standardise  3. categorical: one-hot
    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        columns: list[str],
        *,
        id_column: str | None = None,
        target_column: str | None = None,
    ) -> TabularPreprocessor:
        """Fit on `df` (a fold's training rows). With `id_column` the fitted rows are remembered,
        so group features count a row once whether it is transformed later or not; with a
        binary `target_column` the Titanic group-survival features are added (leave-one-out)."""
        titanic = None
        if TITANIC_COLUMNS <= set(columns):
            tickets = df["Ticket"].map(_ticket_key)
            titles = df["Name"].map(_title)
            age_by_title = df.groupby(titles)["Age"].median().dropna()
            titanic = {
                "ticket_counts": {str(k): int(v) for k, v in tickets.value_counts().items()},
                "age_by_title": {str(k): float(v) for k, v in age_by_title.items()},
                "age_median": float(df["Age"].median()),
                "id_column": id_column,
                "fit_ids": df[id_column].astype(str).tolist() if id_column else [],
                "target_column": None,
            }
            if target_column and target_column in df and df[target_column].nunique() == 2:
                positive = sorted(df[target_column].unique().tolist())[1]
                y = (df[target_column] == positive).astype(float)
                titanic["target_column"] = target_column
                titanic["positive"] = positive.item() if hasattr(positive, "item") else positive
                titanic["groups"] = {}
                for kind, keys in (("ticket", tickets), ("family", _family_key(df))):
                    stats = y.groupby(keys.to_numpy()).agg(["sum", "count"])
                    titanic["groups"][kind] = {str(k): [float(r["sum"]), int(r["count"])] for k, r in stats.iterrows()}
        state: dict = {"columns": list(columns), "titanic": titanic, "numeric": [], "categorical": []}
        frame = cls._engineer(df, state)
        # Names follow transform()'s layout: every numeric block, then every one-hot block.
        names: list[str] = []
        cat_names: list[str] = []
        for col in frame.columns:
            series = frame[col]
            if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
                values = series.astype(float)
                median = float(values.median()) if values.notna().any() else 0.0
                filled = values.fillna(median)
                std = float(filled.std(ddof=0)) or 1.0
                indicator = bool(values.isna().any())
                state["numeric"].append(
                    {"column": col, "median": median, "mean": float(filled.mean()), "std": std, "indicator": indicator}
                )
                names.append(col)
                if indicator:
                    names.append(f"{col}_missing")
            else:
                cats = series.astype(str).where(series.notna(), "<missing>")
                distinct = cats.value_counts()
                if len(distinct) > MAX_CATEGORIES:
                    log.info("feature column %s has %d distinct values: treated as free text and left out", col, len(distinct))
                    continue
                categories = sorted(distinct.index.tolist())
                state["categorical"].append({"column": col, "categories": categories})
                cat_names.extend(f"{col}={c}" for c in categories)
        state["feature_names"] = names + cat_names
        return cls(state)

    @staticmethod
    def _engineer(df: pd.DataFrame, state: dict) -> pd.DataFrame:
        frame = df[state["columns"]].copy()
        t = state["titanic"]
        if t is None:
            return frame
        title = frame["Name"].map(_title)
        ticket = frame["Ticket"].map(_ticket_key)
        if t["id_column"] and t["id_column"] in df:
            fitted = df[t["id_column"]].astype(str).isin(set(t["fit_ids"])).to_numpy()
        else:
            fitted = np.zeros(len(df), dtype=bool)
        seen = ticket.map(t["ticket_counts"]).fillna(0).astype(float)
        # A fitted row is already in the counts; any other row joins its group.
        group = seen + (~fitted).astype(float)
        family = frame["SibSp"].astype(float) + frame["Parch"].astype(float) + 1.0
        age = frame["Age"].astype(float)
        age_filled = age.fillna(title.map(t["age_by_title"])).fillna(t["age_median"])
        fare = frame["Fare"].astype(float)
        out = pd.DataFrame(
            {
                "Pclass": frame["Pclass"].astype(str),
                "Sex": frame["Sex"].astype(str),
                "Title": title,
                "Embarked": frame["Embarked"],
                "Deck": frame["Cabin"].map(lambda c: str(c)[0] if isinstance(c, str) and c else "U"),
                "Age": age_filled,
                "AgeMissing": age.isna().astype(float),
                "IsChild": (age_filled < 14).astype(float),
                "FamilySize": family,
                "IsAlone": (family == 1).astype(float),
                "FamilyBucket": pd.cut(family, [0, 1, 4, 100], labels=["alone", "small", "large"]).astype(str),
                "TicketGroupSize": group,
                "LogFare": np.log1p(fare),
                "LogFarePerPerson": np.log1p(fare / group.clip(lower=1.0)),
                "SibSp": frame["SibSp"].astype(float),
                "Parch": frame["Parch"].astype(float),
            },
            index=frame.index,
        )
        if t.get("target_column"):
            # Fellow passengers' fate (the strongest Titanic signal): the survival rate of the
            # *other* fitted members of the row's ticket and family groups; NaN when none is known.
            own = (df[t["target_column"]] == t["positive"]).astype(float) if t["target_column"] in df else None
            for kind, keys in (("ticket", ticket), ("family", _family_key(frame))):
                stats = t["groups"][kind]
                total = keys.map(lambda k, s=stats: s.get(str(k), [0.0, 0])[0]).astype(float).to_numpy()
                count = keys.map(lambda k, s=stats: s.get(str(k), [0.0, 0])[1]).astype(float).to_numpy()
                if own is not None:
                    mine = np.where(fitted, own.to_numpy(), 0.0)
                    total, count = total - mine, count - fitted.astype(float)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[f"{kind.capitalize()}Survival"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
                out[f"{kind.capitalize()}Known"] = count
        rest = [c for c in state["columns"] if c not in TITANIC_COLUMNS]
        return pd.concat([out, frame[rest]], axis=1)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Rows → float32 matrix [n, n_features] with the fitted statistics."""
        frame = self._engineer(df, self.state)
        blocks: list[np.ndarray] = []
        for spec in self.state["numeric"]:
            values = pd.to_numeric(frame[spec["column"]], errors="coerce").astype(float)
            missing = values.isna().to_numpy()
            filled = values.fillna(spec["median"]).to_numpy()
            blocks.append(((filled - spec["mean"]) / spec["std"])[:, None])
            if spec["indicator"]:
                blocks.append(missing[:, None].astype(float))
        for spec in self.state["categorical"]:
            series = frame[spec["column"]]
            cats = series.astype(str).where(series.notna(), "<missing>").to_numpy()
            blocks.append((cats[:, None] == np.asarray(spec["categories"], dtype=object)[None, :]).astype(float))
        if not blocks:
            return np.zeros((len(df), 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)
