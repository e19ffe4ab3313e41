"""Kaggle-style classification competition kit."""
import os

# Offline by default: albumentations asks PyPI for a newer version of itself when first imported,
# which without a network (a Kaggle code competition) prints a warning on every command after a
# wait. It skips the check when this variable is set before that import, as every kit module
# comes after this one; a value the user set wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
