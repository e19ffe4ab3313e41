"""From trained folds to a submission: the fold × TTA ensemble, the CV report and the checked file."""
