"""Benchmarks: `python -m bench NAME --json`; each figure beside its peer, same run."""
