"""Helpers for the test suite, the benchmarks and the screenshots: a tiny causal LM with a
tokenizer trained on the spot, synthetic corpora and run configs. Nothing here downloads."""
