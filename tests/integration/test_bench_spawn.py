"""The spawn benchmark's machinery in a tiny configuration: the real gateway, the sandboxed
hub and the baseline hub, one spawn each (no warm-up) and two sandboxes at once."""

from __future__ import annotations

from pathlib import Path

from bench import spawn
from bench.common import Results


def test_the_spawn_benchmark_measures_both_hubs_and_a_crowd(tmp_path: Path) -> None:
    results = Results()
    spawn.run(results, quick=True, spawns=1, count=2, cells=2, root=tmp_path / "spawn", warm=False)
    single, crowd = results.tables
    times = {row[0]: [float(cell) for cell in row[1:]] for row in single.rows}
    assert set(times) == {"sbx (bubblewrap, recorded)", "JupyterHub local process"}
    assert all(0 < t < 60 for row in times.values() for t in row), times
    assert "target ≤ 1.5x" in single.notes[0]
    first, later = crowd.rows
    assert 0 < float(first[1]) < 120 and 0 < float(later[1]) < 60_000
    assert "all 2 open" in crowd.notes[0]
