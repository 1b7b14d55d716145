"""Full verification speed and memory, against raw SHA-256 over the same bytes.

``audit.verify.verify`` runs in a fresh interpreter per ledger size (so its peak RSS is
its own); the SHA-256 baselines run here over the very same segment files. Every pass
reads the files from the page cache: a warm-up read comes first, so no figure includes
the disk.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import hashfloor
from bench.common import ROOT, Results, Table, cache_info, cached_ledger, human_bytes

FULL_SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1_000, 10_000, 100_000)
TARGET_RATIO = 3.0
_CHUNK = 1 << 20


def segment_files(folder: Path) -> list[Path]:
    return sorted((folder / "segments").glob("*.log"))


@dataclass
class Pass:
    """One timed pass: wall seconds and CPU seconds (this process, all threads)."""

    wall: float
    cpu: float


@contextmanager
def timed(into: list[Pass]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into.append(Pass(time.perf_counter() - wall, time.process_time() - cpu))


def read_only(files: list[Path]) -> tuple[Pass, int]:
    passes: list[Pass] = []
    total = 0
    with timed(passes):
        for path in files:
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    total += len(chunk)
    return passes[0], total


def streaming_sha256(files: list[Path]) -> Pass:
    """(a) One SHA-256 over all segment bytes, read in 1 MiB chunks."""
    passes: list[Pass] = []
    with timed(passes):
        digest = hashlib.sha256()
        for path in files:
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
    return passes[0]


def parallel_sha256(files: list[Path], workers: int) -> Pass:
    """(a') The machine's raw SHA-256 on every core: the bytes cut into ``workers`` equal
    ranges, each hashed by its own thread (hashlib releases the GIL while hashing)."""
    ranges: list[tuple[Path, int, int]] = []
    total = sum(p.stat().st_size for p in files)
    share = -(-total // workers)
    for path in files:
        size = path.stat().st_size
        ranges.extend((path, start, min(start + share, size)) for start in range(0, size, share))

    def work(item: tuple[Path, int, int]) -> str:
        path, start, end = item
        digest = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY)
        try:
            while start < end:
                chunk = os.pread(fd, min(_CHUNK, end - start), start)
                digest.update(chunk)
                start += len(chunk)
        finally:
            os.close(fd)
        return digest.hexdigest()

    passes: list[Pass] = []
    with ThreadPoolExecutor(workers) as pool, timed(passes):
        list(pool.map(work, ranges))
    return passes[0]


def per_entry_hashing(files: list[Path]) -> tuple[Pass, int]:
    """(b) The RFC 9162 hashing work alone: per entry one leaf hash SHA-256(0x00 || entry)
    and one 65-byte interior-node hash SHA-256(0x01 || left || right) (a tree of n leaves
    has n - 1 interior nodes), from Python with hashlib, with the same 1 MiB reads and
    line splitting as the verifier and no checks at all."""
    sha256 = hashlib.sha256
    wall, cpu = time.perf_counter(), time.process_time()
    count = 0
    last = b"\x00" * 32
    for path in files:
        with open(path, "rb") as handle:
            rest = b""
            while chunk := handle.read(_CHUNK):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                leaves = [sha256(b"\x00" + line).digest() for line in lines]
                if leaves:
                    lefts = [last, *leaves[:-1]]
                    _nodes = [
                        sha256(b"\x01" + a + b).digest() for a, b in zip(lefts, leaves, strict=True)
                    ]
                    last = leaves[-1]
                    count += len(leaves)
    return Pass(time.perf_counter() - wall, time.process_time() - cpu), count


def verify_in_child(folder: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench._verify_child", str(folder)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout))


def walk_implementation() -> str:
    if importlib.util.find_spec("audit._walkfast") is not None:
        return "audit.walk with the compiled accelerator audit._walkfast importable"
    return "pure Python audit/walk.py (no compiled accelerator importable)"


def run(results: Results, *, quick: bool, rebuild: bool) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    folders = {n: cached_ledger(n, rebuild=rebuild) for n in sizes}
    largest = sizes[-1]
    files = segment_files(folders[largest])
    cores = len(os.sched_getaffinity(0))

    read_only(files)  # warm the page cache for every pass that follows
    read, total = read_only(files)
    sha = streaming_sha256(files)
    sha_all = parallel_sha256(files, cores)
    leaf, hashed = per_entry_hashing(files)
    native = hashfloor.run(files)
    if native is not None and native[2] != largest:
        raise SystemExit(f"the native hashing pass counted {native[2]:,} entries, not {largest:,}")

    runs = {n: verify_in_child(folders[n]) for n in sizes}
    big = runs[largest]
    if not big["ok"] or big["entries"] != largest or hashed != largest:
        raise SystemExit(f"verification of the {largest:,}-entry ledger failed: {big}")
    mb = total / 1e6
    verify_pass = Pass(big["seconds"], big["cpu"])

    table = Table(
        f"Full verification of the {largest:,}-entry ledger ({human_bytes(total)} of segments, "
        f"page cache warm, {cores} cores)",
        [
            "pass over the same bytes",
            "wall (s)",
            "CPU (s)",
            "entries/s",
            "MB/s",
            "verify wall ÷ this wall",
            "verify CPU ÷ this CPU",
        ],
    )
    rows = (
        ("read only (1 MiB reads)", read),
        ("(a) one streaming hashlib.sha256, 1 core", sha),
        (f"(a') streaming SHA-256 on {cores} threads", sha_all),
        ("(b) leaf + node hash per entry (hashlib), 1 core", leaf),
        *(
            [("(b') leaf + node hash per entry in C (OpenSSL), 1 core", Pass(native[0], native[1]))]
            if native is not None
            else []
        ),
        ("audit.verify.verify (full)", verify_pass),
    )
    for name, p in rows:
        table.add(
            name,
            f"{p.wall:.2f}",
            f"{p.cpu:.2f}",
            f"{largest / p.wall:,.0f}",
            f"{mb / p.wall:,.0f}",
            f"{verify_pass.wall / p.wall:.1f}x",
            f"{verify_pass.cpu / p.cpu:.1f}x" if p.cpu > 0 else "–",
        )
    ratio_a, ratio_b = verify_pass.wall / sha.wall, verify_pass.wall / leaf.wall

    def verdict(ratio: float) -> str:
        return "MET" if ratio <= TARGET_RATIO else "MISSED"

    table.notes.append(
        f"verifier: {walk_implementation()}; at most {big['tree_processes'] - 1} child "
        "processes (workers, multiprocessing's helper); "
        f"{big['checkpoints']} signed checkpoints and {len(files)} segments checked"
    )
    table.notes.append(
        f"target: verification within {TARGET_RATIO:g}x of raw SHA-256 -> wall time "
        f"{ratio_a:.1f}x the streaming hash (a) [{verdict(ratio_a)}], "
        f"{verify_pass.wall / sha_all.wall:.1f}x (a') on all cores, "
        f"{ratio_b:.1f}x the per-entry hashing (b) [{verdict(ratio_b)}]"
        + (
            f", {verify_pass.wall / native[0]:.1f}x the native per-entry hashing (b')"
            if native is not None
            else ", (b') not measured: no C compiler or OpenSSL headers"
        )
    )
    results.table(table)

    table = Table(
        "Memory of verification by size (fresh interpreter per size)",
        [
            "entries",
            "segments",
            "verify wall (s)",
            "CPU (s)",
            "entries/s",
            "MB/s",
            "verifier VmHWM before → after",
            "largest worker peak",
            "tree peak RSS",
            "tree peak anon RSS",
        ],
    )
    for n in sizes:
        r = runs[n]
        if not r["ok"] or r["entries"] != n:
            raise SystemExit(f"verification of the {n:,}-entry ledger failed: {r}")
        table.add(
            f"{n:,}",
            human_bytes(r["bytes"]),
            f"{r['seconds']:.2f}",
            f"{r['cpu']:.2f}",
            f"{n / r['seconds']:,.0f}",
            f"{r['bytes'] / 1e6 / r['seconds']:,.0f}",
            f"{human_bytes(r['hwm_before_kb'] * 1024)} → {human_bytes(r['hwm_after_kb'] * 1024)}",
            human_bytes(r["children_max_rss_kb"] * 1024) if r["children_max_rss_kb"] else "–",
            human_bytes(r["tree_peak_rss_kb"] * 1024),
            human_bytes(r["tree_peak_anon_kb"] * 1024),
        )
    table.notes.append(
        "VmHWM before: after `import audit.verify`. Largest worker peak: "
        "getrusage(RUSAGE_CHILDREN).ru_maxrss. Tree peaks: VmRSS / RssAnon of the "
        "verifier and all its worker processes summed, sampled every 20 ms"
    )
    builds = ", ".join(f"{n:,} in {cache_info(n)['build_seconds']:.0f} s" for n in sizes)
    table.notes.append(f"ledgers built with Ledger.append_many (cached in var/bench/): {builds}")
    results.table(table)
    return {
        "sizes": sizes,
        "runs": runs,
        "read": read,
        "sha": sha,
        "sha_all": sha_all,
        "leaf": leaf,
        "bytes": total,
    }
