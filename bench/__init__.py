"""Benchmark harness for `make bench` (see bench/README.md); not part of the product."""
