"""HF Lab benchmarks: `python -m benchmarks [--full] [--only NAME ...]` (see README)."""
