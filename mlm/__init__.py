"""mlm: small domain-specialised byte-level language models trained with EGGROLL."""

__version__ = "0.1.0"
