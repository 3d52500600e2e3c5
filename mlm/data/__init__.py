"""Datasets: harvest a git repository into ``input.txt`` and load it with a pinned validation split."""

from mlm.data.corpus import Corpus, load_corpus

__all__ = ["Corpus", "load_corpus"]
