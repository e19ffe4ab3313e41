"""Everything the kit writes and reads back: atomic files, checkpoints, TensorBoard and CSV records."""
