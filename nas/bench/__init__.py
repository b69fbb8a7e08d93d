"""Benchmarks of docs/benchmarks/ (protocols) and docs/results.md (figures): each module exposes ``run(cfg) -> dict``."""
