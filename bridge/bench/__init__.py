"""Benchmarks that compare the bridge with the other ways to call async code from sync code."""
