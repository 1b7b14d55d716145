"""Record-level desensitized and aggregated views: the view builder against plain pandas.

On generated synthetic citizens (:mod:`sandbox.synthetic`), one record-level view: keyed
pseudonyms (HMAC-SHA256) for ID number and name, the phone masked, age in 10-year bands,
birth date and last visit to the month, address to the district, income top- and
bottom-coded, k-anonymity (k = 5) over sex, age band, birth month, district and last
visit month with suppression, written to Parquet. The same treatments are written in
plain pandas as the baseline. Then one aggregated view: the whole cube of district × age
band × sex with counts and income sums, the threshold, dominance and p% rules and
secondary suppression; the baseline computes the cube's figures with pandas and applies
the same rules and the same suppression. Each build runs in a process of its own, which
reports its own wall time and peak resident memory; both must keep the same rows (the
same cells withheld).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, VAR, Results, Table, human_bytes, peak_memory

K = 5
KEY = bytes(range(32))
SIZES = (10_000_000, 20_000_000)
QUICK_SIZES = (1_000_000, 2_000_000)
TARGET_ROWS_PER_S = 1_500_000
TARGET_SPEEDUP = 4.0
TARGET_MEMORY = 1 << 30
QUASI = ("sex", "age", "birth_date", "address", "last_visit")


def spec() -> Any:
    from sandbox.synthetic import FIELDS
    from sandbox.views.record import FieldRule, RecordViewSpec
    from sandbox.views.treatments import SensitivityClass as C
    from sandbox.views.treatments import Treatment as T

    classes = {name: C(cls) for name, _, _, cls, _ in FIELDS}
    fields = (
        FieldRule("name", T.PSEUDONYMIZE),
        FieldRule("id_number", T.PSEUDONYMIZE),
        FieldRule("phone", T.MASK),
        FieldRule("sex", T.KEEP),
        FieldRule("birth_date", T.GENERALIZE, {"to": "month"}),
        FieldRule("age", T.GENERALIZE, {"to": "band", "width": 10}),
        FieldRule("address", T.GENERALIZE, {"to": "district"}),
        FieldRule("diagnosis", T.KEEP),
        FieldRule("income", T.TOP_BOTTOM_CODE, {"low": 5_000, "high": 200_000}),
        FieldRule("visits", T.KEEP),
        FieldRule("last_visit", T.GENERALIZE, {"to": "month"}),
    )
    return RecordViewSpec(level="L1", classes=classes, fields=fields, k=K)


# ---------------------------------------------------------------------- the two builders
def build_with_sbx(source: Path, out: Path) -> int:
    from sandbox.views.record import build_record_view
    from sandbox.views.treatments import load_treatments

    policy = load_treatments(ROOT / "policies" / "treatments.yaml")
    report = build_record_view(source, spec(), policy, key=KEY, destination=out)
    return report.rows_out


def build_with_pandas(source: Path, out: Path) -> int:
    import pandas as pd

    from sandbox.views.fields import DISTRICT, PSEUDONYM_ALPHABET

    frame = pd.read_parquet(source)

    def pseudonym(values: pd.Series) -> list[str]:
        return [
            hmac.new(KEY, v.encode(), hashlib.sha256).hexdigest().translate(PSEUDONYM_ALPHABET)
            for v in values
        ]

    view = pd.DataFrame(
        {
            "name": pseudonym(frame["name"]),
            "id_number": pseudonym(frame["id_number"]),
            "phone": frame["phone"].str[:3] + "****" + frame["phone"].str[-4:],
            "sex": frame["sex"],
            "birth_date": pd.to_datetime(frame["birth_date"]).dt.strftime("%Y-%m"),
            "age": (frame["age"] // 10 * 10).astype(str)
            + "-"
            + (frame["age"] // 10 * 10 + 9).astype(str),
            "address": frame["address"].str.extract(DISTRICT, expand=False),
            "diagnosis": frame["diagnosis"],
            "income": frame["income"].clip(5_000, 200_000),
            "visits": frame["visits"],
            "last_visit": pd.to_datetime(frame["last_visit"]).dt.strftime("%Y-%m"),
        }
    )
    del frame
    sizes = view.groupby(list(QUASI), dropna=False)["sex"].transform("size")
    view = view[sizes >= K]
    view.to_parquet(out, index=False)
    return len(view)


AGGREGATE_DIMENSIONS = ("address", "age", "sex")


def aggregate_spec() -> Any:
    from sandbox.views.aggregate import AggregateViewSpec
    from sandbox.views.record import FieldRule
    from sandbox.views.treatments import Treatment as T

    dimensions = (
        FieldRule("address", T.GENERALIZE, {"to": "district"}),
        FieldRule("age", T.GENERALIZE, {"to": "band", "width": 10}),
        FieldRule("sex", T.KEEP),
    )
    return AggregateViewSpec("L1", spec().classes, dimensions, ("income",))


def _disclosure() -> Any:
    from sandbox.views.disclosure import load_disclosure

    return load_disclosure(ROOT / "policies" / "disclosure.yaml")


def aggregate_with_sbx(source: Path, out: Path) -> int:
    from sandbox.views.aggregate import build_aggregate_view
    from sandbox.views.treatments import load_treatments

    policy = load_treatments(ROOT / "policies" / "treatments.yaml")
    report = build_aggregate_view(source, aggregate_spec(), policy, _disclosure(), destination=out)
    return report.cells_suppressed


def aggregate_with_pandas(source: Path, out: Path) -> int:
    import itertools

    import pandas as pd

    from sandbox.views.aggregate import Cell, protect
    from sandbox.views.fields import DISTRICT

    frame = pd.read_parquet(source, columns=list(AGGREGATE_DIMENSIONS) + ["income"])
    band = frame["age"] // 10 * 10
    cube = pd.DataFrame(
        {
            "address": frame["address"].str.extract(DISTRICT, expand=False).fillna("(missing)"),
            "age": band.astype(str) + "-" + (band + 9).astype(str),
            "sex": frame["sex"].astype(str),
            "income": frame["income"].astype(float),
        }
    )
    del frame
    cube["magnitude"] = cube["income"].abs()
    rules = _disclosure().rules("L1")
    cells: list[Cell] = []
    dims = list(AGGREGATE_DIMENSIONS)
    for size in range(len(dims) + 1):
        for subset in itertools.combinations(dims, size):
            grouped = cube.groupby(list(subset), sort=True) if subset else None
            if grouped is None:
                top = cube["magnitude"].nlargest(max(rules.dominance_n, 2)).tolist()
                figures = [((), len(cube), cube["income"].sum(), cube["magnitude"].sum(), top)]
            else:
                agg = grouped.agg(
                    count=("income", "size"), total=("income", "sum"), absolute=("magnitude", "sum")
                )
                tops = grouped["magnitude"].nlargest(max(rules.dominance_n, 2))
                largest = tops.groupby(level=list(range(len(subset)))).agg(list)
                figures = [
                    (
                        key if isinstance(key, tuple) else (key,),
                        row["count"],
                        row["total"],
                        row["absolute"],
                        largest[key],
                    )
                    for key, row in agg.iterrows()
                ]
            for key, count, total, absolute, top in figures:
                values = dict(zip(subset, key, strict=True))
                cells.append(
                    Cell(
                        tuple(values.get(d) for d in dims),
                        int(count),
                        int(count),
                        [float(total)],
                        [(float(absolute), list(top))],
                    )
                )
    primary = {
        i for i, cell in enumerate(cells) if rules.primary(cell.contributors, cell.magnitudes)
    }
    withheld = protect(cells, primary)
    pd.DataFrame(
        {
            **{d: [cell.key[n] for cell in cells] for n, d in enumerate(dims)},
            "count": [None if i in withheld else cell.count for i, cell in enumerate(cells)],
            "sum_income": [None if i in withheld else cell.sums[0] for i, cell in enumerate(cells)],
            "suppressed": [i in withheld for i in range(len(cells))],
        }
    ).to_parquet(out, index=False)
    return len(withheld)


BUILDERS = {
    "sbx": build_with_sbx,
    "pandas": build_with_pandas,
    "sbx-aggregate": aggregate_with_sbx,
    "pandas-aggregate": aggregate_with_pandas,
}


def child(builder: str, source: Path, out: Path) -> None:
    """Run one build and print what it took as JSON (the parent reads it)."""
    started = time.perf_counter()
    rows = BUILDERS[builder](source, out)
    seconds = time.perf_counter() - started
    peak = peak_memory()
    print(json.dumps({"rows": rows, "seconds": seconds, "peak": peak}))


def measure(builder: str, source: Path, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.views", builder, str(source), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    return result


# ---------------------------------------------------------------------- the bench entry point
def run(results: Results, *, quick: bool) -> None:
    from sandbox.synthetic import write_citizens

    VAR.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if quick else SIZES
    table = Table(
        "Record-level view: pseudonyms, mask, bands, months, districts, k = 5, to Parquet",
        ["rows", "builder", "seconds", "rows/s", "peak memory", "rows kept", "vs pandas"],
    )
    measured: dict[tuple[int, str], dict[str, Any]] = {}
    for rows in sizes:
        source = write_citizens(VAR / f"citizens-{rows}.parquet", rows)
        builders = ("sbx", "pandas") if rows == sizes[0] else ("sbx",)
        for builder in builders:
            measured[(rows, builder)] = measure(builder, source, VAR / f"view-{builder}.parquet")
    for (rows, builder), figures in measured.items():
        baseline = measured.get((rows, "pandas"))
        speedup = baseline["seconds"] / figures["seconds"] if baseline else None
        table.add(
            f"{rows:,}",
            builder,
            f"{figures['seconds']:.1f}",
            f"{rows / figures['seconds']:,.0f}",
            human_bytes(figures["peak"]),
            f"{figures['rows']:,}",
            f"{speedup:.1f}x" if speedup and builder != "pandas" else "",
        )
    first, second = (measured[(rows, "sbx")] for rows in sizes)
    same = measured[(sizes[0], "sbx")]["rows"] == measured[(sizes[0], "pandas")]["rows"]
    rate = sizes[0] / first["seconds"]
    speedup = measured[(sizes[0], "pandas")]["seconds"] / first["seconds"]
    table.notes += [
        f"targets at {sizes[0]:,} rows: ≥ {TARGET_ROWS_PER_S:,} rows/s "
        f"[{'MET' if rate >= TARGET_ROWS_PER_S else 'MISSED'}: {rate:,.0f}]; "
        f"≥ {TARGET_SPEEDUP:g}x pandas [{'MET' if speedup >= TARGET_SPEEDUP else 'MISSED'}: "
        f"{speedup:.1f}x]; peak memory < {human_bytes(TARGET_MEMORY)} "
        f"[{'MET' if first['peak'] < TARGET_MEMORY else 'MISSED'}: {human_bytes(first['peak'])}]",
        f"memory when the table doubles: {human_bytes(first['peak'])} → "
        f"{human_bytes(second['peak'])} ({second['peak'] / first['peak']:.2f}x)",
        f"the same rows kept by both builders: {'yes' if same else 'NO'}",
    ]
    results.table(table)
    if not same:
        raise RuntimeError("the view builder and the pandas baseline kept different rows")
    source = write_citizens(VAR / f"citizens-{sizes[0]}.parquet", sizes[0])
    aggregated = {
        builder: measure(builder, source, VAR / f"cube-{builder}.parquet")
        for builder in ("sbx-aggregate", "pandas-aggregate")
    }
    cube = Table(
        "Aggregated view: district × age band × sex cube, counts and income sums, "
        "threshold, dominance and p% rules, secondary suppression",
        ["rows", "builder", "seconds", "rows/s", "peak memory", "cells withheld", "vs pandas"],
    )
    base = aggregated["pandas-aggregate"]["seconds"]
    for builder, figures in aggregated.items():
        cube.add(
            f"{sizes[0]:,}",
            builder.removesuffix("-aggregate"),
            f"{figures['seconds']:.1f}",
            f"{sizes[0] / figures['seconds']:,.0f}",
            human_bytes(figures["peak"]),
            f"{figures['rows']:,}",
            f"{base / figures['seconds']:.1f}x" if builder.startswith("sbx") else "",
        )
    agree = aggregated["sbx-aggregate"]["rows"] == aggregated["pandas-aggregate"]["rows"]
    cube.notes.append(f"the same number of cells withheld by both: {'yes' if agree else 'NO'}")
    results.table(cube)
    if not agree:
        raise RuntimeError("the aggregated view and the pandas baseline withheld different cells")


if __name__ == "__main__":
    child(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
