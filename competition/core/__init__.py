"""What every stage shares: the config, the error type, metrics, the runtime and the process world."""
