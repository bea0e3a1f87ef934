"""Benchmarks: speed/memory figures measured in one run and written to ``benchmarks/results``."""
