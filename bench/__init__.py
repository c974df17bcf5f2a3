"""Benchmarks: `make bench` runs them side by side with a peer and writes docs/benchmarks.md."""
