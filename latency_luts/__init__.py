"""Latency measurement, lookup tables and the interchange format for measured latencies."""
