"""Benchmarks of the audit ledger: ``python -m bench [appends|verify|proofs|all] [--quick]``.

Each figure is printed next to a baseline measured in the same run on the same machine:

- ``appends``: durable appends/s and p50/p99 latency with 1, 8 and 64 writer threads and
  with 4 and 8 writer processes, against a naive "encode, write, fsync per entry" loop,
  plus the fsync cost of the disk;
- ``verify``: full verification of a large ledger (entries/s, MB/s) against raw SHA-256
  over the same bytes, and peak memory at growing sizes;
- ``proofs``: inclusion and consistency proof generation time, size and verification time
  at growing sizes.

Ledgers built for ``verify`` and ``proofs`` are cached under ``var/bench/`` (``--rebuild``
makes them anew). Results are written up in ``docs/benchmarks.md``.
"""
