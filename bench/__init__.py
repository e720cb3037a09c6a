"""Benchmarks and the soak; `python -m bench.soak` runs the soak (see bench/README.md)."""
