"""Training one fold: the phases of an epoch, the two fine-tuning stages, early stopping and checkpoints."""
