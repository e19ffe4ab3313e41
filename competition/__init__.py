"""Kaggle-style classification competition kit."""

__version__ = "0.1.0"
