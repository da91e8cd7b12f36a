"""Benchmarks: `python -m bench NAME --json`, each figure beside its peer measured in the same run."""
