"""Benchmarks for kpiwatch; run them as scripts (`python benchmarks/nab.py --help`)."""
