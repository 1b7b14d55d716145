"""The export airlock's checks: how fast CSV and Parquet files go through them.

A grant's record-level view is built from generated synthetic citizens
(:mod:`sandbox.synthetic`) with the real view builder: keyed pseudonyms for name and ID
number, the phone masked, age in 10-year bands, the address cut to the district, income
top- and bottom-coded, k = 5. Its row index (``build_row_index``) is what the checks
compare files with. The files checked are what an applicant might export: the same
kind of view of *other* citizens (another seed), without the pseudonyms, written as CSV
and as Parquet, at two sizes (the second twice the first). They match no record, carry
no identifier and so pass: every check runs over every value. One more file is a copy
of the granted view itself, as CSV, which the checks must stop.

Each measurement runs in a process of its own, which loads the index, then times
``check_export`` on one file and reports its wall time and peak resident memory. The
baseline, measured the same way, is a plain pyarrow read of the same file in batches
(``pyarrow.csv.open_csv`` or ``ParquetFile.iter_batches``): what any check that reads
the file must at least pay.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, VAR, Results, Table, human_bytes, peak_memory

KEY = bytes(range(32))
INDEX_ROWS = 500_000
QUICK_INDEX_ROWS = 50_000
SIZES = (1_500_000, 3_000_000)  # rows of the files checked: about 100 and 200 MB of CSV
QUICK_SIZES = (150_000, 300_000)
LEVEL = "L2"
FOLDER = VAR / "airlock"


def view_spec() -> Any:
    from sandbox.synthetic import FIELDS
    from sandbox.views.record import FieldRule, RecordViewSpec
    from sandbox.views.treatments import SensitivityClass
    from sandbox.views.treatments import Treatment as T

    classes = {name: SensitivityClass(cls) for name, _, _, cls, _ in FIELDS}
    fields = (
        FieldRule("name", T.PSEUDONYMIZE),
        FieldRule("id_number", T.PSEUDONYMIZE),
        FieldRule("phone", T.MASK),
        FieldRule("sex", T.KEEP),
        FieldRule("age", T.GENERALIZE, {"to": "band", "width": 10}),
        FieldRule("address", T.GENERALIZE, {"to": "district"}),
        FieldRule("diagnosis", T.KEEP),
        FieldRule("income", T.TOP_BOTTOM_CODE, {"low": 5_000, "high": 200_000}),
        FieldRule("visits", T.KEEP),
    )
    return RecordViewSpec(level="L1", classes=classes, fields=fields, k=5)


def view_of(rows: int, seed: int) -> Path:
    """The view of ``rows`` synthetic citizens of ``seed`` (built once, kept in var/)."""
    from sandbox.synthetic import write_citizens
    from sandbox.views.record import build_record_view
    from sandbox.views.treatments import load_treatments

    target = FOLDER / f"view-{rows}-{seed}.parquet"
    if not target.exists():
        source = write_citizens(FOLDER / f"citizens-{rows}-{seed}.parquet", rows, seed=seed)
        policy = load_treatments(ROOT / "policies" / "treatments.yaml")
        partial = target.with_suffix(".partial")
        build_record_view(source, view_spec(), policy, key=KEY, destination=partial)
        partial.replace(target)
        source.unlink()
    return target


def export_files(rows: int) -> dict[str, Path]:
    """The view of other citizens without its pseudonyms, as CSV and as Parquet."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    files = {
        "csv": FOLDER / f"export-{rows}.csv",
        "parquet": FOLDER / f"export-{rows}.parquet",
    }
    if not all(path.exists() for path in files.values()):
        view = pq.read_table(view_of(rows, seed=7)).drop_columns(["name", "id_number"])
        pq.write_table(view, files["parquet"])
        pacsv.write_csv(view, files["csv"])
    return files


def index_of(rows: int) -> tuple[Path, Path, float]:
    """The index of the granted view (built and saved once), the view, and the seconds
    the index took to build (0 if it was there already)."""
    import pyarrow.parquet as pq

    from sandbox.airlock import build_row_index

    view = view_of(rows, seed=2026)
    path = FOLDER / f"index-{rows}.npz"
    seconds = 0.0
    if not path.exists():
        started = time.perf_counter()
        index = build_row_index([pq.read_table(view)])
        seconds = time.perf_counter() - started
        path.write_bytes(index.to_bytes())
    return path, view, seconds


def copy_of_view(view: Path) -> Path:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    target = view.with_name(view.stem + "-copy.csv")
    if not target.exists():
        pacsv.write_csv(pq.read_table(view), target)
    return target


# ---------------------------------------------------------------------- in a child process
def check(path: Path, index_path: Path) -> dict[str, Any]:
    from sandbox.airlock import ExportContext, RowIndex, check_export, load_airlock
    from sandbox.views.disclosure import load_disclosure

    disclosure = load_disclosure(ROOT / "policies" / "disclosure.yaml")
    rules = load_airlock(ROOT / "policies" / "airlock.yaml", disclosure).rules(LEVEL)
    index = RowIndex.from_bytes(index_path.read_bytes())
    context = ExportContext(rules, (index,))
    started = time.perf_counter()
    report = check_export([path], context)
    seconds = time.perf_counter() - started
    summary = report.files[0]
    return {
        "seconds": seconds,
        "peak": peak_memory(),
        "rows": summary.rows,
        "findings": sorted({str(f.check) for f in report.blocking}),
    }


def read(path: Path, _: Path) -> dict[str, Any]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    started = time.perf_counter()
    rows = 0
    if path.suffix == ".csv":
        with pacsv.open_csv(path) as reader:
            for batch in reader:
                rows += batch.num_rows
    else:
        for batch in pq.ParquetFile(path).iter_batches():
            rows += batch.num_rows
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak": peak_memory(), "rows": rows, "findings": []}


def measure(what: str, path: Path, index: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.airlock", what, str(path), str(index)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------- the bench entry point
def run(results: Results, *, quick: bool) -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    index_rows = QUICK_INDEX_ROWS if quick else INDEX_ROWS
    index, view, built = index_of(index_rows)
    table = Table(
        f"Export airlock checks ({LEVEL}) against the row index of a "
        f"{index_rows:,}-citizen record view",
        ["format", "what", "rows", "file", "seconds", "MB/s", "peak memory", "vs read"],
        left=2,
    )
    peaks: dict[str, list[int]] = {"csv": [], "parquet": []}
    for rows in QUICK_SIZES if quick else SIZES:
        for kind, path in export_files(rows).items():
            size = path.stat().st_size
            base = measure("read", path, index)
            checked = measure("check", path, index)
            if checked["findings"]:
                raise RuntimeError(f"an export of other citizens was stopped: {checked}")
            peaks[kind].append(checked["peak"])
            for what, figures in (("pyarrow read", base), ("check_export", checked)):
                ratio = checked["seconds"] / base["seconds"]
                table.add(
                    kind,
                    what,
                    f"{figures['rows']:,}",
                    human_bytes(size),
                    f"{figures['seconds']:.2f}",
                    f"{size / figures['seconds'] / 1e6:,.1f}",
                    human_bytes(figures["peak"]),
                    f"{ratio:.1f}x" if what == "check_export" else "",
                )
    copy = copy_of_view(view)
    stopped = measure("check", copy, index)
    table.add(
        "csv",
        "check_export, a copy of the view",
        f"{stopped['rows']:,}",
        human_bytes(copy.stat().st_size),
        f"{stopped['seconds']:.2f}",
        f"{copy.stat().st_size / stopped['seconds'] / 1e6:,.1f}",
        human_bytes(stopped["peak"]),
        "",
    )
    table.notes += [
        "MB/s: the file's size in 10^6 bytes per second of wall time; "
        "vs read: check seconds over plain read seconds",
        f"index of {index_rows:,} view rows: "
        + (f"built in {built:.1f} s" if built else "built in an earlier run")
        + f", {human_bytes(index.stat().st_size)} saved",
        *(
            f"{kind} peak memory when the file doubles: {human_bytes(p[0])} → "
            f"{human_bytes(p[1])} ({p[1] / p[0]:.2f}x)"
            for kind, p in peaks.items()
        ),
        f"the copy of the view was stopped by: {', '.join(stopped['findings']) or 'NOTHING'}",
    ]
    results.table(table)
    if "row_level" not in stopped["findings"]:
        raise RuntimeError("the copy of the granted view went through the checks")


if __name__ == "__main__":
    action = check if sys.argv[1] == "check" else read
    print(json.dumps(action(Path(sys.argv[2]), Path(sys.argv[3]))))
