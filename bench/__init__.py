"""Benchmarks: `python -m bench NAME --json`; each figure beside its peer, same run.

The benchmarks are a user of Tether like any author's app: their workflows are
registered explicitly, and they run the accounts-payable example's tools and policy
(`python -m bench` puts the example's project folder on the import path).
"""
