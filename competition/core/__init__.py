"""What every stage shares: the config, the error type, ids and labels as text, metrics, the runtime and the process world."""
