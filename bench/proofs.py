"""Inclusion and consistency proofs: generation time, size and verification time.

On the cached ledgers of :mod:`bench.common` (about a hundred checkpoints each):
inclusion proofs of random entries against the latest checkpoint, and consistency proofs
from every earlier checkpoint to the latest. Verification is timed twice: the Merkle
path alone, and the path plus the Ed25519 signature(s) of the checkpoint(s).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from typing import Any

from audit import Ledger
from bench.common import Results, Table, cached_ledger, percentile

FULL_SIZES = (1_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1_000, 10_000, 100_000)
SAMPLES = 300


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def _us(values: list[float]) -> tuple[str, str]:
    ordered = sorted(values)
    return f"{percentile(ordered, 50) * 1e6:,.0f}", f"{percentile(ordered, 99) * 1e6:,.0f}"


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}–{max(values)}"


def measure(entries: int, folder: Any) -> dict[str, Any]:
    rng = random.Random(entries)
    open_s, ledger = _timed(lambda: Ledger(folder))
    try:
        keys = ledger.keychain()
        checkpoints = ledger.checkpoints()
        latest = checkpoints[-1]
        if latest.size != entries:
            raise SystemExit(f"cached ledger of {entries:,} ends at {latest.size:,}: use --rebuild")
        seqs = [0, entries - 1, *(rng.randrange(entries) for _ in range(SAMPLES - 2))]
        inclusion: dict[str, list[Any]] = {
            "gen": [],
            "check": [],
            "check_sig": [],
            "hashes": [],
            "doc": [],
        }
        for number, seq in enumerate(seqs):
            seconds, proof = _timed(lambda s=seq: ledger.prove_inclusion(s))
            inclusion["gen"].append(seconds)
            inclusion["check"].append(_timed(proof.verify)[0])
            if number < 50:
                inclusion["check_sig"].append(_timed(lambda p=proof: p.verify(keys))[0])
            inclusion["hashes"].append(len(proof.path))
            inclusion["doc"].append(len(json.dumps(proof.to_dict(), separators=(",", ":"))))
        olds = [cp.size for cp in checkpoints if cp.size < latest.size]
        consistency: dict[str, list[Any]] = {
            "gen": [],
            "check": [],
            "check_sig": [],
            "hashes": [],
            "doc": [],
        }
        for number, old in enumerate(olds):
            seconds, proof = _timed(lambda o=old: ledger.prove_consistency(o))
            consistency["gen"].append(seconds)
            consistency["check"].append(_timed(proof.verify)[0])
            if number < 50:
                consistency["check_sig"].append(_timed(lambda p=proof: p.verify(keys))[0])
            consistency["hashes"].append(len(proof.path))
            consistency["doc"].append(len(json.dumps(proof.to_dict(), separators=(",", ":"))))
    finally:
        ledger.close(checkpoint=False)
    return {
        "open_s": open_s,
        "inclusion": inclusion,
        "consistency": consistency,
        "checkpoints": len(checkpoints),
        "olds": (min(olds), max(olds)),
    }


def run(results: Results, *, quick: bool, rebuild: bool) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    measured = {n: measure(n, cached_ledger(n, rebuild=rebuild)) for n in sizes}

    for kind, title in (
        (
            "inclusion",
            f"Inclusion proofs against the latest checkpoint ({SAMPLES} random entries "
            "per size, first and last included)",
        ),
        ("consistency", "Consistency proofs from every earlier checkpoint to the latest"),
    ):
        table = Table(
            title,
            [
                "tree size",
                "log2(n)",
                "proofs",
                "hashes",
                "hash bytes",
                "JSON document bytes",
                "generate p50 (µs)",
                "generate p99 (µs)",
                "verify path p50 (µs)",
                "verify + signature p50 (µs)",
            ],
        )
        for n in sizes:
            m = measured[n][kind]
            gen50, gen99 = _us(m["gen"])
            chk50, _ = _us(m["check"])
            sig50, _ = _us(m["check_sig"])
            table.add(
                f"{n:,}",
                f"{math.log2(n):.1f}",
                len(m["gen"]),
                _span(m["hashes"]),
                _span([h * 32 for h in m["hashes"]]),
                _span(m["doc"]),
                gen50,
                gen99,
                chk50,
                sig50,
            )
        if kind == "inclusion":
            table.notes.append(
                "hashes: path length; RFC 9162 gives ceil(log2 n) or fewer; the "
                "document holds the entry, the path in hex and the signed checkpoint"
            )
        else:
            table.notes.append(
                "old sizes: each checkpoint of the ledger (about 100 per size, every "
                "n/100 entries); the signature check covers both checkpoints"
            )
        results.table(table)
    table = Table("Opening a ledger for proofs (Ledger(path), no writes)", ["tree size", "ms"])
    for n in sizes:
        table.add(f"{n:,}", f"{measured[n]['open_s'] * 1e3:,.1f}")
    results.table(table)
    return measured
