"""Durable runs: a run on one machine, stopped from any process, resumed elsewhere after a crash.

`llm_worker.durable.temporal` runs workers inside Temporal (``pip install 'llm-worker[temporal]'``)
with every guarantee of a local run kept across processes: a cancel from anywhere ends the run
with `Cancelled`, its reason and kind, and everything kept.
"""
