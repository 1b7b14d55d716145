"""Run ``audit.verify.verify`` on one ledger in a fresh interpreter and print, as JSON,
its report, its CPU time (this process and the workers it started) and its memory:
the process's own peak RSS (``VmHWM``), the largest worker's peak, and the peak of the
whole process tree's RSS and anonymous RSS, sampled every 20 ms."""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path


def _status(pid: int | str, *fields: str) -> dict[str, int]:
    found = dict.fromkeys(fields, 0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name = line.split(":", 1)[0]
            if name in found:
                found[name] = int(line.split()[1])
    except OSError:
        pass
    return found


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in children:
                found.append(int(child))
                todo.append(int(child))
    return found


class TreeSampler:
    """Peak of the summed RSS (and anonymous RSS) of this process and its descendants."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_rss_kb = 0
        self.peak_anon_kb = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pids = [os.getpid(), *_descendants(os.getpid())]
        rss = anon = 0
        for pid in pids:
            values = _status(pid, "VmRSS", "RssAnon")
            rss += values["VmRSS"]
            anon += values["RssAnon"]
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_anon_kb = max(self.peak_anon_kb, anon)
        self.peak_processes = max(self.peak_processes, len(pids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(path: str) -> None:
    import audit.verify

    before = _status("self", "VmHWM", "RssAnon")
    cpu = _cpu()
    started = time.perf_counter()
    with TreeSampler() as sampler:
        report = audit.verify.verify(path)
    wall = time.perf_counter() - started
    cpu = _cpu() - cpu
    after = _status("self", "VmHWM", "VmRSS")
    print(
        json.dumps(
            {
                "ok": report.ok,
                "problem": None if report.problem is None else str(report.problem),
                "entries": report.entries,
                "bytes": report.bytes,
                "checkpoints": report.checkpoints,
                "seconds": report.seconds,
                "wall": wall,
                "cpu": cpu,
                "hwm_before_kb": before["VmHWM"],
                "hwm_after_kb": after["VmHWM"],
                "rss_after_kb": after["VmRSS"],
                "children_max_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                "tree_peak_rss_kb": sampler.peak_rss_kb,
                "tree_peak_anon_kb": sampler.peak_anon_kb,
                "tree_processes": sampler.peak_processes,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
