"""Benchmarks of BENCHMARKS.md: each module exposes ``run(cfg) -> dict``."""
