"""What the benchmarks share: machine facts, tables, percentiles and the ledger cache."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var" / "bench"
CACHE_FORMAT = 2  # bump when the cached ledgers' contents change

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


# ---------------------------------------------------------------------- machine
def _cpu_model() -> str:
    """Model name, family/model and the flags that matter for hashing, from the first
    processor in /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", platform.processor() or "unknown")
    flags = set(fields.get("flags", "").split())
    wanted = [f for f in ("sha_ni", "avx2", "avx512f") if f in flags]
    extra = f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
    return f"{name} ({extra}; flags: {', '.join(wanted) or 'no SHA extensions'})"


def _filesystem(path: Path) -> str:
    """Filesystem type, device and mount options of the mount holding ``path``."""
    path = path.resolve()
    best: tuple[int, str] = (-1, "unknown")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype, options, *_ = line.split()
            if str(path) == mount or str(path).startswith(mount.rstrip("/") + "/"):
                if len(mount) > best[0]:
                    best = (len(mount), f"{fstype} on {device} ({mount}, {options})")
    except OSError:
        pass
    return best[1]


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def audit_version() -> str:
    """The commit the benchmarked ``audit/`` is at, and whether it has local changes."""
    import subprocess

    git = shutil.which("git")
    if git is None:
        return "unknown (git not found)"
    try:
        head = subprocess.run(
            [git, "log", "-1", "--format=%h %s"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "status", "--porcelain", "--", "audit"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}" + (" + uncommitted changes in audit/" if dirty else "")


def tree_version(folder: str) -> str:
    """The commit the working tree is at, and whether ``folder`` has local changes."""
    import subprocess

    git = shutil.which("git")
    if git is None:
        return "unknown (git not found)"
    try:
        head = subprocess.run(
            [git, "log", "-1", "--format=%h"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "status", "--porcelain", "--", folder],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{folder}/ at {head}" + (f" + uncommitted changes in {folder}/" if dirty else "")


def machine_info() -> dict[str, str]:
    VAR.mkdir(parents=True, exist_ok=True)
    return {
        "audit/ at": audit_version(),
        "cores (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": _cpu_model(),
        "memory": _memory(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": f"{platform.system()} {platform.release()}",
        "filesystem (var/bench)": _filesystem(VAR),
    }


# ---------------------------------------------------------------------- numbers
def peak_memory() -> int:
    """This process's peak resident memory in bytes: ``VmHWM``, which starts afresh at
    ``exec`` (``ru_maxrss`` keeps the high-water mark of the parent that forked it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``q`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[rank]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


# ---------------------------------------------------------------------- tables
@dataclass
class Table:
    """A result table: printed with rich, and kept for the markdown write-up."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left: int = 1  # how many leading columns are text (left-aligned)

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])

    def show(self) -> None:
        table = RichTable(title=self.title, title_justify="left", title_style="bold")
        for number, name in enumerate(self.columns):
            table.add_column(name, justify="left" if number < self.left else "right")
        for row in self.rows:
            table.add_row(*row)
        console.print(table)
        for note in self.notes:
            console.print(f"  {note}")
        console.print()

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append(
            "|" + "|".join(["---"] * self.left + ["---:"] * (len(self.columns) - self.left)) + "|"
        )
        lines.extend("| " + " | ".join(row) + " |" for row in self.rows)
        if self.notes:
            lines.append("")
            lines.extend(f"{note}  " for note in self.notes)
        return "\n".join(lines)


@dataclass
class Results:
    """Everything one run printed, in order, for ``--markdown``."""

    tables: list[Table] = field(default_factory=list)

    def table(self, table: Table) -> Table:
        self.tables.append(table)
        table.show()
        return table


# ---------------------------------------------------------------------- ledger cache
def bench_entry(i: int) -> dict[str, Any]:
    """The entry every benchmark writes: short labels and a small detail dict (~280 bytes
    encoded with its chain fields)."""
    return {
        "action": "dataset.read",
        "actor": f"user:u{i % 97:03d}",
        "object": f"dataset:ds-{i % 1009:04d}",
        "outcome": "allowed",
        "detail": {"bytes": 4096 + i % 7919, "org": "org-acme", "request": f"req-{i:010d}"},
    }


def ledger_plan(entries: int) -> tuple[int, int]:
    """``(checkpoint_every, batch)`` for a cached ledger: about a hundred checkpoints
    (at least one every 100 entries), committed in batches of at most 10,000 entries."""
    every = max(100, entries // 100)
    return every, min(every, 10_000)


_rebuilt: set[int] = set()


def cached_ledger(entries: int, *, rebuild: bool = False) -> Path:
    """A ledger of exactly ``entries`` entries (the genesis entry included) under
    ``var/bench/``, built with the real :class:`audit.Ledger` on first use."""
    from audit import Ledger, LedgerOptions

    folder = VAR / f"ledger-{entries}"
    marker = VAR / f"ledger-{entries}.json"
    rebuild = rebuild and entries not in _rebuilt  # at most once per run
    if not rebuild and marker.exists() and (folder / "LEDGER.json").exists():
        info = json.loads(marker.read_text())
        if info.get("cache_format") == CACHE_FORMAT and info.get("entries") == entries:
            return folder
    marker.unlink(missing_ok=True)
    if folder.exists():
        shutil.rmtree(folder)
    every, batch = ledger_plan(entries)
    console.print(
        f"building a ledger of {entries:,} entries in {folder.relative_to(ROOT)} "
        f"(append_many batches of {batch:,}, checkpoint_every={every:,}) …"
    )
    started = time.perf_counter()
    ledger = Ledger(folder, LedgerOptions(checkpoint_every=every, checkpoint_interval=3600.0))
    try:
        done = 1  # the genesis entry
        shown = 0
        while done < entries:
            count = min(batch - done % batch, entries - done)  # commits end on multiples of batch
            ledger.append_many([bench_entry(i) for i in range(done, done + count)])
            done += count
            if entries >= 1_000_000 and done * 10 // entries > shown:
                shown = done * 10 // entries
                elapsed = time.perf_counter() - started
                console.print(f"  {done:>12,} entries  {elapsed:6.1f} s  ({done / elapsed:,.0f}/s)")
    finally:
        ledger.close()
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (folder / "segments").glob("*.log"))
    info = {
        "batch": batch,
        "build_seconds": round(seconds, 2),
        "cache_format": CACHE_FORMAT,
        "checkpoint_every": every,
        "entries": entries,
        "python": sys.version.split()[0],
        "segment_bytes": size,
    }
    marker.write_text(json.dumps(info, indent=2) + "\n")
    _rebuilt.add(entries)
    console.print(
        f"  built in {seconds:.1f} s ({entries / seconds:,.0f} entries/s, "
        f"{human_bytes(size)} of segments)"
    )
    return folder


def cache_info(entries: int) -> dict[str, Any]:
    return dict(json.loads((VAR / f"ledger-{entries}.json").read_text()))
