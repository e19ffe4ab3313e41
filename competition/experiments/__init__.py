"""Runs compared and combined: the local board of every run and blend, and blends fit on out-of-fold predictions."""
