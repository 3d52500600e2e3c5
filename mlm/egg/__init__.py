"""The EGGROLL trainer: C core (engine), configuration, training loop, sampling and the CLI."""
