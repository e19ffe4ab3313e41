"""Titanic's feature recipe, the feature hook the shipped `titanic` config names
(`data.features: titanic_features.py:TitanicFeatures`).

Title from the name, deck from the cabin, family size and buckets, ticket-group size, fare per
person, ages imputed by title, and the strongest Titanic signal: the survival rate of the
*other* passengers on the same ticket and in the same family, leave-one-out so that a row's
own label never feeds its own feature. `fit` sees only a fold's training rows; its state is
plain data stored in the fold's checkpoint. Copy this file as a starting point for your own.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

ID, TARGET = "PassengerId", "Survived"
TITLE_MAP = {"Mlle": "Miss", "Ms": "Miss", "Mme": "Mrs", "Mr": "Mr", "Mrs": "Mrs", "Miss": "Miss", "Master": "Master"}


def _title(name: object) -> str:
    match = re.search(r",\s*([^.]+)\.", str(name))
    return TITLE_MAP.get(match.group(1).strip(), "Rare") if match else "Rare"


def _ticket_key(ticket: object) -> str:
    return str(ticket).strip()


def _family_key(rows: pd.DataFrame) -> pd.Series:
    """Surname plus fare: relatives travel on one booking, and the fare tells namesakes apart."""
    surname = rows["Name"].map(lambda n: str(n).split(",")[0].strip())
    return surname + "|" + rows["Fare"].round(1).astype(str)


class TitanicFeatures:
    """Engineered Titanic columns; the kit then imputes, scales and one-hot encodes them."""

    def fit(self, rows: pd.DataFrame) -> dict:
        tickets = rows["Ticket"].map(_ticket_key)
        titles = rows["Name"].map(_title)
        age_by_title = rows.groupby(titles)["Age"].median().dropna()
        positive = sorted(rows[TARGET].unique().tolist())[1]
        y = (rows[TARGET] == positive).astype(float)
        groups = {}
        for kind, keys in (("ticket", tickets), ("family", _family_key(rows))):
            stats = y.groupby(keys.to_numpy()).agg(["sum", "count"])
            groups[kind] = {str(k): [float(r["sum"]), int(r["count"])] for k, r in stats.iterrows()}
        return {
            "ticket_counts": {str(k): int(v) for k, v in tickets.value_counts().items()},
            "age_by_title": {str(k): float(v) for k, v in age_by_title.items()},
            "age_median": float(rows["Age"].median()),
            "fit_ids": rows[ID].astype(str).tolist(),  # these rows are in the counts already
            "positive": positive.item() if hasattr(positive, "item") else positive,
            "groups": groups,
        }

    def transform(self, rows: pd.DataFrame, state: dict) -> pd.DataFrame:
        title = rows["Name"].map(_title)
        ticket = rows["Ticket"].map(_ticket_key)
        fitted = rows[ID].astype(str).isin(set(state["fit_ids"])).to_numpy()
        seen = ticket.map(state["ticket_counts"]).fillna(0).astype(float)
        group = seen + (~fitted).astype(float)  # a fitted row is in the counts; any other joins its group
        family = rows["SibSp"].astype(float) + rows["Parch"].astype(float) + 1.0
        age = rows["Age"].astype(float)
        age_filled = age.fillna(title.map(state["age_by_title"])).fillna(state["age_median"])
        fare = rows["Fare"].astype(float)
        out = pd.DataFrame(
            {
                "Pclass": rows["Pclass"].astype(str),
                "Sex": rows["Sex"].astype(str),
                "Title": title,
                "Embarked": rows["Embarked"],
                "Deck": rows["Cabin"].map(lambda c: str(c)[0] if isinstance(c, str) and c else "U"),
                "Age": age_filled,
                "AgeMissing": age.isna().astype(float),
                "IsChild": (age_filled < 14).astype(float),
                "FamilySize": family,
                "IsAlone": (family == 1).astype(float),
                "FamilyBucket": pd.cut(family, [0, 1, 4, 100], labels=["alone", "small", "large"]).astype(str),
                "TicketGroupSize": group,
                "LogFare": np.log1p(fare),
                "LogFarePerPerson": np.log1p(fare / group.clip(lower=1.0)),
                "SibSp": rows["SibSp"].astype(float),
                "Parch": rows["Parch"].astype(float),
            },
            index=rows.index,
        )
        # Fellow passengers' fate: the survival rate of the *other* fitted members of the row's
        # ticket and family groups; NaN when none is known.
        own = (rows[TARGET] == state["positive"]).astype(float).to_numpy() if TARGET in rows else np.zeros(len(rows))
        for kind, keys in (("ticket", ticket), ("family", _family_key(rows))):
            stats = state["groups"][kind]
            total = keys.map(lambda k, s=stats: s.get(str(k), [0.0, 0])[0]).astype(float).to_numpy()
            count = keys.map(lambda k, s=stats: s.get(str(k), [0.0, 0])[1]).astype(float).to_numpy()
            mine = np.where(fitted, own, 0.0)
            total, count = total - mine, count - fitted.astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{kind.capitalize()}Survival"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            out[f"{kind.capitalize()}Known"] = count
        return out
