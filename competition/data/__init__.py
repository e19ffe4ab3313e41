"""From a competition folder to batches: the CSVs, folds, images, the decode cache, features and datasets."""
