"""Benchmark of relay_actors against a hand-written psycopg queue (the floor).

Run it with `python -m benchmarks`; docs/benchmarks.md describes the workloads,
the options and how to read the results.
"""
