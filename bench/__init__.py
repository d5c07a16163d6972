"""Benchmarks for nwcache (not tests): run each module with `python -m bench.NAME`."""
